"""Lint a disk image against the PV-GRUB and EC2 rules, before an upload is spent on it.

    from imagekit.lint import lint_image
    findings = lint_image("out/img.raw", target="pv")

Works on any image (raw, or a self-contained qcow2 when asked for with fmt="qcow2"), not only
imagekit's: read in this process (reader "native", lint/native.py) or through one read-only libguestfs
launch (reader "guestfs"; "auto", the default, is native with libguestfs for what it cannot open, see
lint/view.py), the facts read from the image itself; a build manifest
beside the image, if there is one, only supplies the architecture and the boot mode (a manifest that
does not validate is a UsageError naming it). Each Finding has a stable rule id (RULES). The image is
hostile input: a file a rule cannot read (a symlink loop, a relative path, a huge file) is a finding,
and the other rules still run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagekit.kernel.config import Target
from imagekit.lint.disk import boot_filesystem, check_disk, check_labels, grub_device, mountable
from imagekit.lint.findings import RULES, Finding, Severity, finding, unreadable
from imagekit.lint.grubcfg import (
    CFG_PATHS,
    check_esp,
    check_grub_cfg,
    check_nitro_cmdline,
    entry_kernels,
    find_grub_cfg,
)
from imagekit.lint.kernel import MAX_INITRD, MAX_KERNEL, KernelFiles, check_cmdline, check_kernel
from imagekit.lint.menu import BootMenu, check_menu
from imagekit.lint.pvgrub import check_pvgrub, variant_of_table
from imagekit.lint.system import (
    check_fstab,
    check_fstab_esp,
    check_hvm_boot,
    check_nic_name,
    check_root_arg,
    root_filesystem,
)
from imagekit.lint.view import Filesystem, ImageView, UnreadableFile, open_view
from imagekit.manifest import Manifest, read_manifest
from imagekit.pvgrub.variant import Variant
from imagekit.recipe.model import Virtualization
from imagekit.util.errors import UsageError
from imagekit.util.progress import Progress, StageTimer

__all__ = ["RULES", "Finding", "LintReport", "Severity", "default_target", "has_errors", "lint_image", "lint_report",
           "lint_view"]

MAX_KERNELS = 3  # kernels judged per image (each one is read out of the appliance)


def has_errors(findings: list[Finding]) -> bool:
    return any(f.severity is Severity.ERROR for f in findings)


def _target(target: str) -> Target:
    try:
        return Target(target)
    except ValueError:
        raise UsageError(f"--target: {target!r} is not one of {', '.join(t.value for t in Target)}") from None


def _read_manifest(image: Path) -> Manifest | None:
    """The build manifest beside the image, validated (a bad one is a UsageError naming file and key)."""
    return read_manifest(image)


def default_target(image: Path) -> str:
    """pv or hvm, for an image linted without --target: its manifest's virtualization, else its first
    sector (a GPT protective MBR or GRUB 2 boot code means HVM; PV-GRUB images carry no boot code)."""
    manifest = _read_manifest(image) if image.is_file() else None
    if manifest and manifest.virtualization is not None:
        return "hvm" if manifest.virtualization is Virtualization.HVM else "pv"
    try:
        with open(image, "rb") as f:
            mbr = f.read(512)
    except OSError:
        return "pv"
    if len(mbr) == 512 and mbr[510:512] == b"\x55\xaa" and (mbr[450] == 0xEE or b"GRUB" in mbr[:440]):
        return "hvm"
    return "pv"


@dataclass
class LintReport:
    findings: list[Finding]
    reader: str  # "native" or "guestfs": which reader read the image
    notes: list[str] = field(default_factory=list)  # why auto fell back to libguestfs, if it did


def lint_image(
    path: str | os.PathLike[str], target: str | None = None, progress: Progress | None = None,
    arch: str | None = None, fmt: str | None = None, reader: str = "auto", aki_version: str | None = None,
) -> list[Finding]:
    """Every finding for the image at `path` on `target` (pv, hvm or nitro; default: `default_target`).
    `fmt` is raw or qcow2 (None: raw, and a file with a qcow2 header is refused; appliance.disk_format);
    `reader` is auto, native or guestfs (lint/view.py); `aki_version`: the PV-GRUB whose rules apply
    (default: what `imagekit aki` registers). Never writes to it."""
    return lint_report(path, target, progress, arch, fmt, reader, aki_version).findings


def lint_report(
    path: str | os.PathLike[str], target: str | None = None, progress: Progress | None = None,
    arch: str | None = None, fmt: str | None = None, reader: str = "auto", aki_version: str | None = None,
) -> LintReport:
    """`lint_image`, and which reader read the image (and why auto fell back, when it did)."""
    from imagekit.util.appliance import disk_format

    image = Path(path)
    chosen = _target(target) if target else None
    if not image.is_file():
        raise UsageError(f"{image}: no such image file")
    disk = disk_format(image, fmt)
    manifest = _read_manifest(image)
    tgt = chosen or _target(default_target(image))
    arch = arch or (manifest.arch if manifest else None) or "x86_64"
    progress = progress or Progress("quiet")
    notes: list[str] = []

    def fell_back(note: str) -> None:
        notes.append(note)
        progress.warn(f"lint: {note}")

    with progress.stage("lint", f"{image.name} --target {tgt}") as stage:
        stage.phase("reading the image")
        with open_view(image, disk, reader, fell_back) as view:
            stage.phase(f"reading the image ({view.reader})")
            stage.done = 0
            token = _LINT_STAGE.set(stage)  # the live row counts the checks run
            try:
                findings = lint_view(view, tgt, arch, manifest, aki_version=aki_version, fmt=str(disk))
                return LintReport(findings, view.reader, notes)
            finally:
                _LINT_STAGE.reset(token)


_LINT_STAGE: ContextVar[StageTimer | None] = ContextVar("lint_stage", default=None)


def _rule(findings: list[Finding], check: Callable[..., Iterable[Finding]], *args: Any) -> None:
    """Run one rule and keep its findings; a file it could not read becomes a finding and lint goes on."""
    try:
        findings += list(check(*args))
    except UnreadableFile as exc:
        findings.append(unreadable(exc))
    if (timer := _LINT_STAGE.get()) is not None:
        timer.done += 1
        timer.count(timer.done, None, f"checks done (last: {check.__name__.removeprefix('check_')})")


def _pv_boot(view: ImageView, findings: list[Finding]) -> tuple[BootMenu | None, list[KernelFiles]]:
    problems, boot = check_menu(view)
    findings += problems
    if boot is None:
        return None, []
    kernels: list[KernelFiles] = []
    for e in boot.entries:
        if not e.kernel_exists or e.device is None or e.kernel is None:
            continue
        if any((k.device, k.path) == (e.device, e.kernel) for k in kernels):
            continue
        fs = view.filesystem(e.device)
        initrd = e.initrd if e.initrd_exists else None
        kernels.append(KernelFiles(e.device, e.kernel, initrd, grub_device(fs.partition if fs else None) + e.kernel))
    return boot, kernels


def _hvm_kernels(view: ImageView) -> list[KernelFiles]:
    kernels = []
    for fs in mountable(view):
        for directory in ("/boot", "/"):
            names = view.ls(fs.device, directory)
            for name in sorted((n for n in names if n.startswith("vmlinuz-")), reverse=True):
                version = name.removeprefix("vmlinuz-")
                base = directory.rstrip("/")
                initrd = next((f"{base}/{i}" for i in (f"initrd.img-{version}", f"initramfs-{version}.img")
                               if i in names), None)
                kernels.append(KernelFiles(fs.device, f"{base}/{name}", initrd, f"{fs.device}:{base}/{name}"))
    return kernels


def _hvm_boot(view: ImageView, findings: list[Finding]) -> tuple[list[tuple[str, str]], list[KernelFiles]]:
    """grub.cfg's entries (the default first): their kernel command lines and the kernels they load."""
    menu, problems = find_grub_cfg(view)
    findings += problems
    if menu is None:
        if not problems:
            grub_in_mbr = b"GRUB" in view.disk_bytes(0, 440)
            findings.append(finding("grubcfg-missing", "disk", f"no {' or '.join(CFG_PATHS)} on any filesystem"
                                    + (": GRUB in the MBR stops at its prompt" if grub_in_mbr else ""),
                                    "generate grub.cfg (imagekit writes one for the HVM layouts)",
                                    severity=None if grub_in_mbr else Severity.WARNING))
        return [], _hvm_kernels(view)
    problems, loaded = check_grub_cfg(view, menu)
    findings += problems
    chosen = menu.cfg.pick(menu.cfg.default or "0")
    loaded.sort(key=lambda item: item.entry is not chosen)
    cmdlines = [(f"{menu.where} entry {item.entry.title!r}", item.entry.args) for item in loaded if item.entry.linux]
    return cmdlines, entry_kernels(loaded) or _hvm_kernels(view)


def _root_arg(args: str) -> str | None:
    value = None
    for word in args.split():
        if word.startswith("root="):
            value = word[5:]
    return value


def lint_view(view: ImageView, target: Target, arch: str, manifest: Manifest | None, *,
              aki_version: str | None = None, fmt: str = "raw") -> list[Finding]:
    findings: list[Finding] = []
    if target is Target.PV:
        _rule(findings, check_disk, view)
    elif not mountable(view):
        findings.append(finding("disk-unreadable", view.image.name, "no filesystem found on the image",
                                "is this a disk image?"))
    if any(f.rule == "disk-unreadable" for f in findings):
        return findings
    _rule(findings, check_labels, view)
    cmdlines, kernels = _boot(view, target, findings)
    variant = _pvgrub_variant(view, kernels) if target is Target.PV else None
    with ThreadPoolExecutor(1) as pool:  # GRUB 0.97 (a subprocess, on the file) runs beside the view's rules
        pvgrub = pool.submit(check_pvgrub, view.image, variant, aki_version, fmt) if variant else None
        _view_rules(findings, view, target, arch, cmdlines, kernels)
        findings += pvgrub.result() if pvgrub else []
    if target is not Target.PV:
        _rule(findings, check_hvm_boot, view, manifest.boot_mode if manifest else None)
    findings += _check_registration(manifest, target)
    return _unique(findings)


def _view_rules(findings: list[Finding], view: ImageView, target: Target, arch: str,
                cmdlines: list[tuple[str, str]], kernels: list[KernelFiles]) -> None:
    """The rules on what the image view reads: command lines, kernels and their configs, fstab."""
    for where, args in cmdlines:
        _rule(findings, check_cmdline, where, args, target)
        _rule(findings, check_nitro_cmdline, where, args, target)
        _rule(findings, check_root_arg, view, where, _root_arg(args), target)
    try:
        root_fs = root_filesystem(view, _root_arg(cmdlines[0][1]) if cmdlines else None)
        fs_types = _fs_types(view, root_fs)
    except UnreadableFile as exc:
        findings.append(unreadable(exc))
        root_fs, fs_types = None, set()
    for k in kernels[:MAX_KERNELS]:
        _rule(findings, check_kernel, view, k, target, arch, fs_types)
    if root_fs is not None:
        _rule(findings, check_fstab, view, root_fs, target)
        if target is not Target.PV:
            _rule(findings, check_fstab_esp, view, root_fs)
            if cmdlines:
                _rule(findings, check_nic_name, view, root_fs, *cmdlines[0])


def _boot(view: ImageView, target: Target, findings: list[Finding]) -> tuple[list[tuple[str, str]],
                                                                           list[KernelFiles]]:
    """The kernel command lines (the one booted first) and the kernels, from menu.lst (PV) or grub.cfg."""
    cmdlines: list[tuple[str, str]] = []  # (where, kernel arguments)
    try:
        if target is not Target.PV:
            cmdlines, kernels = _hvm_boot(view, findings)
            findings += check_esp(view)
            return cmdlines, kernels
        boot, kernels = _pv_boot(view, findings)
    except UnreadableFile as exc:
        findings.append(unreadable(exc))
        return cmdlines, []
    if boot is not None:
        cmdlines = [(f"{boot.location.grub} entry {e.index}", e.entry.kernel_args)
                    for e in boot.entries if e.entry.kernel]
        if boot.chosen is not None:  # the entry PV-GRUB boots first
            chosen = cmdlines.pop([e.index for e in boot.entries if e.entry.kernel].index(boot.chosen.index))
            cmdlines.insert(0, chosen)
    return cmdlines, kernels


def _pvgrub_variant(view: ImageView, kernels: list[KernelFiles]) -> Variant | None:
    """The AKI whose PV-GRUB the boot's model runs (GRUB 0.97 on the image file, Xen's loader rules), or None:
    not on GPT (disk-gpt: no PV-GRUB reads it), nor when a kernel or initrd menu.lst names is over lint's bound
    (GRUB 0.97 would read all of it; kernel-too-large / initrd-too-large say so). Asked here, in the thread
    that owns the libguestfs handle."""
    variant = variant_of_table(view.parttype)
    if variant is None or any(_over(view, k.device, path, limit) for k in kernels
                              for path, limit in ((k.path, MAX_KERNEL), (k.initrd, MAX_INITRD))):
        return None
    return variant


def _over(view: ImageView, device: str, path: str | None, limit: int) -> bool:
    try:
        size = view.size(device, path) if path else None
    except UnreadableFile:
        return False  # GRUB 0.97 meets the same symlink loop or odd file, and says so
    return size is not None and size > limit


def _fs_types(view: ImageView, root_fs: Filesystem | None) -> set[str]:
    types = {root_fs.type} if root_fs else set()
    boot = boot_filesystem(view)
    if boot is not None and boot.type not in ("swap", "unknown"):
        types.add(boot.type)
    return {t for t in types if t in ("ext2", "ext3", "ext4", "xfs", "btrfs", "reiserfs")}


def _check_registration(manifest: Manifest | None, target: Target) -> list[Finding]:
    """No ARI with a PV-GRUB AKI (seed 002): flag a ramdisk recorded for registration."""
    if target is not Target.PV or not manifest:
        return []
    for where in (manifest, manifest.publish, manifest.registration):
        ramdisk = (where.ramdisk_id or where.ari) if where is not None else None
        if ramdisk:
            return [finding("ari-with-pvgrub", f"manifest ramdisk {ramdisk}", "a ramdisk (ARI) is set for "
                            "registration; PV-GRUB loads the initrd from menu.lst itself",
                            "register the AMI with the PV-GRUB AKI and no ramdisk")]
    return []


def _unique(findings: list[Finding]) -> list[Finding]:
    seen: set[Finding] = set()
    out = []
    for f in findings:
        if f not in seen:
            seen.add(f)
            out.append(f)
    return out
