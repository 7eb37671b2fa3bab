"""--loader pvgrub097: PV-GRUB's two halves, each by the real code's rules, then the kernel booted by QEMU.

1. Menu and files by GRUB 0.97 itself (imagekit/pvgrub/, Debian's grub-legacy 0.97-80): `plan_boot` on the
   *image* (read-only) runs menu.lst where the AKI version looks, tries the default entry and the fallbacks
   in GRUB's order, and keeps the kernel and initrd bytes GRUB read (`grub_open` + `grub_read`, as Mini-OS's
   `load_file`; a gzipped file comes out gunzipped, as on PV-GRUB).
2. The kernel as Xen's domain builder loads it (imagekit/kernel/xenload.py). A kernel Xen refuses fails the
   entry's `boot` with GRUB's Error 9 (stubdom/grub/kexec.c: `xc_dom_parse_image returned -1`,
   ERR_BOOT_FAILURE) and GRUB takes the next fallback entry, as AWS's troubleshooting page shows; so does
   this loader, running that entry alone (`plan_boot(only=N)`).
   Steps 1 and 2 are imagekit/pvgrub/plan.py, the model `imagekit lint` runs too (imagekit/lint/pvgrub.py).
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
from imagekit.boot.guest import Disk
from imagekit.boot.overlay import ImageFile
from imagekit.boot.probe import SERIAL_ARG
from imagekit.boot.pvgrub import Variant
from imagekit.image.disklabel import read_label
from imagekit.pvgrub.plan import Grub097Plan, Tried, aki_version_for, fallbacks, plan
from imagekit.recipe.layouts import PartitionTable, aki_for_table
from imagekit.util.errors import UsageError

LOADER = "pvgrub097"
__all__ = ["LOADER", "Grub097Boot", "Grub097Plan", "Tried", "aki_version_for", "failure", "fallbacks", "plan",
           "prepare", "summary", "variant_of"]


def failure(result: Grub097Plan) -> tuple[Reason, str]:
    """The report's reason and detail when no entry boots (the model's reason: the same word lint uses)."""
    reason, detail = result.failure()
    return Reason(reason), detail


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


def variant_of(image: ImageFile, variant: Variant | None, workdir: Path) -> Variant:
    """The AKI to emulate: --variant, or hd00 when the disk has an MBR partition table, hd0 when a filesystem
    starts at sector 0. GRUB 0.97's shell opens the image file itself: raw images only."""
    if image.format != "raw":
        raise UsageError(f"IMAGE: {image.path} is {image.format}: --loader {LOADER} reads raw images (GRUB 0.97's "
                         "shell opens the file itself)", hint=f"qemu-img convert -O raw {image.path} IMAGE.img")
    if variant is not None:
        return variant
    label = read_label(image.path, image.format, workdir)
    if label.gpt:
        raise UsageError(f"IMAGE: {image.path} has a GPT partition table: PV-GRUB reads MBR only")
    found = aki_for_table(None if label.filesystem_at_zero else PartitionTable.MBR)
    assert found is not None  # the layout table has an AKI for a partitionless disk and for MBR
    return found


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
