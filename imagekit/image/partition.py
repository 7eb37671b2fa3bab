"""The MBR partition table, written with pyparted on a plain file (no loop device, no root)."""

from __future__ import annotations

from pathlib import Path

from imagekit.image.layout import Placement

SECTOR = 512


def write_mbr(path: Path, placements: list[Placement], *, disk_id: int | None = None) -> None:
    """An msdos label with one primary Linux partition per placement; the first is marked bootable."""
    import parted  # heavy, and only needed for partitioned layouts

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
