"""One libguestfs session on the overlay: find the boot and root filesystems and read menu.lst.

The session is opened read-write on the overlay only (the image is its read-only backing file).
Which filesystem PV-GRUB reads is fixed by the layout: the whole disk (hd0) or the first partition
(hd00). The root filesystem is the one with /sbin/init (or /etc), on a partition or a logical volume;
when it is not the boot one, it is a separate-/boot layout and the boot filesystem is mounted at /boot.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagekit.boot.pvgrub import MENU_LST, Variant
from imagekit.util.accel import Accel
from imagekit.util.appliance import DiskFormat, Drive, session
from imagekit.util.errors import UsageError

FILESYSTEMS = ("ext2", "ext3", "ext4", "xfs", "btrfs", "reiserfs")


@dataclass(frozen=True)
class Disk:
    variant: Variant | None  # None: a GPT disk, which PV-GRUB cannot read
    boot_device: str  # libguestfs device PV-GRUB reads menu.lst from
    root_device: str | None
    separate_boot: bool

    def boot_path(self, path: str) -> str:
        """Where a path on the boot filesystem is in the mounted tree."""
        return ("/boot" + path) if self.separate_boot else path

    @property
    def partitioned(self) -> bool:
        return self.variant is not Variant.HD0


@contextmanager
def open_guest(overlay: Path, accel: Accel, image_name: str) -> Iterator[Any]:
    """A launched libguestfs handle on the overlay (read-write); shut down and closed when the block ends."""
    with session([Drive(overlay, DiskFormat.QCOW2, readonly=False)], accel=accel,
                 error=f"libguestfs failed on {image_name}") as g:
        yield g


def _fstype(g: Any, device: str) -> str | None:
    try:
        return str(g.vfs_type(device)) or None
    except RuntimeError:
        return None


def looks_like_root(g: Any, device: str) -> bool:
    try:
        g.mount_ro(device, "/")
    except RuntimeError:
        return False
    try:
        return bool(g.is_dir("/etc") and (g.exists("/sbin/init") or g.is_symlink("/sbin/init")))
    finally:
        g.umount_all()


def logical_volumes(g: Any) -> list[str]:
    """The LVM logical volumes libguestfs activated (an LVM image's root is one of them; seeds 001, 002)."""
    try:
        return [str(lv) for lv in g.lvs()]
    except RuntimeError:
        return []


def find_disk(g: Any, image_name: str, variant: Variant | None = None) -> Disk:
    """The disk as PV-GRUB sees it. `variant` forces the AKI to emulate (default: from the partition table)."""
    device = g.list_devices()[0]
    parts = list(g.list_partitions())
    table = g.part_get_parttype(device) if parts else None
    if table == "gpt" and variant is None:
        return Disk(None, parts[0], None, False)
    if variant is None:
        variant = Variant.HD00 if parts else Variant.HD0
    candidates = [*(parts or [device]), *logical_volumes(g)]
    boot = device if variant is Variant.HD0 else (parts[0] if parts else device)
    fs = [d for d in candidates if _fstype(g, d) in FILESYSTEMS]
    if not fs and _fstype(g, boot) not in FILESYSTEMS:
        raise UsageError(f"IMAGE: {image_name} has no filesystem PV-GRUB can read "
                         f"({', '.join(FILESYSTEMS)})")
    ordered = [boot, *[d for d in fs if d != boot]]
    root = next((d for d in ordered if _fstype(g, d) in FILESYSTEMS and looks_like_root(g, d)), None)
    return Disk(variant, boot, root, separate_boot=root is not None and root != boot)


def mount(g: Any, disk: Disk) -> None:
    """Mount root at / and, for a separate /boot, the boot filesystem at /boot (read-write: the overlay)."""
    if disk.root_device is None:
        g.mount(disk.boot_device, "/")
        return
    g.mount(disk.root_device, "/")
    if disk.separate_boot and _fstype(g, disk.boot_device) in FILESYSTEMS:
        g.mount(disk.boot_device, "/boot")


def read_menu_lst(g: Any, disk: Disk) -> str | None:
    path = disk.boot_path(MENU_LST)
    try:
        return str(g.cat(path)) if g.is_file(path, followsymlinks=True) else None
    except RuntimeError:
        return None


def is_file(g: Any, path: str) -> bool:
    try:
        return bool(g.is_file(path, followsymlinks=True))
    except RuntimeError:
        return False
