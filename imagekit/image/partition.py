"""The partition table (MBR or GPT), written with pyparted on a plain file (no loop device, no root)."""

from __future__ import annotations

import os
from pathlib import Path

from imagekit.image.layout import FirmwarePart, Placement
from imagekit.util.optional import require
from imagekit.util.run import run

SECTOR = 512


def write_mbr(path: Path, placements: list[Placement], *, disk_id: int | None = None) -> None:
    """An msdos label with one primary Linux partition per placement; the first is marked bootable."""
    parted = require("parted", needed_by="writing an MBR partition table")  # heavy: partitioned layouts only

    device = parted.getDevice(str(path))
    disk = parted.freshDisk(device, "msdos")
    for p in placements:
        geometry = parted.Geometry(device=device, start=p.offset // SECTOR, length=p.size // SECTOR)
        partition = parted.Partition(disk=disk, type=parted.PARTITION_NORMAL, geometry=geometry)
        disk.addPartition(partition, constraint=parted.Constraint(exactGeom=geometry))
    first = disk.partitions[0]
    first.setFlag(parted.PARTITION_BOOT)
    disk.commit()
    if disk_id is not None:  # parted picks a random MBR signature; a reproducible build sets its own
        with open(path, "r+b") as f:
            f.seek(440)
            f.write(disk_id.to_bytes(4, "little"))


# GPT partition names, as Debian's cloud images and systemd's repart name them.
GPT_NAMES = {"bios-boot": "BIOS boot", "esp": "EFI System", "/boot": "boot", "/": "root"}


def write_gpt(path: Path, firmware: list[FirmwarePart], placements: list[Placement]) -> None:
    """A GPT label: the firmware partitions (BIOS boot: bios_grub; ESP: boot/esp), then the filesystems."""
    parted = require("parted", needed_by="writing a GPT partition table")

    device = parted.getDevice(str(path))
    disk = parted.freshDisk(device, "gpt")
    parts = [(p.kind, p.offset, p.size) for p in firmware] + [(p.mountpoint, p.offset, p.size) for p in placements]
    for kind, offset, size in parts:
        geometry = parted.Geometry(device=device, start=offset // SECTOR, length=size // SECTOR)
        partition = parted.Partition(disk=disk, type=parted.PARTITION_NORMAL, geometry=geometry)
        disk.addPartition(partition, constraint=parted.Constraint(exactGeom=geometry))
        partition.set_name(GPT_NAMES[kind])
        if kind == "bios-boot":
            partition.setFlag(parted.PARTITION_BIOS_GRUB)
        elif kind == "esp":
            partition.setFlag(parted.PARTITION_BOOT)  # on GPT, libparted's boot flag is the ESP type
    disk.commit()


def set_gpt_ids(path: Path, disk_guid: str, partition_guids: list[str]) -> None:
    """Replace the random GUIDs parted gave the disk and its partitions (reproducible builds): sfdisk."""
    run(["sfdisk", "--quiet", "--disk-id", os.fspath(path), disk_guid])
    for number, guid in enumerate(partition_guids, start=1):
        run(["sfdisk", "--quiet", "--part-uuid", os.fspath(path), str(number), guid])
