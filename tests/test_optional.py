"""Modules only some commands need: missing, they are a one-line error (exit 2) saying how to install them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from imagekit.util.errors import UsageError
from imagekit.util.optional import require
from tests.util import REPO

HIDE_AND_RUN = "import sys; sys.modules[{module!r}] = None; sys.argv = {argv!r}; from imagekit.cli import main; main()"


def run_without(module: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh interpreter where importing `module` fails as if it were not installed."""
    code = HIDE_AND_RUN.format(module=module, argv=["imagekit", *argv])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)


def test_local_cloud_without_moto_names_the_extra() -> None:
    proc = run_without("moto", "local-cloud", "--port", "0")
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "error: imagekit local-cloud needs the Python module moto, which is not installed",
        "hint: pip install 'imagekit[local-cloud]' (moto[server] 5.2.5)",
    ]


@pytest.mark.parametrize(("module", "package"), [("guestfs", "python3-guestfs"), ("parted", "python3-parted")])
def test_system_bindings_missing_say_system_site_packages(monkeypatch: pytest.MonkeyPatch, module: str,
                                                          package: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(UsageError, match=f"^lint needs the Python module {module}, which is not installed$") as info:
        require(module, needed_by="lint")
    assert info.value.exit_code == 2
    assert package in (info.value.hint or "") and "--system-site-packages" in (info.value.hint or "")


def test_require_returns_the_module() -> None:
    assert require("json", needed_by="test").dumps([]) == "[]"
