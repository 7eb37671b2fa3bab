"""The QEMU process: started, watched and always reaped.

`run_qemu` owns the process from start to end: it streams the serial log (a file QEMU writes) into a
`Watcher`, stops QEMU as soon as the boot reaches an end state, on timeout, after a long silence, on
Ctrl-C or on any exception, and never returns while QEMU is alive. QEMU is `run.spawn`ed: its own
session, SIGKILL if imagekit itself dies (PR_SET_PDEATHSIG), so no QEMU outlives the command.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from imagekit.boot.console import Watcher
from imagekit.util.accel import Accel
from imagekit.util.errors import ImagekitError
from imagekit.util.run import spawn, stop

QEMU = "qemu-system-x86_64"
POLL = 0.1  # seconds between reads of the serial log
PARTIAL_AFTER = 1.0  # a line without newline (a shell prompt) counts once it has been still this long
LINGER = 1.5  # after a failure, keep reading this long so the report has the lines that follow


@dataclass(frozen=True)
class Machine:
    memory_mb: int = 1024
    cpus: int = 2
    accel: Accel = field(default_factory=lambda: Accel("tcg", "default"))


@dataclass(frozen=True)
class Outcome:
    seconds: float  # QEMU's whole run
    timed_out: bool
    silent_for: float | None  # set when stopped for lack of output
    exit_status: int | None  # QEMU's own status when it exited by itself


def qemu_argv(machine: Machine, *, disk: Path, serial_log: Path, kernel: Path,
              initrd: Path | None = None, append: str | None = None) -> list[str]:
    """The QEMU command line: one virtio disk (the overlay), serial console to a file, user networking."""
    argv = [QEMU, *machine.accel.qemu_args(), "-machine", "pc", "-m", str(machine.memory_mb),
            "-smp", str(machine.cpus), "-nodefaults", "-display", "none", "-no-reboot",
            "-drive", f"file={disk},if=virtio,format=qcow2,cache=unsafe",
            "-chardev", f"file,id=console,path={serial_log}", "-serial", "chardev:console",
            "-nic", "user,model=virtio-net-pci",
            "-kernel", str(kernel)]
    if initrd is not None:
        argv += ["-initrd", str(initrd)]
    if append is not None:
        argv += ["-append", append]
    return argv


@contextlib.contextmanager
def qemu_process(argv: Sequence[str], stderr_path: Path,
                 stdout_path: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """QEMU (or `xl console`), spawned by run.spawn: its own session, stopped (TERM, then KILL) and reaped
    when the block ends, however it ends. Its stdout goes to `stdout_path` when given (a console read from stdout)."""
    with open(stderr_path, "wb") as err, open(stdout_path or stderr_path, "ab") as out, \
            spawn(argv, stdout=out, stderr=err) as proc:
        yield proc


class _LogReader:
    """New complete lines of a growing file; a trailing partial line once it has been still a while."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.partial_since = 0.0

    def read(self, now: float) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        if data:
            self.partial_since = now
        chunks = (self.partial + data).split(b"\n")
        self.partial = chunks.pop()
        lines = [c.decode(errors="replace") for c in chunks]
        if self.partial and now - self.partial_since >= PARTIAL_AFTER:
            lines.append(self.partial.decode(errors="replace"))
            self.partial = b""
        return lines

    def rest(self) -> list[str]:
        lines = self.read(float("inf"))
        if self.partial:
            lines.append(self.partial.decode(errors="replace"))
            self.partial = b""
        return lines


def run_qemu(argv: Sequence[str], serial_log: Path, watcher: Watcher, *, timeout: float,
             silence: float, console_on_stdout: bool = False) -> Outcome:
    """Run QEMU until the watcher sees an end state, QEMU exits, `timeout` passes or `silence` seconds pass
    without console output. Returns how it ended; QEMU is gone when this returns."""
    serial_log.write_bytes(b"")
    stderr_path = serial_log.with_suffix(".qemu-stderr")
    reader = _LogReader(serial_log)
    start = time.monotonic()
    last_output = start
    timed_out, silent_for, stop_at = False, None, None
    with qemu_process(argv, stderr_path, serial_log if console_on_stdout else None) as proc:
        while True:
            now = time.monotonic()
            lines = reader.read(now)
            for line in lines:
                watcher.feed(now - start, line)
            if lines:
                last_output = now
            if watcher.done and stop_at is None:
                stop_at = now + (0.0 if watcher.t_sentinel is not None else LINGER)
            if stop_at is not None and now >= stop_at:
                break
            if proc.poll() is not None:
                break
            if now - start >= timeout:
                timed_out = True
                break
            if now - last_output >= silence:
                timed_out, silent_for = True, now - last_output
                break
            time.sleep(POLL)
        stop(proc)
        end = time.monotonic()
        for line in reader.rest():
            watcher.feed(end - start, line)
        status = proc.returncode if stop_at is None and not timed_out else None
    _check_started(status, watcher, stderr_path)
    return Outcome(seconds=end - start, timed_out=timed_out, silent_for=silent_for, exit_status=status)


def _check_started(status: int | None, watcher: Watcher, stderr_path: Path) -> None:
    """QEMU that failed on its own command line is our error, not the image's."""
    if status in (None, 0) or any(line.text.strip() for line in watcher.lines):
        return
    err = stderr_path.read_text(errors="replace").strip().splitlines()
    raise ImagekitError(f"QEMU failed to start (status {status}): {err[-1] if err else 'no message'}")
