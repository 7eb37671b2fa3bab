"""Where each filesystem sits on the disk, from the recipe's layout.

PV (seed 002): hd0 is partitionless, hd00 is MBR with /boot (or /) first. HVM: mbr-bios is MBR with
GRUB's core.img in the gap before the first partition; gpt-uefi puts the EFI system partition first;
gpt-hybrid a 1 MiB BIOS boot partition, then the ESP. The filesystems follow.
"""

from __future__ import annotations

from dataclasses import dataclass

from imagekit.recipe.layouts import FirmwareKind, PartitionTable
from imagekit.recipe.model import Filesystem, MiB, Recipe
from imagekit.util.errors import RecipeError

ALIGN = MiB  # partitions start on 1 MiB boundaries (2048 sectors), as fdisk and parted do
BIOS_BOOT_SIZE = MiB  # GRUB's core.img (about 100 KiB here) with room to spare, as Debian's cloud images
GPT_TAIL = ALIGN  # the backup GPT (33 sectors) at the end of the disk, rounded to the alignment


@dataclass(frozen=True)
class Placement:
    """One filesystem on the disk. `partition` is None for a partitionless (hd0) image."""

    mountpoint: str
    fs: Filesystem
    partition: int | None
    offset: int
    size: int


@dataclass(frozen=True)
class FirmwarePart:
    """A partition the firmware's bootloader needs, before the filesystems: BIOS boot or the ESP."""

    kind: FirmwareKind
    partition: int
    offset: int
    size: int


def align_up(n: int, to: int = ALIGN) -> int:
    return -(-n // to) * to


def gpt_tail(recipe: Recipe) -> int:
    """The bytes the backup GPT takes at the end of the disk (none without a GPT)."""
    return GPT_TAIL if recipe.layout.spec.table is PartitionTable.GPT else 0


def firmware_part_size(recipe: Recipe, kind: FirmwareKind) -> int:
    if kind == "esp" and recipe.esp is not None:
        return align_up(recipe.esp.size)
    return BIOS_BOOT_SIZE


def plan_firmware(recipe: Recipe) -> list[FirmwarePart]:
    """The layout's firmware partitions in its order: BIOS boot (gpt-hybrid), the ESP (gpt-uefi, gpt-hybrid)."""
    parts: list[FirmwarePart] = []
    offset = ALIGN
    for kind in recipe.layout.spec.firmware_parts:
        size = firmware_part_size(recipe, kind)
        parts.append(FirmwarePart(kind, len(parts) + 1, offset, size))
        offset += size
    return parts


def boot_overhead(recipe: Recipe) -> int:
    """Bytes of the disk besides the root filesystem: the MBR gap, firmware partitions, /boot, the GPT tail."""
    if not recipe.layout.spec.partitioned:
        return 0
    boot = recipe.filesystems.boot
    firmware = sum(p.size for p in plan_firmware(recipe))
    tail = gpt_tail(recipe)
    return ALIGN + firmware + (align_up(boot.size) if boot is not None and boot.size else 0) + tail


def plan_layout(recipe: Recipe, size: int) -> tuple[int, list[Placement]]:
    """(disk size, filesystem placements in partition order), after the firmware partitions (plan_firmware).

    hd00 and mbr-bios put /boot (or /) on the first partition.
    """
    disk = align_up(size)
    fss = recipe.filesystems
    if not recipe.layout.spec.partitioned:
        return disk, [Placement("/", fss.root, None, 0, disk)]
    firmware = plan_firmware(recipe)
    offset = firmware[-1].offset + firmware[-1].size if firmware else ALIGN
    number = len(firmware)
    placements = []
    if fss.boot is not None:
        assert fss.boot.size is not None
        boot_size = align_up(fss.boot.size)
        number += 1
        placements.append(Placement("/boot", fss.boot, number, offset, boot_size))
        offset += boot_size
    root_size = disk - offset - gpt_tail(recipe)
    if root_size < 16 * MiB:
        raise RecipeError(recipe.path, "size", f"{size} bytes leaves no room for the root filesystem")
    placements.append(Placement("/", fss.root, number + 1, offset, root_size))
    return disk, placements
