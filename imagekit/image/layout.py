"""Where each filesystem sits on the disk, from the recipe's layout.

PV (seed 002): hd0 is partitionless, hd00 is MBR with /boot (or /) first. HVM: mbr-bios is MBR with
GRUB's core.img in the gap before the first partition; gpt-uefi puts the EFI system partition first;
gpt-hybrid a 1 MiB BIOS boot partition, then the ESP. The filesystems follow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from imagekit.recipe.model import Filesystem, Layout, MiB, Recipe
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

    kind: Literal["bios-boot", "esp"]
    partition: int
    offset: int
    size: int


def align_up(n: int, to: int = ALIGN) -> int:
    return -(-n // to) * to


def plan_firmware(recipe: Recipe) -> list[FirmwarePart]:
    """The BIOS boot partition (gpt-hybrid) and the EFI system partition (gpt-uefi, gpt-hybrid)."""
    parts: list[FirmwarePart] = []
    offset = ALIGN
    if recipe.layout == Layout.GPT_HYBRID:
        parts.append(FirmwarePart("bios-boot", 1, offset, BIOS_BOOT_SIZE))
        offset += BIOS_BOOT_SIZE
    esp = recipe.esp
    if esp is not None:
        parts.append(FirmwarePart("esp", len(parts) + 1, offset, align_up(esp.size)))
    return parts


def boot_overhead(recipe: Recipe) -> int:
    """Bytes of the disk besides the root filesystem: the MBR gap, firmware partitions, /boot, the GPT tail."""
    if recipe.layout == Layout.HD0:
        return 0
    boot = recipe.filesystems.boot
    firmware = sum(p.size for p in plan_firmware(recipe))
    tail = GPT_TAIL if recipe.layout.gpt else 0
    return ALIGN + firmware + (align_up(boot.size) if boot is not None and boot.size else 0) + tail


def plan_layout(recipe: Recipe, size: int) -> tuple[int, list[Placement]]:
    """(disk size, filesystem placements in partition order), after the firmware partitions (plan_firmware).

    hd00 and mbr-bios put /boot (or /) on the first partition.
    """
    disk = align_up(size)
    fss = recipe.filesystems
    if recipe.layout == Layout.HD0:
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
    root_size = disk - offset - (GPT_TAIL if recipe.layout.gpt else 0)
    if root_size < 16 * MiB:
        raise RecipeError(recipe.path, "size", f"{size} bytes leaves no room for the root filesystem")
    placements.append(Placement("/", fss.root, number + 1, offset, root_size))
    return disk, placements
