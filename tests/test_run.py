"""Issue 16 item 4: one process runner. `run(timeout=...)` kills a command still running at its timeout with
everything it started, and says which command; `spawn` owns a long-lived child: stopped and reaped however
its block ends, its whole process group with it."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from imagekit.util.errors import CommandFailed, CommandTimedOut
from imagekit.util.run import run, spawn
from tests.util import processes_naming


def settled(look: Callable[[], list[Any]], within: float = 10.0) -> list[Any]:
    """What `look` finds once it finds nothing, or after `within` seconds (a killed process in its last exit steps)."""
    deadline = time.monotonic() + within
    while (found := look()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def sleeper(tmp_path: Path) -> Path:
    """A copy of sleep under tmp_path, so every process it runs as names tmp_path (processes_naming finds it)."""
    path = tmp_path / "sleep"
    shutil.copy2(shutil.which("sleep") or "/bin/sleep", path)
    return path


def test_a_command_outliving_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    sleep = sleeper(tmp_path)
    script = f"{sleep} 300 & {sleep} 301; echo never"  # a child of its own beside it (sh does not exec the last)
    with pytest.raises(CommandTimedOut) as timed_out:
        run(["sh", "-c", script], timeout=1)
    assert timed_out.value.message == f"sh -c '{script}' did not finish within 1 s and was killed"
    assert isinstance(timed_out.value, CommandFailed)  # callers that catch a failed command catch this too
    assert settled(lambda: processes_naming(tmp_path)) == []  # neither sh nor either sleep is left


def test_a_timeout_is_not_a_failure_when_the_command_ends_in_time() -> None:
    proc = run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False, timeout=30)
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, b"out\n", b"err\n")
    with pytest.raises(CommandFailed) as failed:
        run(["sh", "-c", "echo why >&2; exit 4"], timeout=30)
    assert failed.value.message == "sh -c 'echo why >&2; exit 4' failed with status 4: why"


def test_spawn_stops_and_reaps_the_child_and_its_group_on_an_error(tmp_path: Path) -> None:
    sleep = sleeper(tmp_path)
    with pytest.raises(RuntimeError, match="the caller failed"), \
            spawn(["sh", "-c", f"trap '' TERM; {sleep} 300 & {sleep} 301"]) as proc:
        deadline = time.monotonic() + 10
        while len(processes_naming(tmp_path, str(sleep))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(processes_naming(tmp_path, str(sleep))) == 2  # both sleeps are up, TERM ignored (inherited)
        raise RuntimeError("the caller failed")
    assert proc.returncode is not None  # reaped: no zombie, the status is known
    assert settled(lambda: processes_naming(tmp_path)) == []  # SIGTERM ignored by sh: SIGKILL got the group


def test_spawn_names_a_missing_program() -> None:
    with pytest.raises(CommandFailed) as failed, spawn(["imagekit-no-such-program"]):
        pass
    assert failed.value.message == "imagekit-no-such-program not found"
