"""Where each filesystem sits on the disk, from the recipe's layout (seed 002: hd0 vs hd00)."""

from __future__ import annotations

from dataclasses import dataclass

from imagekit.errors import RecipeError
from imagekit.recipe import Filesystem, Layout, MiB, Recipe

ALIGN = MiB  # partitions start on 1 MiB boundaries (2048 sectors), as fdisk and parted do


@dataclass(frozen=True)
class Placement:
    """One filesystem on the disk. `partition` is None for a partitionless (hd0) image."""

    mountpoint: str
    fs: Filesystem
    partition: int | None
    offset: int
    size: int


def align_up(n: int, to: int = ALIGN) -> int:
    return -(-n // to) * to


def boot_overhead(recipe: Recipe) -> int:
    """Bytes of the disk before the root filesystem: the MBR gap and a separate /boot."""
    if recipe.layout == Layout.HD0:
        return 0
    boot = recipe.filesystems.boot
    return ALIGN + (align_up(boot.size) if boot is not None and boot.size else 0)


def plan_layout(recipe: Recipe, size: int) -> tuple[int, list[Placement]]:
    """(disk size, placements in partition order). hd00 puts /boot (or /) on the first partition."""
    disk = align_up(size)
    fss = recipe.filesystems
    if recipe.layout == Layout.HD0:
        return disk, [Placement("/", fss.root, None, 0, disk)]
    offset = ALIGN
    placements = []
    if fss.boot is not None:
        assert fss.boot.size is not None
        boot_size = align_up(fss.boot.size)
        placements.append(Placement("/boot", fss.boot, 1, offset, boot_size))
        offset += boot_size
    root_size = disk - offset
    if root_size < 16 * MiB:
        raise RecipeError(recipe.path, "size", f"{size} bytes leaves no room for the root filesystem")
    placements.append(Placement("/", fss.root, len(placements) + 1, offset, root_size))
    return disk, placements
