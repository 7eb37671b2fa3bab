"""One wrapper for every external command imagekit runs.

argv is a list (never a shell string), the command is logged as `+ argv` (shown with -v),
the locale is pinned, and a failure is reported once, naming the command and its status.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import IO

from imagekit.util.errors import CommandFailed

log = logging.getLogger("imagekit.util.run")

Arg = str | PathLike[str]


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env["LANG"] = env["LC_ALL"] = "C.UTF-8"
    if extra:
        env.update(extra)
    return env


def run(
    argv: Sequence[Arg],
    *,
    check: bool = True,
    capture: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    input: bytes | None = None,
    stdout: int | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run argv; raise CommandFailed (with the command's stderr) when it fails and check is set."""
    args = [os.fspath(a) for a in argv]
    log.info("+ %s", shlex.join(args))
    try:
        proc = subprocess.run(
            args,
            env=_env(env),
            cwd=cwd,
            input=input,
            stdout=stdout if stdout is not None else (subprocess.PIPE if capture else None),
            stderr=subprocess.PIPE if capture else None,
            check=False,
        )
    except FileNotFoundError:
        raise CommandFailed(args, 127) from None
    if check and proc.returncode != 0:
        err = (proc.stderr or b"").decode(errors="replace")
        raise CommandFailed(args, proc.returncode, err)
    return proc


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
