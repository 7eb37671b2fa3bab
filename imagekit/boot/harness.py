"""`imagekit boot`: prepare an overlay, boot it with the chosen loader, read the console, report.

    boot_image(BootOptions(image=Path("out/debian-12-hd0.img")), progress) -> BootReport
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

from imagekit.boot import guest
from imagekit.boot.attach import (
    attach_disks,
    check_attach,
    extend_argv,
    instance_fields,
    prepare_instance,
    volume_waits,
    with_mounts_probe,
    with_volume_waits,
)
from imagekit.boot.console import Watcher
from imagekit.boot.fastprep import Job, prepare_disk, pv_layout
from imagekit.boot.firmware import choose
from imagekit.boot.hvm_boot import boot_hvm
from imagekit.boot.metadata import name_nic_eth0
from imagekit.boot.options import BootOptions, BootTarget
from imagekit.boot.overlay import ImageFile, image_file
from imagekit.boot.prepared import Prepared
from imagekit.boot.pv import boot_files, edit_pv, prepare_overlay, refused_report, start_pvgrub097
from imagekit.boot.pvgrub import build_core
from imagekit.boot.pvgrub097 import LOADER as PVGRUB097
from imagekit.boot.pvgrub097 import Grub097Plan, summary
from imagekit.boot.qemu import Machine, qemu_argv, run_qemu
from imagekit.boot.report import BootReport
from imagekit.boot.results import BootRun, build_report, default_log_path, save_log
from imagekit.boot.xen import boot_xen
from imagekit.image.disklabel import read_label
from imagekit.manifest import Manifest, read_manifest
from imagekit.util.accel import Accel, detect
from imagekit.util.errors import UsageError
from imagekit.util.progress import Progress

LOADERS = ("pvgrub", "direct", PVGRUB097)
HYPERVISORS = ("qemu", "xen")


def check_options(opts: BootOptions) -> None:
    if opts.loader is not None and opts.loader not in LOADERS:
        raise UsageError(f"--loader: {opts.loader!r} is not one of {', '.join(LOADERS)}")
    if opts.hypervisor not in HYPERVISORS:
        raise UsageError(f"--hypervisor: {opts.hypervisor!r} is not one of {', '.join(HYPERVISORS)}")
    if opts.memory_mb < 128:
        raise UsageError(f"--memory: {opts.memory_mb} MiB is too little to boot Linux (128 at least)")
    if not 1 <= opts.cpus <= 64:
        raise UsageError(f"--cpus: {opts.cpus} is not between 1 and 64")
    if opts.timeout <= 0 or opts.silence <= 0:
        raise UsageError("--timeout: must be a positive number of seconds")


CMDLINE_LOADERS = ("direct", PVGRUB097)  # QEMU gets the kernel command line (-append), not from the disk


class KernelRefused(Exception):
    """GRUB 0.97's plan ends in a kernel Xen's loader refuses: the boot stops before QEMU."""


def pv_job(image: ImageFile, opts: BootOptions, loader: str, workdir: Path,  # noqa: PLR0913 (the boot's inputs)
           grub097: Callable[[], Grub097Plan | None], manifest: Manifest | None, waits: tuple[str, ...] = ()) -> Job:
    """A PV boot's preparation for fastprep: edits (cached with the copy), then what the boot reads.
    `grub097()` is GRUB 0.97's plan (--loader pvgrub097, running beside this), joined only where it is read;
    `waits`: the attached volumes whose device timeout is stretched (attach.volume_waits)."""
    network = opts.attach.user_data is not None

    def edit(g: Any, disk: guest.Disk) -> Prepared:
        edits = with_volume_waits(g, with_mounts_probe(g, edit_pv(g, disk, loader), manifest), waits)
        return edits if loader in CMDLINE_LOADERS else name_nic_eth0(g, edits, network)

    def finish(g: Any, edits: Prepared) -> Prepared:
        prepared = boot_files(g, edits, image, loader, workdir, grub097())
        return name_nic_eth0(g, prepared, network) if loader in CMDLINE_LOADERS else prepared

    def slow(g: Any) -> Prepared:
        return prepare_instance(g, prepare_overlay(g, image, opts, loader, workdir, grub097()), manifest,
                                opts.attach, waits)

    params = {"boot": "pv", "menu_edit": loader == "pvgrub", "variant": str(opts.variant),
              "network": network and loader not in CMDLINE_LOADERS,
              "manifest": manifest.document() if manifest else None, "waits": list(waits)}
    return Job(params, lambda i: pv_layout(i, opts.variant), edit, finish, slow)


# Under TCG on a busy host the kernel's IO-APIC timer check (check_timer) can see no tick in its window and
# panic: "IO-APIC + timer doesn't work!" (CI, 2026-12-03, load ~7.5 on 2 cores). The emulated timer is late, not
# missing, and a PV guest on EC2 has no IO-APIC at all (Xen's event channels and pvclock): the check tests QEMU's
# i440FX, not the image. Only the loaders that hand QEMU the command line (-append) get it; KVM boots nothing.
TCG_KERNEL_ARG = "no_timer_check"
TCG_KERNEL_ARG_NOTE = (f"kernel command line: {TCG_KERNEL_ARG} (TCG: the kernel's IO-APIC timer check can time out "
                       "under emulation; EC2's PV guests have no IO-APIC)")


def with_tcg_kernel_arg(prepared: Prepared, accel: Accel) -> Prepared:
    """Under TCG, the command line QEMU is given (direct, pvgrub097) gets TCG_KERNEL_ARG, and the report says so."""
    if accel.name != "tcg":
        return prepared
    if prepared.direct is not None:
        d = prepared.direct
        prepared = replace(prepared, direct=replace(d, append=f"{d.append} {TCG_KERNEL_ARG}"))
    elif prepared.grub097 is not None:
        b = prepared.grub097
        prepared = replace(prepared, grub097=replace(b, append=f"{b.append} {TCG_KERNEL_ARG}"))
    else:
        return prepared  # GRUB 2 reads the command line from menu.lst
    return replace(prepared, added=(*prepared.added, TCG_KERNEL_ARG_NOTE))


def qemu_command(prepared: Prepared, machine: Machine, disk: Path, log: Path) -> list[str]:
    if prepared.direct is not None:
        d = prepared.direct
        return qemu_argv(machine, disk=disk, serial_log=log, kernel=d.kernel, initrd=d.initrd, append=d.append)
    if prepared.grub097 is not None:
        b = prepared.grub097
        return qemu_argv(machine, disk=disk, serial_log=log, kernel=b.kernel, initrd=b.initrd, append=b.append)
    assert prepared.disk.variant is not None
    return qemu_argv(machine, disk=disk, serial_log=log, kernel=build_core(prepared.disk.variant))


def boot_image(opts: BootOptions, progress: Progress | None = None) -> BootReport:
    """Boot-test one image; the report says whether it reached userspace and, if not, why."""
    progress = progress or Progress()
    check_options(opts)
    check_attach(opts.attach, opts.hypervisor)
    image = image_file(opts.image)
    manifest = read_manifest(image.path)  # once: the loaders are handed it
    if report := boot_if_hvm(opts, image, manifest, progress):
        return report
    if opts.disk_interface not in (None, "virtio"):
        raise UsageError(f"--disk-interface {opts.disk_interface}: PV-GRUB images boot from virtio "
                         "(nvme and ide are for HVM images)")
    if opts.hypervisor == "xen":
        return boot_xen(opts, image, progress)
    loader = opts.loader or PVGRUB097
    with progress.stage("accel"):
        accel = detect(opts.accel)
    machine = Machine(opts.memory_mb, opts.cpus, accel)
    with tempfile.TemporaryDirectory(prefix="imagekit-boot-") as tmp, ThreadPoolExecutor(1) as pool:
        workdir = Path(tmp)
        grub097, seconds_grub, planning = None, 0.0, None
        if loader == PVGRUB097:  # GRUB 0.97 reads the image while the appliance launches on the overlay
            opts, planning = start_pvgrub097(opts, image, workdir, progress, pool)
        attached = attach_disks(image.path, manifest, opts.attach, workdir)
        refused: list[tuple[Grub097Plan, float]] = []

        def joined() -> Grub097Plan | None:
            """GRUB 0.97's plan, waited for when the preparation needs it; a refused kernel stops here."""
            if planning is None:
                return None
            plan, seconds = planning.result()
            if plan.xen is None:
                refused.append((plan, seconds))
                raise KernelRefused
            return plan

        job = pv_job(image, opts, loader, workdir, joined, manifest, volume_waits(attached, accel))
        with ExitStack() as stack:
            with progress.stage("prepare", "probe, console" + (", GRUB 0.97 beside it" if planning else "")) \
                    as stage:
                try:
                    ov, prepared = stack.enter_context(prepare_disk(image, workdir, job, accel,
                                                                    fast=opts.fast_prepare))
                except KernelRefused:
                    return refused_report(opts, image, accel, *refused[0])
                if planning is not None:
                    grub097, seconds_grub = planning.result()
                    if grub097.xen is None:
                        return refused_report(opts, image, accel, grub097, seconds_grub)
            seconds_prepare = stage.seconds
            prepared = with_tcg_kernel_arg(prepared, accel)
            log = workdir / "serial.log"
            argv = extend_argv(qemu_command(prepared, machine, ov, log), attached)
            with progress.stage("boot", f"{loader} under QEMU ({accel.name})") as booting:
                watcher = Watcher(on_phase=booting.phase)
                outcome = run_qemu(argv, log, watcher, timeout=opts.timeout, silence=opts.silence)
            saved = save_log(log, opts.serial_log or default_log_path(image.path))
            extra = instance_fields(attached, watcher)
    report = build_report(opts, image, loader, accel, prepared, BootRun(watcher, outcome, saved, seconds_prepare))
    if grub097 is not None:
        extra.update(grub097_fields(report, grub097, seconds_grub))
    return replace(report, **extra)


def grub097_fields(report: BootReport, grub097: Grub097Plan, seconds: float) -> dict[str, Any]:
    """The report's additions for --loader pvgrub097: which entry booted and why, the kernel Xen starts."""
    return {"pvgrub097": summary(grub097, seconds), "notes": [grub097.why(), *report.notes]}  # GRUB 0.97 ran
    # beside the prepare stage, whose seconds include any wait for it


def boot_if_hvm(opts: BootOptions, image: ImageFile, manifest: Manifest | None, progress: Progress
                ) -> BootReport | None:
    """An HVM image (by --firmware, its manifest or its disk) boots through firmware: imagekit/boot/hvm_boot.py."""
    with tempfile.TemporaryDirectory(prefix="imagekit-boot-") as tmp:
        label = read_label(image.path, image.format, Path(tmp))
        firmwares = choose(opts.firmware, manifest, label)
        if firmwares is None:
            return None
        return boot_hvm(opts, BootTarget(image, manifest, label), firmwares, Path(tmp), progress)


