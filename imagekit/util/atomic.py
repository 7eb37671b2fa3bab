"""Files that appear whole or not at all: written beside their path under a name of their own, then renamed.

A reader never sees half a file, an interrupted write leaves the old file (or none) and no partial one, and
two writers of one path each rename a complete file (the last one stays); neither renames the other's. The
new file gets the permissions any new file would (0666 less the umask), not mkstemp's 0600.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once, at import: os.umask can only be read by setting it


@contextmanager
def replacing(path: Path, mode: int | None = None) -> Iterator[BinaryIO]:
    """A binary file to write; renamed onto `path` when the block ends, removed if it raises. `mode`: its
    permissions (default: 0666 less the umask)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:200]}.", suffix=".partial")
    partial = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        os.chmod(partial, 0o666 & ~_UMASK if mode is None else mode)
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    with replacing(path) as out:
        out.write(data)


def copy_file(source: Path, target: Path) -> None:
    with replacing(target) as out, source.open("rb") as src:
        shutil.copyfileobj(src, out)
