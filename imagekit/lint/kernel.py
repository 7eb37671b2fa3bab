"""Rules about the kernel an image boots: format, architecture, Xen PV, options, drivers in the initrd."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from imagekit.kernel.bzimage import KernelFormatError, Vmlinux, load_vmlinux
from imagekit.kernel.config import OptionResult, Status, Target, check_config, ikconfig, parse_config
from imagekit.kernel.initrd import initrd_members, module_names
from imagekit.lint.findings import Finding, Severity, finding, unreadable
from imagekit.lint.view import ImageView, UnreadableFile
from imagekit.recipe.arch import spec_named

# the module a =m option builds, for looking it up in the initrd
MODULES = {
    "XEN_BLKDEV_FRONTEND": "xen-blkfront", "XEN_NETDEV_FRONTEND": "xen-netfront", "BLK_DEV_NVME": "nvme",
    "ENA_ETHERNET": "ena", "EXT4_FS": "ext4", "EXT3_FS": "ext3", "EXT2_FS": "ext2", "XFS_FS": "xfs",
    "BTRFS_FS": "btrfs", "REISERFS_FS": "reiserfs", "VFAT_FS": "vfat",
}
# drivers the kernel needs before the root filesystem is mounted: as modules they must be in the initrd
EARLY = {"XEN_BLKDEV_FRONTEND", "BLK_DEV_NVME", "ENA_ETHERNET", "EXT4_FS", "EXT3_FS", "EXT2_FS", "XFS_FS",
         "BTRFS_FS", "REISERFS_FS"}
HVM_DRIVERS = {"BLK_DEV_NVME", "ENA_ETHERNET"}

# What lint reads of a kernel or an initrd, at most. The size is checked before a byte is read; the file
# is streamed to a temp file; a kernel is then parsed in memory, an initrd read as a stream. A
# distribution's vmlinuz is 5-15 MiB and an uncompressed ELF vmlinux without debug info 30-80 MiB;
# PV-GRUB and GRUB load the whole kernel and initrd into guest memory (a t1.micro has 613 MiB), and
# Debian's initrds are 20-80 MiB (a dracut initrd with every driver ~200 MiB). Above these a file is
# not a kernel (or an initrd) a loader can use.
MAX_KERNEL = 256 * 1024 * 1024
MAX_INITRD = 512 * 1024 * 1024


@dataclass(frozen=True)
class KernelFiles:
    """One kernel to judge: where it is and what boots it with it."""

    device: str
    path: str
    initrd: str | None  # on the same device
    label: str  # how findings name it, e.g. "(hd0,0)/boot/vmlinuz-6.1.0-cloud-amd64"


def _too_large(view: ImageView, device: str, path: str, limit: int, rule: str, label: str) -> list[Finding]:
    """A finding when the file is over `limit` bytes (its size from the filesystem: nothing is read)."""
    size = view.size(device, path)
    if size is None or size <= limit:
        return []
    what = "kernel" if rule == "kernel-too-large" else "initrd"
    return [finding(rule, label, f"the {what} file is {size} bytes, over {limit >> 20} MiB: no boot loader "
                    f"loads a {what} that large (lint read none of it)", f"point the boot entry at the real {what}")]


def _vmlinux(view: ImageView, k: KernelFiles) -> tuple[Vmlinux | None, list[Finding]]:
    try:
        too_large = _too_large(view, k.device, k.path, MAX_KERNEL, "kernel-too-large", k.label)
        data = None if too_large else view.fetch(k.device, k.path, MAX_KERNEL)
    except UnreadableFile as exc:
        return None, [unreadable(exc, k.label)]
    if too_large or data is None:
        return None, too_large
    try:
        return load_vmlinux(data, k.label), []
    except KernelFormatError as exc:
        return None, [finding("kernel-unreadable", k.label, exc.message,
                              "point the boot entry at a bzImage or an (optionally gzipped) ELF vmlinux")]


def _config(view: ImageView, k: KernelFiles, vmlinux: Vmlinux) -> tuple[dict[str, str] | None, str]:
    embedded = ikconfig(vmlinux.data)
    if embedded is not None:
        return parse_config(embedded), f"{k.label} (CONFIG_IKCONFIG)"
    release = vmlinux.header.release if vmlinux.header else ""
    directory = k.path.rsplit("/", 1)[0] or "/"
    names = [f"config-{release}"] if release else []
    base = k.path.rsplit("/", 1)[-1]
    for prefix in ("vmlinuz-", "vmlinux-", "pvgrub-vmlinux-"):
        if base.startswith(prefix):
            names.append("config-" + base[len(prefix):].removesuffix(".gz"))
    for name in names:
        path = f"{directory.rstrip('/')}/{name}"
        try:
            text = view.read_text(k.device, path)
        except UnreadableFile:
            continue  # a config that cannot be read is no config: kernel-no-config says so
        if text is not None:
            return parse_config(text), f"{k.label.rsplit('/', 1)[0]}/{name}"
    return None, ""


def _initrd_modules(view: ImageView, k: KernelFiles) -> tuple[set[str] | None, list[Finding]]:
    if k.initrd is None:
        return None, []
    try:
        too_large = _too_large(view, k.device, k.initrd, MAX_INITRD, "initrd-too-large", k.initrd)
        if too_large:
            return None, too_large
        with view.fetched(k.device, k.initrd, MAX_INITRD) as local:
            if local is None:
                return None, []
            with open(local, "rb") as f:
                return module_names(initrd_members(f)), []  # streamed: never the whole initrd in memory
    except UnreadableFile as exc:
        return None, [unreadable(exc, k.initrd)]
    except KernelFormatError as exc:
        return None, [finding("initrd-unreadable", k.initrd, exc.message, "rebuild the initrd")]


def _option_findings(results: list[OptionResult], source: str, target: Target,
                     modules: set[str] | None, initrd: str | None) -> Iterator[Finding]:
    for r in results:
        obj = f"CONFIG_{r.option} ({source})"
        if not r.ok:
            rule = "hvm-driver-missing" if target is not Target.PV and r.option in HVM_DRIVERS else (
                "kernel-config" if r.severity == "error" else "kernel-config-warning")
            state = {Status.MISSING: "is not set", Status.MODULE: "is a module",
                     Status.PRESENT: "is built in"}[r.status]
            extra = f" and {r.note}" if r.note else ""
            yield finding(rule, obj, f"CONFIG_{r.option} {state}{extra}: needed for {r.why}",
                          f"use a kernel with CONFIG_{r.option}={'y' if r.need == 'built-in' else 'y or m'}")
            continue
        module = MODULES.get(r.option)
        if r.status is Status.MODULE and r.option in EARLY and modules is not None and module is not None \
                and module not in modules:
            rule = "hvm-driver-missing" if r.option in HVM_DRIVERS else "kernel-module-not-in-initrd"
            yield finding(rule, f"{initrd} ({module}.ko)", f"CONFIG_{r.option} is a module and {module}.ko "
                          f"is not in the initrd: needed for {r.why}",
                          f"add {module} to the initrd (/etc/initramfs-tools/modules) and rebuild it")


def check_kernel(view: ImageView, k: KernelFiles, target: Target, arch: str, fs_types: set[str]) -> list[Finding]:
    vmlinux, findings = _vmlinux(view, k)
    if vmlinux is None:
        return findings
    elf = vmlinux.elf
    if elf.arch != spec_named(arch).elf_machine:  # the image's arch as kernel/elf.py names machines
        why = " (a 64-bit PV-GRUB cannot start a 32-bit kernel, nor the reverse)" if target is Target.PV else ""
        findings.append(finding("kernel-arch", k.label, f"the kernel is {elf.arch} (ELF{elf.bits}), the "
                                f"image is {arch}{why}", f"install an {arch} kernel"))
    # on PV, Xen's loader judges the kernel GRUB 0.97 read: imagekit/lint/pvgrub.py (the boot's model)
    options, source = _config(view, k, vmlinux)
    if options is None:
        findings.append(finding("kernel-no-config", k.label, "no config-VERSION beside the kernel and no "
                                "embedded config: kernel options not checked",
                                "install the kernel's config file in /boot"))
        return findings
    modules, problems = _initrd_modules(view, k)
    findings += problems
    results = []
    filesystems: list[str | None] = [*sorted(fs_types)] or [None]
    for fs in filesystems:
        results += [r for r in check_config(options, target, fs=fs, initrd=k.initrd is not None)
                    if r not in results]
    findings += _option_findings(results, source, target, modules, k.initrd)
    return findings


def check_cmdline(label: str, args: str, target: Target) -> Iterator[Finding]:
    """console= for the target: hvc0 on PV (the last console= becomes /dev/console), ttyS0 on HVM."""
    consoles = [w.split("=", 1)[1].split(",")[0] for w in args.split() if w.startswith("console=")]
    want = "hvc0" if target is Target.PV else "ttyS0"
    severity = Severity.ERROR if target is Target.PV else Severity.WARNING
    if want not in consoles:
        yield finding("cmdline-console", label, f"no console={want} on the kernel command line "
                      f"({'EC2 PV consoles are hvc0' if target is Target.PV else 'the HVM serial console'})",
                      f"add console={want}", severity=severity)
    elif consoles[-1] != want:
        yield finding("cmdline-console-order", label, f"console={consoles[-1]} comes after console={want}: "
                      f"/dev/console will be {consoles[-1]}", f"put console={want} last")
