import json
import os
import subprocess
import sys
from pathlib import Path

from bzimage_factory import compress, make_bzimage


def imagekit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imagekit", *args], capture_output=True, text=True)


def test_check_config_ok(host_config):
    proc = imagekit("kernel", "check", str(host_config), "--target", "pv")
    assert proc.returncode == 0, proc.stderr
    assert "CONFIG_XEN_PV" in proc.stdout and "present" in proc.stdout
    assert proc.stdout.splitlines()[-1] in ("verdict: pass", "verdict: warn")


def test_check_json_and_failure(host_kernel):
    proc = imagekit("kernel", "check", str(host_kernel), "--target", "nitro", "--no-initrd", "--json")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert (doc["schema"], doc["verdict"]) == ("imagekit.kernel-check/1", "fail")
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


def test_aki_output_errors_are_one_line(tmp_path, small_elf):
    """-o onto a directory, into a read-only directory, into a missing one: exit 2, one line, no traceback."""
    (tmp_path / "bzImage").write_bytes(make_bzimage(compress(small_elf, "gzip")))
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() == 0:  # root writes into a 0500 directory; sysfs refuses new files even to root
        locked = Path("/sys")
    cases = {  # -o -> (what stderr says, the object its error line names)
        str(tmp_path): ("-o names the file", str(tmp_path)),
        str(locked / "vmlinux.gz"): ("choose a directory you can write to", str(locked / "vmlinux.gz")),
        str(tmp_path / "missing" / "vmlinux.gz"): ("does not exist", str(tmp_path / "missing")),
    }
    for output, (expected, named) in cases.items():
        proc = imagekit("kernel", "aki", str(tmp_path / "bzImage"), "-o", output)
        assert proc.returncode == 2, (output, proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and named in errors[0], proc.stderr
        assert expected in proc.stderr, proc.stderr
