"""Same inputs, same bytes: the epoch of a reproducible build and the clamping it needs.

With an epoch (SOURCE_DATE_EPOCH, or `reproducible = true` in the recipe with `epoch` or a snapshot
mirror's date), a build derives filesystem UUIDs, directory hash seeds and the MBR signature from the
recipe, makes mke2fs write its own times as the epoch (E2FSPROGS_FAKE_TIME), and after mke2fs has
copied the tree in, sets every inode's ctime and atime to the epoch and clamps its mtime to it with
one debugfs script (no user can set a ctime, and the staged tree is the bootstrap cache's). mke2fs -d
adds files in sorted order (scandir), so inode numbers do not depend on the host's directory order.
Reproducible images are ext2/3/4 ones: mkfs.xfs and mkfs.btrfs stamp their own times.
"""

from __future__ import annotations

import calendar
import os
import re
import time
import uuid
from pathlib import Path

from imagekit.recipe.model import Bootstrap, Recipe
from imagekit.util.errors import RecipeError, UsageError
from imagekit.util.run import run

SNAPSHOT_RE = re.compile(r"^(\d{8}T\d{6}Z)$")
EPOCH_RE = re.compile(r"[0-9]{1,10}")
MAX_EPOCH = 2**31 - 1  # ext2/3/4 inode times are 32-bit signed without extra fields
# The namespace of a reproducible build's derived ids: filesystem UUIDs, hash seeds, GPT GUIDs, the MBR signature.
UUID_NAMESPACE = uuid.UUID("5b0c3e52-8f0e-4a5e-9d7c-1a2b3c4d5e6f")


def snapshot_epoch(snapshot: str) -> int:
    """'20260101T000000Z' -> seconds since 1970."""
    return calendar.timegm(time.strptime(snapshot, "%Y%m%dT%H%M%SZ"))


def resolve_epoch(recipe: Recipe) -> int | None:
    """The build's epoch, or None for an ordinary (non-reproducible) build."""
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env is not None:
        # ASCII digits only (str.isdigit takes '²'), and no later than ext2 can store (2038-01-19)
        if not EPOCH_RE.fullmatch(env) or int(env) > MAX_EPOCH:
            shown = env if len(env) <= 40 else env[:37] + "..."
            raise UsageError(f"SOURCE_DATE_EPOCH: {shown!r} is not a number of seconds from 0 to {MAX_EPOCH}")
        return int(env)
    if not recipe.reproducible:
        return None
    if recipe.epoch is not None:
        return recipe.epoch
    src = recipe.rootfs
    if isinstance(src, Bootstrap) and src.snapshot:
        return snapshot_epoch(src.snapshot)
    raise RecipeError(recipe.path, "reproducible",
                      "needs an epoch: set epoch, rootfs.snapshot, or SOURCE_DATE_EPOCH in the environment")


def _quote(path: str) -> str:
    if '"' in path or "\n" in path:
        raise UsageError(f"reproducible build: cannot name {path!r} to debugfs (quote or newline in the name)")
    return f'"{path}"'


def clamp_times(image: Path, offset: int, tree: Path, epoch: int, scratch: Path) -> None:
    """In the built filesystem, set every inode's ctime and atime to the epoch and clamp its mtime to it.

    mke2fs copies all three from the staging tree, where ctime is the time of staging and atime
    moves whenever mke2fs reads a file: neither can be set beforehand, and the staged files are hard
    links into the bootstrap cache, which a build never changes. So the times are set with one
    debugfs script after mke2fs.
    """
    root_mtime = min(int(os.lstat(tree).st_mtime), epoch)
    lines = [f"sif / ctime @{epoch}", f"sif / atime @{epoch}", f"sif / mtime @{root_mtime}"]
    for root, dirs, files in os.walk(tree):
        rel = os.path.relpath(root, tree)
        base = "" if rel == "." else "/" + rel
        for name in sorted((*dirs, *files)):
            path = _quote(f"{base}/{name}")
            mtime = min(int(os.lstat(os.path.join(root, name)).st_mtime), epoch)
            lines += [f"sif {path} ctime @{epoch}", f"sif {path} atime @{epoch}", f"sif {path} mtime @{mtime}"]
    script = scratch / "ctime.debugfs"
    script.write_text("\n".join(lines) + "\n")
    device = f"{image}?offset={offset}" if offset else os.fspath(image)
    run(["debugfs", "-w", "-f", script, device], env={"E2FSPROGS_FAKE_TIME": str(epoch)})
    script.unlink()
