import json
import subprocess
import sys

from bzimage_factory import compress, make_bzimage


def imagekit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imagekit", *args], capture_output=True, text=True)


def test_check_config_ok(host_config):
    proc = imagekit("kernel", "check", str(host_config), "--target", "pv")
    assert proc.returncode == 0, proc.stderr
    assert "CONFIG_XEN_PV" in proc.stdout and "present" in proc.stdout


def test_check_json_and_failure(host_kernel):
    proc = imagekit("kernel", "check", str(host_kernel), "--target", "nitro", "--no-initrd", "--json")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False and doc["kernel"] == {"arch": "x86_64", "bits": 64, "xen_pv": True}
    ena = next(o for o in doc["options"] if o["option"] == "ENA_ETHERNET")
    assert (ena["status"], ena["ok"]) == ("module", False)
    assert "error: " in proc.stderr and "CONFIG_ENA_ETHERNET" in proc.stderr


def test_aki_json(tmp_path, small_elf):
    (tmp_path / "bzImage").write_bytes(make_bzimage(compress(small_elf, "lzo")))
    proc = imagekit("kernel", "aki", str(tmp_path / "bzImage"), "-o", str(tmp_path / "out.gz"), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["compression"] == "lzo" and doc["output"] == str(tmp_path / "out.gz")
    assert doc["xen_pv"] is False


def test_aki_errors_are_one_line(tmp_path):
    (tmp_path / "notakernel").write_text("hello\n" * 200)
    proc = imagekit("kernel", "aki", str(tmp_path / "notakernel"), "-o", str(tmp_path / "o.gz"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "error: " in proc.stderr and "not a bzImage" in proc.stderr
