"""The errors imagekit reports to a user: one line, no traceback, a non-zero exit.

Every stage raises one of these; `imagekit.cli` catches them in one place.
Exit codes follow the CLI contract: 1 = the job failed, 2 = usage or input error.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from os import PathLike


class ImagekitError(Exception):
    """A failure imagekit can explain. `hint` is an optional second line telling what to do."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(ImagekitError):
    """Bad input: an option, a file, a recipe key. Exit 2."""

    exit_code = 2


class RecipeError(UsageError):
    """A recipe or kernel profile that does not validate. Names the file and the key."""

    def __init__(self, path: str | PathLike[str], key: str | None, message: str, **kw: str | None) -> None:
        where = f"{path}: {key}: " if key else f"{path}: "
        super().__init__(where + message, **kw)
        self.path = str(path)
        self.key = key


class CommandFailed(ImagekitError):
    """An external command exited non-zero (or could not be started)."""

    def __init__(self, argv: Sequence[str | PathLike[str]], returncode: int, output: str = "") -> None:
        self.argv = [str(a) for a in argv]
        self.returncode = returncode
        self.output = output
        tool = self.argv[0] if self.argv else "?"
        if returncode == 127:
            message = f"{tool} not found"
            hint = "run scripts/setup to install imagekit's system packages"
        else:
            last = output.strip().splitlines()[-1] if output.strip() else ""
            message = f"{shlex.join(self.argv)} failed with status {returncode}" + (f": {last}" if last else "")
            hint = None
        super().__init__(message, hint=hint)


class CommandTimedOut(CommandFailed):
    """An external command still running at its timeout: killed (with all it started) and reaped."""

    def __init__(self, argv: Sequence[str | PathLike[str]], seconds: float, output: str = "") -> None:
        super().__init__(argv, -9, output)  # -9: as subprocess reports a SIGKILLed child
        self.seconds = seconds
        self.message = f"{shlex.join(self.argv)} did not finish within {seconds:g} s and was killed"
        self.args = (self.message,)
        self.hint = None


class HostDiskFull(ImagekitError):
    """The host's filesystem ran out of space (ENOSPC) or quota (EDQUOT): not the recipe's size. Exit 1.

    Names what was being written and each directory involved with its free space (`measured` says when).
    """

    def __init__(self, what: str, paths: Sequence[str | PathLike[str]], reason: str, *, hint: str,
                 measured: str = "") -> None:
        import shutil  # only for this error

        self.what = what
        self.paths = [str(p) for p in paths]
        room = []
        for path in self.paths:
            try:
                usage = shutil.disk_usage(path)
                room.append(f"{path}: {_mib(usage.free)} free of {_mib(usage.total)}{measured}")
            except OSError as exc:
                room.append(f"{path}: {exc.strerror}")
        super().__init__(f"the host's disk is full: {reason} while {what} ({'; '.join(room)})", hint=hint)


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB" if n < (10 << 30) else f"{n / (1 << 30):.1f} GiB"
