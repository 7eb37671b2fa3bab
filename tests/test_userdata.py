"""User-data: EC2's 16384-byte limit to the byte, gzip only when asked and only if it fits, template
errors named with file and line, `--check` on files; and the Kumina-style template renders to a shell
script that sh parses. Real jinja2, real gzip, the real CLI in a subprocess."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from pathlib import Path

import pytest

from imagekit.boot.userdata import LIMIT, OverLimit, check_data, encode, kind_of, parse_vars, render_template
from imagekit.util.errors import UsageError
from tests.util import RECIPES, run_imagekit


def last_lines(text: str, n: int = 2) -> list[str]:
    return text.strip().splitlines()[-n:]


def template_of_size(tmp_path: Path, size: int, *, compressible: bool = False) -> Path:
    """A template that renders to exactly `size` bytes (a shell script padded with comment lines)."""
    head = "#!/bin/sh\necho {{ greeting }}\n"
    rendered_head = len(head.replace("{{ greeting }}", "hello"))
    filler = size - rendered_head
    if compressible:
        body = ("#" * 63 + "\n") * (filler // 64) + "#" * (filler % 64)
    else:
        body = os.urandom(filler).hex()[:filler]
    path = tmp_path / "t.sh.j2"
    path.write_text(head + body)
    return path


@pytest.mark.parametrize(("size", "ok"), [(LIMIT - 1, True), (LIMIT, True), (LIMIT + 1, False)])
def test_limit_is_exactly_16384_bytes(tmp_path: Path, size: int, ok: bool) -> None:
    template = template_of_size(tmp_path, size)
    out = tmp_path / "ud"
    proc = run_imagekit("userdata", "render", template, "--var", "greeting=hello", "-o", out)
    if ok:
        assert proc.returncode == 0, proc.stderr
        assert out.stat().st_size == size
        assert proc.stdout.strip() == f"{out}: {size} bytes (shell script), {LIMIT - size} to spare of {LIMIT}"
    else:
        assert proc.returncode == 1
        assert last_lines(proc.stderr)[0] == (f"error: {template}: user-data is {LIMIT + 1} bytes, "
                                              f"1 byte over EC2's limit of {LIMIT} bytes")
        assert last_lines(proc.stderr)[1].startswith("hint: gzipped it would be ")
        assert not out.exists()


def test_over_limit_says_by_how_much_and_that_gzip_fits(tmp_path: Path) -> None:
    template = template_of_size(tmp_path, LIMIT + 1000, compressible=True)
    proc = run_imagekit("userdata", "render", template, "--var", "greeting=hello")
    assert proc.returncode == 1 and proc.stdout == ""
    error, hint = last_lines(proc.stderr)
    assert error == (f"error: {template}: user-data is {LIMIT + 1000} bytes, "
                     f"1000 bytes over EC2's limit of {LIMIT} bytes")
    assert hint.startswith("hint: gzipped it would be ") and hint.endswith("bytes, which fits: add --gzip")


def test_gzip_path(tmp_path: Path) -> None:
    template = template_of_size(tmp_path, LIMIT + 1000, compressible=True)
    out = tmp_path / "ud.gz"
    proc = run_imagekit("userdata", "render", template, "--var", "greeting=hello", "--gzip", "-o", out, "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    data = out.read_bytes()
    assert summary == {"schema": "imagekit.userdata/1", "file": str(out), "bytes": len(data),
                       "raw_bytes": LIMIT + 1000, "gzip": True, "kind": "gzip (shell script)",
                       "limit": LIMIT, "spare": LIMIT - len(data)}
    assert gzip.decompress(data).startswith(b"#!/bin/sh\necho hello\n")
    assert len(gzip.decompress(data)) == LIMIT + 1000
    again = tmp_path / "again.gz"
    run_imagekit("userdata", "render", template, "--var", "greeting=hello", "--gzip", "-o", again, check=True)
    assert again.read_bytes() == data  # deterministic: no timestamp in the gzip header
    check = run_imagekit("userdata", "render", "--check", out)
    assert check.returncode == 0, check.stderr
    assert "(gzip (shell script))" in check.stdout


def test_gzip_that_still_does_not_fit(tmp_path: Path) -> None:
    template = template_of_size(tmp_path, 3 * LIMIT)  # random hex: about half survives gzip
    with pytest.raises(OverLimit) as err:
        encode(render_template(template, {"greeting": "hi"}), use_gzip=True, name="t")
    assert "bytes gzipped (49149 raw)" in err.value.message and "over EC2's limit of 16384 bytes" in err.value.message


def test_undefined_variable_names_file_and_line(tmp_path: Path) -> None:
    template = tmp_path / "boot.sh.j2"
    template.write_text("#!/bin/sh\nset -e\n\necho {{ hostname }}\n")
    proc = run_imagekit("userdata", "render", template)
    assert proc.returncode == 2
    assert last_lines(proc.stderr) == [f"error: {template}:4: 'hostname' is undefined",
                                       "hint: pass it with --var hostname=VALUE"]


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    template = tmp_path / "bad.j2"
    template.write_text("#cloud-config\nhostname: x\n{% for p in packages %}\n- {{ p }\n{% endfor %}\n")
    with pytest.raises(UsageError) as err:
        render_template(template, {"packages": "ab"})
    assert err.value.message.startswith(f"{template}:4: unexpected '}}'")


def test_error_in_included_template_names_that_file(tmp_path: Path) -> None:
    (tmp_path / "part.j2").write_text("line one\n{{ 1 / 0 }}\n")
    main = tmp_path / "main.j2"
    main.write_text("#!/bin/sh\n{% include 'part.j2' %}\n")
    proc = run_imagekit("userdata", "render", main)
    assert proc.returncode == 2
    assert last_lines(proc.stderr, 1) == [f"error: {tmp_path / 'part.j2'}:2: ZeroDivisionError: division by zero"]


def test_var_from_file(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\nabc\n")
    assert parse_vars(["cert=@cert.pem", "n=1"], base=tmp_path) == {"cert": "-----BEGIN CERTIFICATE-----\nabc\n",
                                                                    "n": "1"}
    with pytest.raises(UsageError, match="expected NAME=VALUE"):
        parse_vars(["no-equals"])
    with pytest.raises(UsageError, match="cannot read"):
        parse_vars(["x=@missing.pem"], base=tmp_path)


def test_check_file(tmp_path: Path) -> None:
    ok = tmp_path / "ok.yaml"
    ok.write_text("#cloud-config\npackages: [postgresql]\n")
    proc = run_imagekit("userdata", "check", ok)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{ok}: 37 bytes (cloud-config), {LIMIT - 37} to spare of {LIMIT}"
    big = tmp_path / "big"
    big.write_bytes(b"#!/bin/sh\n" + b"#" * LIMIT)
    proc = run_imagekit("userdata", "render", "--check", big)
    assert proc.returncode == 1
    assert f"user-data is {LIMIT + 10} bytes, 10 bytes over" in proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("#cloud-config\npackages: [postgresql\nruncmd: x\n")
    proc = run_imagekit("userdata", "render", "--check", bad)
    assert proc.returncode == 2
    assert last_lines(proc.stderr, 1)[0].startswith(f"error: {bad}:")
    assert "cloud-config is not valid YAML" in proc.stderr


def test_kinds() -> None:
    assert kind_of(b"#!/bin/bash\n") == "shell script"
    assert kind_of(b"#cloud-config\n") == "cloud-config"
    assert kind_of(b"Content-Type: multipart/mixed; boundary=x\n") == "MIME multi-part"
    assert kind_of(gzip.compress(b"#cloud-config\n")) == "gzip (cloud-config)"
    assert kind_of(b"hello") == "unknown"
    assert check_data(b"#!/bin/sh\n", "x").spare == LIMIT - 10


def test_kumina_template_renders_a_script_sh_accepts(tmp_path: Path) -> None:
    template = RECIPES / "userdata" / "kumina-install.sh.j2"
    cert = tmp_path / "web1.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    out = tmp_path / "web1.userdata"
    proc = run_imagekit("userdata", "render", template, "--var", "hostname=web1", "--var", f"puppet_cert=@{cert}",
                        "--var", f"puppet_ca=@{cert}", "-o", out, "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["kind"] == "shell script" and summary["bytes"] < 8192  # seed 001: "a mere 3 KB"
    text = out.read_text()
    assert "HOSTNAME=web1\n" in text and "MIIB" in text and "vgcreate" in text
    for shell in ("sh", "bash"):
        subprocess.run([shell, "-n", out], check=True)
    subprocess.run(["sh", "-n", RECIPES / "files" / "kumina-rc.local"], check=True)
