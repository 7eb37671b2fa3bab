"""One wrapper for every external command imagekit runs.

argv is a list (never a shell string), the command is logged as `+ argv` (shown with -v),
the locale is pinned, and a failure is reported once, naming the command and its status.
A command run with a `timeout` is killed at it, with every process it started (its own session,
killed as a group), and `CommandTimedOut` names it. A long-lived child (QEMU, `xl console`) is
`spawn`ed: owned by a context manager that stops it (TERM, then KILL, to its whole group) and reaps
it however the block ends, and killed by the kernel if imagekit itself dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shlex
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import IO

from imagekit.util.errors import CommandFailed, CommandTimedOut

log = logging.getLogger("imagekit.util.run")

Arg = str | PathLike[str]
Stream = int | IO[bytes] | None  # what Popen takes for stdin, stdout, stderr: subprocess.PIPE/DEVNULL, a file, inherit

STOP_WAIT = 5.0  # seconds a stopped child gets between SIGTERM and SIGKILL


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env["LANG"] = env["LC_ALL"] = "C.UTF-8"
    if extra:
        env.update(extra)
    return env


def run(  # noqa: PLR0913 - subprocess.run's own keywords, all keyword-only: one call site reads as the call
    argv: Sequence[Arg],
    *,
    check: bool = True,
    capture: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    input: bytes | None = None,
    stdout: int | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run argv; raise CommandFailed (with the command's stderr) when it fails and check is set.
    With `timeout` (seconds) the command runs in its own session and, still running then, is killed
    with everything it started: CommandTimedOut, whatever `check` says."""
    args = [os.fspath(a) for a in argv]
    log.info("+ %s", shlex.join(args))
    try:
        proc = subprocess.Popen(
            args,
            env=_env(env),
            cwd=cwd,
            stdin=subprocess.PIPE if input is not None else None,
            stdout=stdout if stdout is not None else (subprocess.PIPE if capture else None),
            stderr=subprocess.PIPE if capture else None,
            start_new_session=timeout is not None,
        )
    except FileNotFoundError:
        raise CommandFailed(args, 127) from None
    with proc:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            assert timeout is not None
            kill_group(proc)
            raise CommandTimedOut(args, timeout, _drain(proc)) from None
        except BaseException:  # interrupted: the command goes too (as subprocess.run does)
            proc.kill()
            raise
    if check and proc.returncode != 0:
        raise CommandFailed(args, proc.returncode, (err or b"").decode(errors="replace"))
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's process group (it leads its own session) and reap the child."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _drain(proc: subprocess.Popen[bytes]) -> str:
    """What a killed command left in its stderr pipe (its group is dead, so the pipes close)."""
    try:
        _, err = proc.communicate(timeout=STOP_WAIT)
    except subprocess.TimeoutExpired:  # a grandchild that left the group still holds the pipe
        return ""
    return (err or b"").decode(errors="replace")


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a spawned child: SIGTERM to its group, SIGKILL after STOP_WAIT seconds; reaped either way."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(STOP_WAIT)
    except subprocess.TimeoutExpired:
        kill_group(proc)


@contextmanager
def spawn(argv: Sequence[Arg], *, stdout: Stream = subprocess.DEVNULL, stderr: Stream = subprocess.DEVNULL,
          env: Mapping[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Start a long-lived child (stdin closed) in its own session; it gets SIGKILL if imagekit dies, and when
    the block ends, however it ends, it is stopped (`stop`) and reaped. Pipes it was given are closed."""
    args = [os.fspath(a) for a in argv]
    log.info("+ %s", shlex.join(args))
    try:
        proc = subprocess.Popen(args, env=_env(env), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                start_new_session=True, preexec_fn=_die_with_parent)
    except FileNotFoundError:
        raise CommandFailed(args, 127) from None
    try:
        yield proc
    finally:
        stop(proc)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def run_lines(argv: Sequence[Arg], on_line: Callable[[str], None]) -> None:
    """Run argv (stdin closed, stdout dropped) telling `on_line` each line it writes to stderr as it
    comes (a long job's progress); CommandFailed with its stderr when it fails. Always reaped."""
    args = [os.fspath(a) for a in argv]
    log.info("+ %s", shlex.join(args))
    try:
        proc = subprocess.Popen(args, env=_env(None), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise CommandFailed(args, 127) from None
    kept: list[str] = []
    try:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            kept.append(line)
            del kept[:-200]  # the tail is what an error needs
            on_line(line)
    except BaseException:  # interrupted (Ctrl-C) or the callback failed: the command goes too
        proc.kill()
        raise
    finally:
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    if proc.returncode != 0:
        raise CommandFailed(args, proc.returncode, "\n".join(kept))


def output(argv: Sequence[Arg], **kw: object) -> str:
    """Run argv and return its stdout as text."""
    return run(argv, **kw).stdout.decode(errors="replace")  # type: ignore[arg-type]


@dataclass
class Piped:
    """A tool started by `pipe`: write `proc.stdin`, read `proc.stdout`; `stderr()` once it is done."""

    proc: subprocess.Popen[bytes]
    err: IO[bytes]
    args: list[str]

    def stderr(self) -> str:
        self.err.seek(0)
        return self.err.read().decode(errors="replace")

    def failed(self) -> CommandFailed | None:
        """None when the tool exited 0 (wait for it first), else the error naming it."""
        code = self.proc.wait()
        return None if code == 0 else CommandFailed(self.args, code, self.stderr())


@contextmanager
def pipe(argv: Sequence[Arg]) -> Iterator[Piped]:
    """Start argv with its stdin and stdout as pipes, to stream data through a tool (a decompressor)
    without holding it all; its stderr goes to a temp file. On the way out a tool still running is
    killed, and it is always reaped."""
    args = [os.fspath(a) for a in argv]
    log.info("+ %s", shlex.join(args))
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(args, env=_env(None), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        except FileNotFoundError:
            raise CommandFailed(args, 127) from None
        try:
            yield Piped(proc, err, args)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
