"""Where imagekit keeps what it can reuse: bootstrapped root filesystems, GRUB images, probes.

`IMAGEKIT_CACHE_DIR`, else `$XDG_CACHE_HOME/imagekit`, else `~/.cache/imagekit`.
Entries are content-addressed (a hash of their inputs), written under a temporary name and
renamed when complete, so an interrupted run never leaves a half-made entry under a real key.

The cache is an optimisation, never a requirement: a read-only or foreign cache directory makes
imagekit warn and work without it (`unwritable`). Entries that take long to make (a bootstrap) are
made under a lock (`locked`), so concurrent builds make each entry once and the others reuse it.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path
from typing import Any

from imagekit.util.errors import ImagekitError

LOCK_WAIT_SECONDS = 3600.0  # a bootstrap over a slow mirror takes minutes; a holder that dies frees the lock at once
LOCK_POLL_SECONDS = 0.25


def cache_dir() -> Path:
    env = os.environ.get("IMAGEKIT_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "imagekit"


def key_of(inputs: Any) -> str:
    """A stable hash of JSON-able inputs (dict keys sorted)."""
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def unwritable(directory: Path) -> str | None:
    """Why entries cannot be made in directory (created if missing), or None when they can."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create it ({exc.strerror})"
    if not os.access(directory, os.W_OK | os.X_OK):  # access(2) also says EROFS for a read-only mount
        return "read-only filesystem" if _read_only_mount(directory) else "not writable by this user"
    return None


def _read_only_mount(directory: Path) -> bool:
    return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)


def _holder(fd: int) -> str:
    """The pid the lock holder wrote into the lock file ('' when it has not yet)."""
    try:
        return os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return ""


@contextmanager
def locked(lock: Path, waiting: Callable[[str], AbstractContextManager[object]], *,
           wait: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
    """Hold an exclusive flock on `lock` (created beside the entry it guards, and left there).

    When another process holds it, the wait runs inside `waiting(holder)` (a progress stage, given
    the holder's pid) and is bounded by `wait` seconds. The kernel drops a flock when its holder
    exits, crashes or is killed, so a dead holder never blocks anyone. The lock file is never
    removed: unlinking one that another process has open and is about to lock would let two in.
    """
    fd = _open_lock(lock)
    try:
        _acquire(fd, lock, waiting, wait)
        with suppress(OSError):  # the pid is for the others' message; a lock file of another user's is fine
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def _open_lock(lock: Path) -> int:
    """The lock file, opened close-on-exec (so no child, mmdebstrap say, outlives imagekit holding it)."""
    flags = os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(lock, os.O_RDWR | os.O_CREAT | flags, 0o644)
    except PermissionError:  # another user's lock file in a shared cache: flock needs no write access
        return os.open(lock, os.O_RDONLY | flags)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
        return False
    return True


def _acquire(fd: int, lock: Path, waiting: Callable[[str], AbstractContextManager[object]], wait: float) -> None:
    if _try_lock(fd):
        return
    holder = _holder(fd)
    who = f"pid {holder}" if holder else "another process"
    deadline = time.monotonic() + wait
    with waiting(who):
        while not _try_lock(fd):
            if time.monotonic() >= deadline:
                raise ImagekitError(f"gave up after {wait:.0f}s waiting for {lock} (held by {who})",
                                    hint="is that imagekit stuck? stop it: its lock goes with it")
            time.sleep(LOCK_POLL_SECONDS)
