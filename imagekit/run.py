"""One wrapper for every external command imagekit runs.

argv is a list (never a shell string), the command is logged as `+ argv` (shown with -v),
the locale is pinned, and a failure is reported once, naming the command and its status.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path

from imagekit.errors import CommandFailed

log = logging.getLogger("imagekit.run")

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


def output(argv: Sequence[Arg], **kw: object) -> str:
    """Run argv and return its stdout as text."""
    return run(argv, **kw).stdout.decode(errors="replace")  # type: ignore[arg-type]
