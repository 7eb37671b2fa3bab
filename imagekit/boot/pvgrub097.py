"""--loader pvgrub097: PV-GRUB's two halves, each by the real code's rules, then the kernel booted by QEMU.

1. Menu and files by GRUB 0.97 itself (imagekit/pvgrub/, Debian's grub-legacy 0.97-80): `plan_boot` on the
   *image* (read-only) runs menu.lst where the AKI version looks, tries the default entry and the fallbacks
   in GRUB's order, and keeps the kernel and initrd bytes GRUB read (`grub_open` + `grub_read`, as Mini-OS's
   `load_file`; a gzipped file comes out gunzipped, as on PV-GRUB).
2. The kernel as Xen's domain builder loads it (imagekit/kernel/xenload.py). A kernel Xen refuses fails the
   entry's `boot` with GRUB's Error 9 (stubdom/grub/kexec.c: `xc_dom_parse_image returned -1`,
   ERR_BOOT_FAILURE) and GRUB takes the next fallback entry, as AWS's troubleshooting page shows; so does
   this loader, running that entry alone (`plan_boot(only=N)`).
3. QEMU boots *those bytes*: `-kernel` the ELF vmlinux Xen would start (through its PVH entry, the
   XEN_ELFNOTE_PHYS32_ENTRY note), `-initrd` the initrd GRUB read, `-append` the entry's arguments
   (console=ttyS0 first; EC2 device names mapped to the virtio disk, as --loader direct does). The disk is
   the overlay the harness prepared (the probe is in its root filesystem); GRUB never reads the overlay.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagekit.boot.console import Reason
from imagekit.boot.direct import map_devices
from imagekit.boot.disklabel import read_label
from imagekit.boot.guest import Disk
from imagekit.boot.overlay import ImageFile
from imagekit.boot.probe import SERIAL_ARG
from imagekit.boot.pvgrub import Variant
from imagekit.errors import UsageError
from imagekit.kernel.xenload import KERNEL_FORMAT, XenKernel, XenRefused, xen_load
from imagekit.pvgrub.menu import Attempt, BootPlan, Menu, plan_boot
from imagekit.pvgrub.shell import GrubError

LOADER = "pvgrub097"
BOOT_FAILURE = GrubError(9, "Unknown boot failure")  # what PV-GRUB prints when Xen refuses the kernel
NO_KERNEL = GrubError(8, "Kernel must be loaded before booting")  # an entry that ends without a kernel line
MAX_FALLBACK_ENTRIES = 8  # stage2/shared.h
REASONS = {KERNEL_FORMAT: Reason.PVGRUB_KERNEL_FORMAT, "pvgrub-not-xen-pv": Reason.PVGRUB_NOT_XEN_PV}


@dataclass(frozen=True)
class Tried:
    """One entry PV-GRUB tried: GRUB 0.97's attempt, and Xen's refusal of its kernel if it got that far."""

    attempt: Attempt
    refused: XenRefused | None = None
    no_kernel: bool = False  # GRUB ran every command but none loaded a kernel: `boot` fails with Error 8

    @property
    def error(self) -> GrubError | None:
        if self.refused:
            return BOOT_FAILURE
        return NO_KERNEL if self.no_kernel else self.attempt.error

    def describe(self) -> str:
        entry = self.attempt.entry
        head = f"entry {entry.index} {entry.title!r}"
        if self.no_kernel:
            return f"{head}: {NO_KERNEL} (no kernel line)"
        if self.refused is not None:
            kernel = self.attempt.loaded("kernel")
            line = f" at menu.lst line {kernel.line.number}" if kernel else ""
            return f"{head}: {BOOT_FAILURE}{line} (Xen's loader: {self.refused.detail})"
        failed = self.attempt.failed_at
        where = f" at menu.lst line {failed.number} ({failed.text!r})" if failed else ""
        return f"{head}: {self.attempt.error}{where}"


@dataclass(frozen=True)
class Grub097Plan:
    """What PV-GRUB does with the image: the entries it tries, and the kernel it starts (if any)."""

    aki_version: str
    plan: BootPlan  # GRUB 0.97's own run of the menu (default, then fallbacks)
    tried: tuple[Tried, ...]  # every entry tried, in order, including those Xen refused
    xen: XenKernel | None  # the kernel Xen would start; None when no entry boots

    @property
    def booted(self) -> Attempt | None:
        return self.tried[-1].attempt if self.xen is not None else None

    @property
    def fell_back(self) -> bool:
        return self.booted is not None and len(self.tried) > 1

    def why(self) -> str:
        """Which entry boots and why: the default, or a fallback after the entries that failed."""
        booted = self.booted
        if booted is None:
            return "no entry boots: " + "; ".join(t.describe() for t in self.tried)
        name = f"entry {booted.entry.index} {booted.entry.title!r}"
        if not self.fell_back:
            return f"{name} booted: the default entry"
        return f"{name} booted as fallback after " + "; ".join(t.describe() for t in self.tried[:-1])

    def failure(self) -> tuple[Reason, str]:
        """The report's reason when no entry boots: the default entry's failure names it."""
        if self.plan.menu is None:
            tried = "; ".join(f"{path}: {error}" for path, error in self.plan.searched)
            return Reason.MENU_LST_NOT_FOUND, f"PV-GRUB {self.aki_version} looked in: {tried}"
        if not self.tried:
            return Reason.NO_ENTRY_LOADED, f"{self.plan.menu.path}: no entry"
        first = self.tried[0]
        if first.refused is not None:
            reason = REASONS[first.refused.reason]
        elif first.error is not None and first.error.number == 27:
            reason = Reason.PVGRUB_UNKNOWN_COMMAND
        else:
            reason = Reason.PVGRUB_UNREADABLE
        return reason, self.why()


def fallbacks(menu: Menu) -> list[int]:
    """The `fallback` list as stage2's fallback_func reads it: up to 8 entry numbers, in order."""
    out: list[int] = []
    for word in (menu.fallback or "").replace("=", " ").split()[:MAX_FALLBACK_ENTRIES]:
        if not word.isdigit() or int(word) >= len(menu.entries):
            break
        out.append(int(word))
    return out


def plan(image: Path, variant: Variant, aki_version: str, keep: Path) -> Grub097Plan:
    """GRUB 0.97 runs the menu; Xen's loader judges the kernel of the entry that boots; a refused kernel sends
    GRUB to the next fallback (that entry run alone, as GRUB would run it next)."""
    grub = plan_boot(image, variant, aki_version=aki_version, keep=keep)
    tried = [Tried(a) for a in grub.attempts]
    order = fallbacks(grub.menu) if grub.menu else []
    while tried:
        last = tried[-1]
        if last.attempt.ok and last.attempt.loaded("kernel") is None:
            tried[-1] = Tried(last.attempt, no_kernel=True)
        elif last.attempt.ok:
            try:
                return Grub097Plan(aki_version, grub, tuple(tried), _xen(last.attempt))
            except XenRefused as refused:
                tried[-1] = Tried(last.attempt, refused)
        elif len(tried) == len(grub.attempts):
            break  # GRUB's own run: every fallback failed already
        if len(tried) > len(order):
            break
        following = plan_boot(image, variant, aki_version=aki_version, keep=keep, only=order[len(tried) - 1])
        tried += [Tried(a) for a in following.attempts]
    return Grub097Plan(aki_version, grub, tuple(tried), None)


def _xen(attempt: Attempt) -> XenKernel:
    kernel = attempt.loaded("kernel")
    assert kernel is not None and kernel.read.data is not None
    return xen_load(kernel.read.data.read_bytes(), kernel.file)


@dataclass(frozen=True)
class Grub097Boot:
    """What QEMU is given: the ELF Xen would start, the initrd GRUB read, the entry's command line."""

    plan: Grub097Plan
    kernel: Path
    initrd: Path | None
    append: str
    mappings: tuple[str, ...]


def prepare(result: Grub097Plan, disk: Disk, workdir: Path) -> Grub097Boot:
    """The booting entry's bytes as files for QEMU; UsageError when QEMU's PVH boot cannot start the kernel."""
    attempt, xen = result.booted, result.xen
    assert attempt is not None and xen is not None
    kernel = attempt.loaded("kernel")
    assert kernel is not None
    if not xen.pvh:
        raise UsageError(f"{kernel.file}: Xen would start it as a PV guest, but it has no XEN_ELFNOTE_PHYS32_ENTRY: "
                         "QEMU's -kernel (PVH) cannot start it", hint="use --loader pvgrub or --hypervisor xen")
    vmlinux = workdir / "vmlinux"
    vmlinux.write_bytes(xen.elf)
    initrd = attempt.loaded("initrd")
    args, mappings = map_devices(kernel.args, disk)
    if SERIAL_ARG not in args.split():
        args = f"{SERIAL_ARG} {args}".strip()
    return Grub097Boot(result, vmlinux, initrd.read.data if initrd else None, args, mappings)


def aki_version_for(variant: Variant, version: str | None) -> str:
    """--aki-version, or what `imagekit aki` registers for the layout (the newest table that has it)."""
    from imagekit.aki import default_version

    if version is None:
        return default_version(str(variant))
    parts = version.split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise UsageError(f"--aki-version: {version!r} is not a PV-GRUB version like 1.03 or 1.05")
    return version


def variant_of(image: ImageFile, variant: Variant | None, workdir: Path) -> Variant:
    """The AKI to emulate: --variant, or hd00 when the disk has an MBR partition table, hd0 when a filesystem
    starts at sector 0. GRUB 0.97's shell opens the image file itself: raw images only."""
    if image.format != "raw":
        raise UsageError(f"IMAGE: {image.path} is {image.format}: --loader {LOADER} reads raw images (GRUB 0.97's "
                         "shell opens the file itself)", hint=f"qemu-img convert -O raw {image.path} IMAGE.img")
    if variant is not None:
        return variant
    label = read_label(image, workdir)
    if label.gpt:
        raise UsageError(f"IMAGE: {image.path} has a GPT partition table: PV-GRUB reads MBR only")
    return Variant.HD0 if label.filesystem_at_zero else Variant.HD00


def summary(result: Grub097Plan, seconds: float) -> dict[str, Any]:
    """The report's `pvgrub097` field: where menu.lst was, each entry tried, the kernel Xen starts."""
    xen = result.xen
    return {
        "aki_version": result.aki_version,
        "menu": result.plan.menu.path if result.plan.menu else None,
        "searched": [{"path": p, "error": str(e) if e else None} for p, e in result.plan.searched],
        "why": result.why(),
        "tried": [{"index": t.attempt.entry.index, "title": t.attempt.entry.title,
                   "error": str(t.error) if t.error else None,
                   "line": t.attempt.failed_at.number if t.attempt.failed_at else None,
                   "xen_refused": t.refused.detail if t.refused else None} for t in result.tried],
        "kernel": None if xen is None else {"xen_loader": list(xen.path), "compression": xen.compression,
                                             "bits": xen.bits, "pvh_entry": xen.pvh},
        "seconds": round(seconds, 2),
    }
