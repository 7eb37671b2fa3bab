"""A PV boot's preparation, shared by QEMU (harness.py) and Xen (xen.py): the disk PV-GRUB reads, the probe
and console edits on the mounted overlay, the files the loader reads, and GRUB 0.97's plan
(--loader pvgrub097) with the report when no entry would boot."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from imagekit.boot import guest, probe
from imagekit.boot.console import EXPLAIN
from imagekit.boot.direct import prepare_direct
from imagekit.boot.options import BootOptions
from imagekit.boot.overlay import ImageFile
from imagekit.boot.prepared import Prepared
from imagekit.boot.pvgrub import MENU_LST
from imagekit.boot.pvgrub097 import LOADER as PVGRUB097
from imagekit.boot.pvgrub097 import Grub097Plan, aki_version_for, failure, plan, prepare, summary, variant_of
from imagekit.boot.report import BootReport
from imagekit.util.accel import Accel
from imagekit.util.errors import UsageError
from imagekit.util.progress import Progress


def prepare_overlay(g: Any, image: ImageFile, opts: BootOptions, loader: str, workdir: Path,
                    grub097: Grub097Plan | None = None) -> Prepared:
    """Everything the overlay gets, in one libguestfs session."""
    disk = guest.find_disk(g, image.path.name, opts.variant)
    check_pv_disk(disk, image)
    guest.mount(g, disk)
    return boot_files(g, edit_pv(g, disk, loader), image, loader, workdir, grub097)


def check_pv_disk(disk: guest.Disk, image: ImageFile) -> None:
    if disk.variant is None:
        raise UsageError(f"IMAGE: {image.path} has a GPT partition table: PV-GRUB reads MBR only; "
                         "it is not a PV-GRUB (hd0/hd00) image")


def edit_pv(g: Any, disk: guest.Disk, loader: str) -> Prepared:
    """The edits on the mounted tree (libguestfs or extfs.ExtTree): the probe, and for --loader pvgrub
    console=ttyS0 first in menu.lst. Nothing here depends on the boot's workdir (fastprep caches it)."""
    menu_text = guest.read_menu_lst(g, disk)
    notes: list[str] = []
    kind = probe.detect_kind(g) if disk.root_device else probe.ProbeKind.NONE
    added = probe.install_probe(g, kind)
    if kind is probe.ProbeKind.NONE:
        notes.append("no probe could be installed (no root filesystem with /sbin/init and /bin/sh)")
    if loader == "pvgrub" and menu_text is not None:
        assert disk.variant is not None
        text, changed = probe.add_serial_console(menu_text)
        if changed:
            g.write(disk.boot_path(MENU_LST), text.encode())
            added.append(f"{disk.variant.legacy_root}{MENU_LST}: {probe.SERIAL_ARG} put first on {changed} "
                         "kernel line(s) (EC2's hvc0 does not exist under QEMU)")
    if disk.separate_boot:
        notes.append(f"separate /boot: PV-GRUB reads {disk.boot_device}, the root filesystem is "
                     f"{disk.root_device}")
    return Prepared(disk, menu_text, kind, tuple(added), None, tuple(notes))


def boot_files(g: Any, prepared: Prepared, image: ImageFile, loader: str, workdir: Path,
               grub097: Grub097Plan | None = None) -> Prepared:
    """What this boot reads (never writes): the direct loader's kernel and initrd, GRUB 0.97's files."""
    disk = prepared.disk
    line = f"kernel command line: {probe.SERIAL_ARG} first (QEMU's serial port)"
    if grub097 is not None:
        return replace(prepared, grub097=prepare(grub097, disk, workdir), added=(*prepared.added, line))
    if loader == "direct":
        if prepared.menu_text is None:
            assert disk.variant is not None
            raise UsageError(f"IMAGE: {image.path} has no {disk.variant.legacy_root}{MENU_LST}")
        direct = prepare_direct(g, disk, prepared.menu_text, workdir)
        return replace(prepared, direct=direct, added=(*prepared.added, line))
    return prepared


def plan_pvgrub097(opts: BootOptions, image: ImageFile, workdir: Path,
                   progress: Progress) -> tuple[BootOptions, Grub097Plan, float]:
    """--loader pvgrub097's checks alone: GRUB 0.97 runs the image's menu, Xen's loader judges the kernel."""
    with ThreadPoolExecutor(1) as pool:
        opts, planning = start_pvgrub097(opts, image, workdir, progress, pool)
        result, seconds = planning.result()
    return opts, result, seconds


def start_pvgrub097(opts: BootOptions, image: ImageFile, workdir: Path, progress: Progress,
                    pool: ThreadPoolExecutor) -> tuple[BootOptions, Future[tuple[Grub097Plan, float]]]:
    """The options checked here (raw image, variant, --aki-version: exit 2 before anything starts), then GRUB 0.97's
    run of the menu on `pool` (its shell is a subprocess: the caller's appliance launch goes on beside it)."""
    variant = variant_of(image, opts.variant, workdir)
    version = aki_version_for(variant, opts.aki_version)
    progress.info(f"pvgrub097: GRUB 0.97 reads menu.lst ({variant} AKI, PV-GRUB {version})")

    def timed() -> tuple[Grub097Plan, float]:
        start = time.monotonic()
        result = plan(image.path, variant, version, workdir / "grub097")
        return result, round(time.monotonic() - start, 2)

    return replace(opts, variant=variant), pool.submit(timed)


def refused_report(opts: BootOptions, image: ImageFile, accel: Accel, grub097: Grub097Plan,
                   seconds: float) -> BootReport:
    """No entry boots on PV-GRUB (GRUB 0.97's errors, or Xen's loader refusing the kernel): QEMU never starts."""
    reason, detail = failure(grub097)
    return BootReport(
        image=str(image.path), loader=PVGRUB097, hypervisor=opts.hypervisor, variant=str(opts.variant),
        accel=accel.name, accel_reason=accel.reason, booted=False, reason=str(reason), explanation=EXPLAIN[reason],
        detail=detail, context=[], entry=None, kernel_version=None, seconds_to_first_kernel_line=None,
        seconds_to_sentinel=None, seconds_qemu=0.0, seconds_prepare=round(seconds, 2), failed_units=[],
        grub_errors=[str(t.error) for t in grub097.tried if t.error], system_state=None, login_prompt=False,
        probe="none", serial_log="", notes=[f"decided before {'xl create' if opts.hypervisor == 'xen' else 'QEMU'} "
                                            "started: no entry PV-GRUB would boot"],
        pvgrub097=summary(grub097, seconds),
    )
