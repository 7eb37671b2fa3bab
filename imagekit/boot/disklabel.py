"""What the first sectors of a disk say about how it boots: GRUB in the MBR, a GPT, an ESP.

Read before any libguestfs session (34 sectors through `qemu-img dd`, any image format), so an image
without a build manifest can be told apart: an EFI System Partition means UEFI, GRUB's boot code in
the MBR means BIOS, both means a hybrid image; neither means a PV-GRUB image (hd0/hd00).
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

from imagekit.boot.overlay import ImageFile
from imagekit.util.run import run

SECTOR = 512
HEAD_SECTORS = 34  # MBR, GPT header, 128 partition entries of 128 bytes
ESP = uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b")
BIOS_BOOT = uuid.UUID("21686148-6449-6e6f-744e-656564454649")
# GPT types a root (or /boot) filesystem can sit on: Linux filesystem, root x86-64, LVM, XBOOTLDR.
LINUX_GPT = {uuid.UUID(u) for u in ("0fc63daf-8483-4772-8e79-3d69d8477de4", "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
                                    "e6d6d379-f507-44c2-a23c-238f2a3df928", "bc13c2ff-59e6-4262-a352-b275fd6f7172")}
LINUX_MBR = {0x83, 0x8E}  # Linux, Linux LVM
GPT_PROTECTIVE = 0xEE


@dataclass(frozen=True)
class DiskLabel:
    grub_in_mbr: bool  # GRUB 2's boot.img in the first 440 bytes
    gpt: bool
    esp: bool  # a GPT partition of the EFI System type
    bios_boot: bool  # a GPT BIOS boot partition (GRUB's core.img on a GPT disk)
    linux_partitions: int  # partitions of a Linux (or LVM) type
    filesystem_at_zero: bool  # no table: an ext2/3/4 superblock at the start (a partitionless image)

    @property
    def may_hold_root(self) -> bool:
        """Could libguestfs find a root filesystem here at all? (If not, there is nothing to prepare.)"""
        return self.linux_partitions > 0 or self.filesystem_at_zero


def parse_head(head: bytes) -> DiskLabel:
    """The disk's first sectors, parsed (short input is padded with zeros)."""
    head = head.ljust(HEAD_SECTORS * SECTOR, b"\0")
    mbr_types = [head[446 + 16 * i + 4] for i in range(4)] if head[510:512] == b"\x55\xaa" else []
    gpt_types = _gpt_types(head) if GPT_PROTECTIVE in mbr_types else []
    ext_magic = head[1024 + 56 : 1024 + 58] == b"\x53\xef"
    linux = sum(t in LINUX_GPT for t in gpt_types) if gpt_types else sum(t in LINUX_MBR for t in mbr_types)
    return DiskLabel(grub_in_mbr=b"GRUB" in head[:440], gpt=bool(gpt_types), esp=ESP in gpt_types,
                     bios_boot=BIOS_BOOT in gpt_types, linux_partitions=linux,
                     filesystem_at_zero=not mbr_types and ext_magic)


def _gpt_types(head: bytes) -> list[uuid.UUID]:
    header = head[SECTOR : 2 * SECTOR]
    if header[:8] != b"EFI PART":
        return []
    lba, count, size = struct.unpack_from("<QII", header, 72)
    start = lba * SECTOR
    types = []
    for i in range(count):
        entry = head[start + i * size : start + i * size + 16]
        if len(entry) < 16:
            break  # entries beyond the sectors read: 128 fit, which is what every tool writes
        if entry != bytes(16):
            types.append(uuid.UUID(bytes_le=entry))
    return types


def read_label(image: ImageFile, workdir: Path) -> DiskLabel:
    """Parse the image's first sectors, whatever its format (qemu-img converts them to raw)."""
    out = workdir / "head.raw"
    run(["qemu-img", "dd", "-f", image.format, "-O", "raw", f"bs={SECTOR}", f"count={HEAD_SECTORS}",
         f"if={image.path}", f"of={out}"])
    try:
        return parse_head(out.read_bytes())
    finally:
        out.unlink(missing_ok=True)
