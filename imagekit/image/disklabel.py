"""A disk's first sectors, parsed once for everyone: the MBR, the GPT, a filesystem at offset 0.

The one reader of a disk's label before any filesystem is opened: boot (which firmware, which PV-GRUB
AKI: `read_label`, any image format through `qemu-img dd`), lint (`--target`'s default) and publish
(the layout of an image without a manifest) all read `DiskLabel`; each decides from its fields.
Also the one home of the partition type ids: the image writer records them, the readers look for them.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

from imagekit.util.run import run

SECTOR = 512
HEAD_SECTORS = 34  # MBR, GPT header, 128 partition entries of 128 bytes
HEAD_BYTES = 68 * 1024  # HEAD_SECTORS and the btrfs superblock (magic at 0x10040)

# GPT partition type GUIDs (UEFI spec; GRUB's BIOS boot; the Discoverable Partitions spec), as parted,
# sfdisk and libguestfs print them.
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
BIOS_BOOT_TYPE = "21686148-6449-6E6F-744E-656564454649"
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"  # generic Linux data: what imagekit writes
ROOT_X86_64_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
LVM_TYPE = "E6D6D379-F507-44C2-A23C-238F2A3DF928"
XBOOTLDR_TYPE = "BC13C2FF-59E6-4262-A352-B275FD6F7172"
# GPT types a root (or /boot) filesystem can sit on
LINUX_GPT_TYPES = frozenset({LINUX_TYPE, ROOT_X86_64_TYPE, LVM_TYPE, XBOOTLDR_TYPE})
# MBR partition type ids
MBR_LINUX = 0x83
MBR_LVM = 0x8E
MBR_ESP = 0xEF
MBR_GPT_PROTECTIVE = 0xEE
MBR_EXTENDED = frozenset({0x05, 0x0F, 0x85})  # a container of logical partitions (an EBR chain)
LINUX_MBR_TYPES = frozenset({MBR_LINUX, MBR_LVM})

_ESP = uuid.UUID(ESP_TYPE)
_BIOS_BOOT = uuid.UUID(BIOS_BOOT_TYPE)
_LINUX_GPT = frozenset(uuid.UUID(t) for t in LINUX_GPT_TYPES)


@dataclass(frozen=True)
class Partition:
    """A primary MBR partition or a used GPT entry, where it lies."""

    number: int  # 1-based, as /dev/sdaN
    start: int  # bytes
    size: int  # bytes
    type: str  # MBR: "0x83"; GPT: the type GUID, lower case

    @property
    def device(self) -> str:
        return f"/dev/sda{self.number}"


@dataclass(frozen=True)
class DiskLabel:
    """What the first sectors hold. Readers decide from these; nothing here guesses a layout."""

    mbr_types: tuple[int, ...]  # the four primary entries' type ids; () without the 0x55AA signature
    grub_in_mbr: bool  # GRUB 2's boot.img in the first 440 bytes
    gpt_header: bool  # "EFI PART" at LBA 1 (whether or not an MBR protects it)
    gpt_types: tuple[uuid.UUID, ...]  # the used GPT entries' types, read behind a protective MBR only
    whole_disk_fs: str | None  # "ext", "xfs" or "btrfs": a superblock at the start (a partitionless disk)
    partitions: tuple[Partition, ...] = ()  # the GPT's used entries behind a protective MBR, else the MBR's primaries

    @property
    def extended(self) -> bool:
        """An extended MBR partition: logical partitions this reader does not follow."""
        return any(t in MBR_EXTENDED for t in self.mbr_types)

    @property
    def mbr(self) -> bool:
        """A boot sector signature: an MBR (or a GPT's protective MBR)."""
        return bool(self.mbr_types)

    @property
    def gpt(self) -> bool:
        return bool(self.gpt_types)

    @property
    def esp(self) -> bool:
        """A GPT partition of the EFI System type."""
        return _ESP in self.gpt_types

    @property
    def bios_boot(self) -> bool:
        """A GPT BIOS boot partition (GRUB's core.img on a GPT disk)."""
        return _BIOS_BOOT in self.gpt_types

    @property
    def linux_partitions(self) -> int:
        """Partitions of a Linux (or LVM) type."""
        if self.gpt_types:
            return sum(t in _LINUX_GPT for t in self.gpt_types)
        return sum(t in LINUX_MBR_TYPES for t in self.mbr_types)

    @property
    def filesystem_at_zero(self) -> bool:
        """No table: an ext2/3/4 superblock at the start (a partitionless image)."""
        return not self.mbr_types and self.whole_disk_fs == "ext"

    @property
    def may_hold_root(self) -> bool:
        """Could libguestfs find a root filesystem here at all? (If not, there is nothing to prepare.)"""
        return self.linux_partitions > 0 or self.filesystem_at_zero


def parse_head(head: bytes) -> DiskLabel:
    """The disk's first sectors, parsed (short input is padded with zeros)."""
    head = head.ljust(HEAD_BYTES, b"\0")
    signed = head[510:512] == b"\x55\xaa"
    mbr = [struct.unpack_from("<B3xBxxxII", head, 446 + 16 * i) for i in range(4)] if signed else []
    mbr_types = tuple(kind for _, kind, _, _ in mbr)
    gpt = _gpt_entries(head) if MBR_GPT_PROTECTIVE in mbr_types else []
    if gpt or MBR_GPT_PROTECTIVE in mbr_types:
        partitions = tuple(Partition(n, first * SECTOR, (last - first + 1) * SECTOR, str(kind).lower())
                           for n, kind, first, last in gpt)
    else:
        partitions = tuple(Partition(n, start * SECTOR, count * SECTOR, f"0x{kind:02x}")
                           for n, (_, kind, start, count) in enumerate(mbr, 1) if kind and count)
    return DiskLabel(mbr_types=mbr_types, grub_in_mbr=b"GRUB" in head[:440], gpt_header=head[512:520] == b"EFI PART",
                     gpt_types=tuple(kind for _, kind, _, _ in gpt), whole_disk_fs=_whole_disk_fs(head),
                     partitions=partitions)


def _whole_disk_fs(head: bytes) -> str | None:
    if head[1080:1082] == b"\x53\xef":
        return "ext"
    if head[:4] == b"XFSB":
        return "xfs"
    if head[0x10040:0x10048] == b"_BHRfS_M":
        return "btrfs"
    return None


def _gpt_entries(head: bytes) -> list[tuple[int, uuid.UUID, int, int]]:
    """(number, type, first LBA, last LBA) of each used entry within the sectors read."""
    header = head[SECTOR : 2 * SECTOR]
    if header[:8] != b"EFI PART":
        return []
    lba, count, size = struct.unpack_from("<QII", header, 72)
    start = lba * SECTOR
    found = []
    for i in range(count):
        at = start + i * size
        if at + 128 > HEAD_SECTORS * SECTOR:
            break  # entries beyond the sectors read: 128 fit, which is what every tool writes
        entry = head[at : at + 128]
        if entry[:16] != bytes(16):
            first, last = struct.unpack_from("<QQ", entry, 32)
            found.append((i + 1, uuid.UUID(bytes_le=entry[:16]), first, last))
    return found


def read_head(path: Path) -> DiskLabel:
    """The label of a raw image file (OSError when it cannot be read)."""
    with open(path, "rb") as fh:
        return parse_head(fh.read(HEAD_BYTES))


def read_label(path: Path, fmt: str, workdir: Path) -> DiskLabel:
    """The label of an image in any format: qemu-img converts its first sectors to raw in `workdir`."""
    out = workdir / "head.raw"
    run(["qemu-img", "dd", "-f", fmt, "-O", "raw", f"bs={SECTOR}", f"count={HEAD_SECTORS}",
         f"if={path}", f"of={out}"])
    try:
        return parse_head(out.read_bytes())
    finally:
        out.unlink(missing_ok=True)
