"""No QEMU outlives `imagekit boot`: not on timeout, not on Ctrl-C. (Two short boots of a small image.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.boot.conftest import requires_kernel
from tests.util import IMAGEKIT, REPO, processes_naming, run_imagekit

pytestmark = [pytest.mark.slow, requires_kernel()]


def qemu_children(pid: int) -> list[int]:
    """The boot QEMU started by pid (not libguestfs' appliance: the boot one writes serial.log)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)
            comm = fields[0].split("(", 1)[1]
        except (OSError, IndexError):
            continue
        if comm.startswith("qemu-system") and int(fields[1].split()[1]) == pid:
            cmdline = (stat.parent / "cmdline").read_bytes()
            if b"serial.log" in cmdline:
                found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_timeout_stops_qemu_and_says_so(small_images: Callable[[str], Path], tmp_path: Path) -> None:
    work = tmp_path / "tmp"  # imagekit boot's work directory (overlay, serial log) goes here: QEMU names it
    work.mkdir()
    proc = run_imagekit("boot", small_images("fallback"), "--loader", "pvgrub", "--json", "--timeout", "4",
                        env={"TMPDIR": str(work), "LIBGUESTFS_CACHEDIR": os.environ.get("TMPDIR", "/var/tmp")})
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["reason"] == "timeout" and report["seconds_qemu"] >= 4  # it waited the 4 s it was given
    assert settled(lambda: processes_naming(work, "qemu-system")) == []  # no QEMU left behind
    assert settled(lambda: sorted(p.name for p in work.iterdir())) == []  # nor its work directory


def settled(look: Callable[[], list[Any]], within: float = 10.0) -> list[Any]:
    """What `look` finds once it finds nothing, or after `within` seconds (a process in its last exit steps
    when imagekit returned is not one left behind)."""
    deadline = time.monotonic() + within
    while (found := look()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def test_ctrl_c_leaves_no_qemu(small_images: Callable[[str], Path], tmp_path: Path) -> None:
    """Ctrl-C while QEMU runs: exit 130, the boot QEMU reaped, no QEMU naming the work directory left, and
    the work directory (overlay, serial log) removed."""
    work = tmp_path / "tmp"  # imagekit boot's work directory goes here: QEMU names it
    work.mkdir()
    env = {**os.environ, "TMPDIR": str(work), "LIBGUESTFS_CACHEDIR": os.environ.get("TMPDIR", "/var/tmp")}
    proc = subprocess.Popen([*IMAGEKIT, "boot", str(small_images("fallback")), "--loader", "pvgrub"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    qemu: list[int] = []
    deadline = time.monotonic() + 120
    while not qemu and time.monotonic() < deadline and proc.poll() is None:
        qemu = qemu_children(proc.pid)
        time.sleep(0.2)
    assert qemu, "QEMU never started"
    assert list(work.iterdir()), "the boot's work directory is not under TMPDIR"  # else the last check is empty
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in err
    assert "Traceback" not in err
    assert not any(alive(pid) for pid in qemu)
    assert settled(lambda: processes_naming(work, "qemu-system")) == []  # no QEMU left behind
    assert settled(lambda: sorted(p.name for p in work.iterdir())) == []  # nor its work directory
