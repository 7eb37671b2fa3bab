"""What an HVM image's overlay gets, in one libguestfs session: the probe, and console=ttyS0 in grub.cfg.

The root filesystem is the one with /sbin/init, on whichever partition (GPT or MBR) or logical volume
it is; GRUB 2's config is /boot/grub/grub.cfg on it, or /grub/grub.cfg on a separate /boot filesystem.
The probe is the PV one (imagekit/boot/probe.py). Every `linux` line of grub.cfg whose last console= is
not ttyS0 gets console=ttyS0 last: EC2's HVM serial console is ttyS0 and so is QEMU's, and the last
console= is /dev/console, where the initramfs writes why it cannot find root. Nothing else changes:
the firmware, GRUB's boot code, its config and the ESP are booted as they are.
"""

from __future__ import annotations

from typing import Any

from imagekit.boot import guest, probe
from imagekit.boot.guest import FILESYSTEMS, Disk
from imagekit.boot.prepared import Prepared
from imagekit.boot.probe import LINUX_COMMANDS

GRUB_CFG = "/boot/grub/grub.cfg"


def linux_filesystems(g: Any) -> list[str]:
    """Devices (partitions or logical volumes) holding a filesystem a root or /boot can be."""
    return sorted(d for d, fs in g.list_filesystems().items() if fs in FILESYSTEMS)


def find_root(g: Any, devices: list[str]) -> str | None:
    return next((d for d in devices if guest.looks_like_root(g, d)), None)


def find_boot(g: Any, devices: list[str], root: str) -> str:
    """The filesystem grub.cfg is on: root's /boot/grub, else a separate /boot holding /grub/grub.cfg."""
    for device in (d for d in devices if d != root):
        g.mount_ro(device, "/")
        try:
            if guest.is_file(g, GRUB_CFG.removeprefix("/boot")):
                return device
        finally:
            g.umount_all()
    return root


def add_grub_console(g: Any, console: str = "ttyS0") -> list[str]:
    """console=ttyS0 (QEMU's serial port: ttyAMA0 on arm64's virt) last on grub.cfg's linux lines (in the
    overlay); what was changed, for the report."""
    if not guest.is_file(g, GRUB_CFG):
        return []
    arg = f"console={console}"
    text, changed = probe.add_serial_console(str(g.cat(GRUB_CFG)), LINUX_COMMANDS, last=True, serial=arg)
    if not changed:
        return []
    g.write(GRUB_CFG, text.encode())
    if console != "ttyS0":
        return [f"{GRUB_CFG}: {arg} put last on {changed} linux line(s), so it is /dev/console (QEMU's serial "
                "port; the image's own console=ttyS0 is EC2 Graviton's)"]
    return [f"{GRUB_CFG}: {arg} put last on {changed} linux line(s), so it is /dev/console (EC2 HVM's "
            "serial console is ttyS0 too: with another console last, the initramfs' messages would not show there)"]


def prepare_hvm(g: Any, console: str = "ttyS0") -> Prepared:
    """Mount root (and /boot), install the probe, make the kernel talk on ttyS0 (`console`)."""
    devices = linux_filesystems(g)
    root = find_root(g, devices)
    if root is None:
        found = ", ".join(devices) or "none"
        return Prepared(Disk(None, "", None, False), None, probe.ProbeKind.NONE, (), None,
                        (f"no root filesystem with /sbin/init (Linux filesystems: {found}): no probe installed, "
                         "the disk is booted as it is",))
    boot = find_boot(g, devices, root)
    disk = Disk(None, boot, root, separate_boot=boot != root)
    guest.mount(g, disk)
    return edit_hvm(g, disk, console)


def edit_hvm(g: Any, disk: Disk, console: str = "ttyS0") -> Prepared:
    """On the mounted tree (libguestfs, or extfs.ExtTree without an appliance): the probe, console=ttyS0
    (`console`: QEMU's serial port for the image's architecture)."""
    root = disk.root_device
    kind = probe.detect_kind(g)
    added = [*probe.install_probe(g, kind), *add_grub_console(g, console)]
    notes = [f"separate /boot: {disk.boot_device}, root {root}"] if disk.separate_boot else []
    grub_cfg = GRUB_CFG if guest.is_file(g, GRUB_CFG) else None
    if grub_cfg is None:
        notes.append(f"no {GRUB_CFG} on the disk")
    return Prepared(disk, None, kind, tuple(added), None, tuple(notes), grub_cfg)
