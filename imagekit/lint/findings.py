"""Findings and the catalogue of rules: a stable id, a severity, and what the rule is about."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Severity(StrEnum):
    ERROR = "error"  # the image will not boot (or not work) on the target: `lint` exits 1
    WARNING = "warning"  # it may work, but a known trap lies here
    INFO = "info"  # worth knowing; nothing to fix


@dataclass(frozen=True)
class Finding:
    rule: str  # stable id, e.g. "menulst-missing"
    severity: Severity
    object: str  # what it is about: "(hd0,0)/boot/grub/menu.lst", "/etc/fstab line 3", "CONFIG_XEN_PV"
    message: str  # one line
    hint: str  # what to do about it


# id -> (severity, summary). Ids are a contract: tests, users' suppressions and docs use them.
RULES: dict[str, tuple[Severity, str]] = {
    # disk and boot filesystem (seed 002)
    "disk-unreadable": (Severity.ERROR, "no filesystem libguestfs can read"),
    "disk-gpt": (Severity.ERROR, "PV-GRUB reads MBR partition tables only"),
    "disk-first-partition-not-boot": (Severity.ERROR, "on a partitioned image the first partition must hold /boot"),
    "disk-lvm-without-boot": (Severity.ERROR, "LVM needs a separate /boot partition outside it"),
    "bootfs-unsupported": (Severity.ERROR, "PV-GRUB reads /boot from ext2/3/4, XFS, ReiserFS, BTRFS only"),
    "bootfs-btrfs-beta": (Severity.WARNING, "BTRFS support in PV-GRUB is beta"),
    "bootfs-ext4-64bit": (Severity.ERROR, "GRUB 0.97 (PV-GRUB) cannot read ext4 with the 64bit feature"),
    # menu.lst (seeds 002, 004)
    "menulst-location": (Severity.WARNING, "menu.lst only where newer PV-GRUB (1.04+) looks"),
    "menulst-parse": (Severity.ERROR, "menu.lst does not parse"),
    "menulst-no-entries": (Severity.ERROR, "menu.lst has no title entries"),
    "menulst-no-fallback": (Severity.WARNING, "one kernel and no fallback entry"),
    "menulst-path": (Severity.ERROR, "a kernel or initrd path is not absolute (GRUB cannot open it)"),
    # PV-GRUB's verdict: GRUB 0.97 itself and Xen's loader rules, the boot's model (imagekit/pvgrub/plan.py)
    "menulst-missing": (Severity.ERROR, "no menu.lst where the AKI's PV-GRUB looks (GRUB 0.97 read none)"),
    "pvgrub-unreadable": (Severity.ERROR, "no entry boots: GRUB 0.97 cannot open its root device or read a file"),
    "pvgrub-unknown-command": (Severity.ERROR, "no entry boots: a menu-only command in the entry (Error 27)"),
    "pvgrub-kernel-format": (Severity.ERROR, "no entry boots: Xen's loader refuses the kernel (payload compression, "
                             "not a kernel)"),
    "pvgrub-not-xen-pv": (Severity.ERROR, "no entry boots: the kernel has no Xen PV ELF notes"),
    "pvgrub-fallback": (Severity.WARNING, "the default entry fails on PV-GRUB; a fallback entry boots"),
    "pvgrub-entry": (Severity.WARNING, "an entry PV-GRUB does not try on this boot would fail if it ran"),
    # files the image names that cannot be read (hostile layouts, issue 13)
    "file-unreadable": (Severity.ERROR, "a file the boot needs cannot be read (a symlink loop, not a file, too large)"),
    "duplicate-label": (Severity.ERROR, "two filesystems have the same label: EC2 may mount either"),
    # kernel
    "kernel-unreadable": (Severity.ERROR, "the kernel file is not a kernel"),
    "kernel-too-large": (Severity.ERROR, "the kernel file is larger than any kernel (not read)"),
    "initrd-too-large": (Severity.ERROR, "the initrd is larger than a boot loader loads (not read)"),
    "kernel-arch": (Severity.ERROR, "the kernel's architecture does not match the target"),
    "kernel-config": (Severity.ERROR, "a kernel option the target needs is missing"),
    "kernel-config-warning": (Severity.WARNING, "a kernel option the target wants is missing"),
    "kernel-no-config": (Severity.INFO, "no kernel config found: options not checked"),
    "kernel-module-not-in-initrd": (Severity.ERROR, "a driver built as a module is not in the initrd"),
    "initrd-unreadable": (Severity.ERROR, "the initrd cannot be read"),
    "cmdline-console": (Severity.ERROR, "the console the target needs is not on the kernel command line"),
    "cmdline-console-order": (Severity.WARNING, "the target's console is not the last console="),
    "ari-with-pvgrub": (Severity.ERROR, "a ramdisk (ARI) is registered with a PV-GRUB AKI"),
    # root filesystem and fstab
    "root-missing": (Severity.ERROR, "no root= on the kernel command line"),
    "root-unresolved": (Severity.ERROR, "root= matches no filesystem in the image"),
    "root-device-name": (Severity.WARNING, "root= is a device name that changes between EC2 and elsewhere"),
    "fstab-missing": (Severity.WARNING, "no /etc/fstab"),
    "fstab-unresolved": (Severity.ERROR, "an fstab entry matches no filesystem in the image"),
    "fstab-device-name": (Severity.WARNING, "an fstab entry names a device that EC2 may rename"),
    "fstab-instance-store-nofail": (Severity.ERROR, "the instance store is mounted without nofail"),
    "fstab-xvd-names": (Severity.ERROR, "fstab uses /dev/xvd* or /dev/sd* names, which Nitro renames"),
    "fstab-type-mismatch": (Severity.ERROR, "an fstab entry's type is not its filesystem's: the mount fails at boot"),
    "fstab-esp-missing": (Severity.WARNING, "an HVM image's EFI system partition is not mounted (/boot/efi)"),
    "ssh-host-keys-shipped": (Severity.ERROR, "the image holds SSH host private keys: every instance would share "
                              "them (AWS: remove them from a shared AMI)"),
    "nic-name-eth0": (Severity.WARNING, "ifupdown configures eth0, which an HVM kernel calls ens5 (Nitro) unless "
                      "net.ifnames=0"),
    # HVM / Nitro
    "hvm-driver-missing": (Severity.ERROR, "NVMe or ENA driver neither built in nor in the initrd"),
    "hvm-bootloader-missing": (Severity.ERROR, "no bootloader for the boot mode"),
    "grubcfg-missing": (Severity.ERROR, "GRUB 2 is installed but there is no grub.cfg"),
    "grubcfg-parse": (Severity.ERROR, "grub.cfg does not parse"),
    "grubcfg-no-entries": (Severity.ERROR, "grub.cfg has no menuentry"),
    "grubcfg-default": (Severity.ERROR, "set default names no entry"),
    "grubcfg-fallback": (Severity.ERROR, "set fallback names no entry"),
    "grubcfg-search-unresolved": (Severity.ERROR, "an entry's search or root finds no filesystem in the image"),
    "grubcfg-kernel-missing": (Severity.ERROR, "an entry's linux file does not exist"),
    "grubcfg-initrd-missing": (Severity.ERROR, "an entry's initrd file does not exist"),
    "grubcfg-no-serial": (Severity.WARNING, "GRUB's menu and errors do not reach the serial console"),
    "esp-not-fat32": (Severity.ERROR, "the EFI system partition is not FAT32"),
    "cmdline-nvme-timeout": (Severity.WARNING, "nvme_core.io_timeout is not raised for EBS on Nitro"),
}


def finding(rule: str, obj: str, message: str, hint: str = "", severity: Severity | None = None) -> Finding:
    """A Finding for a catalogued rule (its severity from the catalogue unless given)."""
    default, _ = RULES[rule]
    return Finding(rule, severity or default, obj, message, hint)


class Unreadable(Protocol):
    """What lint.view.UnreadableFile tells (any reader's error for a file it cannot read)."""

    device: str
    path: str
    reason: str


def unreadable(exc: Unreadable, obj: str | None = None) -> Finding:
    """The finding for a file a rule needed and could not read; `obj` names it (default device:path)."""
    return finding("file-unreadable", obj or f"{exc.device}:{exc.path}", f"cannot read it: {exc.reason}",
                   "make it a regular file (no symlink loop), of a sane size, at an absolute path")
