"""Rules about the disk: partition table, the filesystem PV-GRUB reads /boot from, LVM (seed 002)."""

from __future__ import annotations

from collections.abc import Iterator

from imagekit.lint.findings import Finding, finding
from imagekit.lint.view import Filesystem, ImageView, UnreadableFile

PVGRUB_FILESYSTEMS = {"ext2", "ext3", "ext4", "xfs", "reiserfs", "btrfs"}
MOUNTABLE_SKIP = {"swap", "unknown", "LVM2_member"}


def grub_device(partition: int | None) -> str:
    """GRUB's name: (hd0) for the whole disk, (hd0,N) (0-based) for partition N+1."""
    return "(hd0)" if partition is None else f"(hd0,{partition - 1})"


def mountable(view: ImageView) -> list[Filesystem]:
    return [f for f in view.filesystems if f.type not in MOUNTABLE_SKIP]


def holds_boot_files(view: ImageView, fs: Filesystem) -> bool:
    """Does this filesystem carry a menu.lst or a kernel, as / (in /boot) or as a /boot partition?
    (A menu.lst that is there but cannot be read counts: check_menu reports it.)"""
    for path in ("/boot/grub/menu.lst", "/grub/menu.lst"):
        try:
            if view.exists(fs.device, path):
                return True
        except UnreadableFile:
            return True
    return any(n.startswith(("vmlinuz", "vmlinux")) for d in ("/boot", "/") for n in view.ls(fs.device, d))


def boot_filesystem(view: ImageView) -> Filesystem | None:
    """The filesystem PV-GRUB reads: the whole disk (hd0) or the first partition (hd00)."""
    return view.filesystem_on_partition(None if view.parttype is None else 1)


def check_disk(view: ImageView) -> Iterator[Finding]:
    """Rules for PV targets: the table, the first partition, LVM, the boot filesystem's type."""
    if not mountable(view):
        yield finding("disk-unreadable", view.image.name, "no filesystem found on the image",
                      "is this a disk image? lint reads raw images (a qcow2 with --format qcow2)")
        return
    if view.parttype == "gpt":
        yield finding("disk-gpt", "partition table", "the image has a GPT partition table; "
                      "PV-GRUB (GRUB 0.97) reads MBR (msdos) tables only",
                      "use layout hd00 (MBR) or hd0 (no partition table) for PV images")
    boot = boot_filesystem(view)
    if view.parttype is not None and (boot is None or not holds_boot_files(view, boot)):
        yield from _first_partition(view, boot)
        return
    if boot is None:
        return
    yield from check_boot_fs(view, boot)


def _first_partition(view: ImageView, boot: Filesystem | None) -> Iterator[Finding]:
    first = "partition 1 (hd0,0)"
    others = [f for f in mountable(view) if f is not boot and holds_boot_files(view, f)]
    if view.lvm_pvs and any(f.lvm for f in others):
        yield finding("disk-lvm-without-boot", first,
                      "the kernels and menu.lst are inside LVM; PV-GRUB cannot read logical volumes",
                      "put /boot on its own (first) partition outside LVM (seed 002)")
        return
    what = "no filesystem" if boot is None else f"a {boot.type} filesystem without menu.lst or kernels"
    where = f" (they are on {others[0].device})" if others else ""
    yield finding("disk-first-partition-not-boot", first, f"the first partition holds {what}{where}",
                  "on a partitioned image PV-GRUB boots from the first partition: make it / or /boot")


def check_boot_fs(view: ImageView, boot: Filesystem) -> Iterator[Finding]:
    obj = f"{grub_device(boot.partition)} {boot.type} {boot.device}"
    if boot.type not in PVGRUB_FILESYSTEMS:
        yield finding("bootfs-unsupported", obj, f"PV-GRUB cannot read /boot from {boot.type}",
                      "use ext2, ext3, ext4 or XFS for the filesystem holding /boot")
    elif boot.type == "btrfs":
        yield finding("bootfs-btrfs-beta", obj, "PV-GRUB's BTRFS support is beta (AWS user guide)",
                      "prefer ext4 or a small ext2 /boot partition")
    if boot.type.startswith("ext") and "64bit" in view.ext_features(boot.device):
        yield finding("bootfs-ext4-64bit", obj, "the filesystem has the 64bit feature, which GRUB 0.97 "
                      "(PV-GRUB) does not know: it cannot read menu.lst or the kernel",
                      "make it with mkfs.ext4 -O ^64bit (or use ext2 for a /boot partition)")


def check_labels(view: ImageView) -> Iterator[Finding]:
    """Two filesystems with one label: LABEL= (root=, fstab, GRUB's search) names either, and which one
    Linux or EC2 finds first is not defined (a second volume attached from the same image, a copy)."""
    by_label: dict[str, list[Filesystem]] = {}
    for fs in view.filesystems:
        if fs.label:
            by_label.setdefault(fs.label, []).append(fs)
    for label, same in sorted(by_label.items()):
        if len(same) > 1:
            devices = ", ".join(f.device for f in same)
            yield finding("duplicate-label", f"LABEL={label}", f"{len(same)} filesystems are labelled {label!r} "
                          f"({devices}): LABEL={label} may mount any of them", "give each filesystem its own label "
                          "(e2label, fatlabel, xfs_admin -L), and name the root by UUID= if in doubt")
