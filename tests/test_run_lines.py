"""Issue 15 item 8: a long command's stderr read line by line as it comes (run.run_lines), and mmdebstrap's
--verbose lines as the bootstrap's phase (download, unpack, configure counts)."""

from __future__ import annotations

import pytest

from imagekit.rootfs.bootstrap import BootstrapPhases
from imagekit.util.errors import CommandFailed
from imagekit.util.run import run_lines


def test_lines_come_as_written_and_a_failure_keeps_them() -> None:
    seen: list[str] = []
    run_lines(["sh", "-c", "echo one >&2; echo out; echo two >&2"], seen.append)
    assert seen == ["one", "two"]
    with pytest.raises(CommandFailed) as failed:
        run_lines(["sh", "-c", "echo why >&2; exit 3"], seen.append)
    assert failed.value.returncode == 3 and failed.value.message.endswith("failed with status 3: why")


def test_mmdebstrap_verbose_lines_become_counts() -> None:
    shown: list[str] = []
    phases = BootstrapPhases(shown.append)
    for line in [
        "I: automatically chosen mode: unshare",
        "I: running apt-get update...",
        "Get:1 http://deb.debian.org/debian bookworm InRelease [151 kB]",
        "Get:2 http://deb.debian.org/debian bookworm/main amd64 base-files amd64 12.4+deb12u5 [70.6 kB]",
        "I: extracting archives...",
        "Unpacking base-files (12.4+deb12u5) ...",
        "Setting up base-files (12.4+deb12u5) ...",
    ]:
        phases.line(line)
    assert shown == ["automatically chosen mode: unshare", "download 1", "download 2", "extracting archives",
                     "download 2, unpack 1", "download 2, unpack 1, configure 1"]
