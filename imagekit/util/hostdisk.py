"""Tell the host's full disk apart from a recipe that is too small.

Writing the staged tree, the image, the cache or the manifest can fail because the *host's* filesystem
is full (ENOSPC, or EDQUOT over a quota): that is no fault of the recipe, and the user must hear which
directory filled up and how much room it has. mke2fs' own "Could not allocate block/inode" is the image
being too small (the recipe's size), and stays a recipe error (image.filesystem.TooSmall).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from imagekit.util.errors import CommandFailed, HostDiskFull

FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# What a command prints when a write of its own fails with ENOSPC / EDQUOT (strerror, C locale: run.py pins it).
FULL_MESSAGES = tuple(os.strerror(e) for e in FULL_ERRNOS)


def disk_full_reason(exc: BaseException) -> str | None:
    """'No space left on device' (or the quota's message) when exc is the host's disk filling up, else None."""
    if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
        return exc.strerror or FULL_MESSAGES[FULL_ERRNOS.index(exc.errno)]
    if isinstance(exc, CommandFailed):
        return next((m for m in FULL_MESSAGES if m in exc.output), None)
    return None


@contextmanager
def host_disk(what: str, paths: Sequence[Path], *, hint: str, measured: str = "") -> Iterator[None]:
    """Turn a full host disk inside the block into HostDiskFull naming `what`, the paths and their free space."""
    try:
        yield
    except (OSError, CommandFailed) as exc:
        reason = disk_full_reason(exc)
        if reason is None:
            raise
        raise HostDiskFull(what, paths, reason, hint=hint, measured=measured) from None
