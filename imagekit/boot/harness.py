"""`imagekit boot`: prepare an overlay, boot it with the chosen loader, read the console, report.

    boot_image(BootOptions(image=Path("out/debian-12-hd0.img")), progress) -> BootReport
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from imagekit.boot import guest, probe
from imagekit.boot.attach import (
    AttachOptions,
    attach_disks,
    check_attach,
    extend_argv,
    instance_fields,
    prepare_instance,
    with_mounts_probe,
)
from imagekit.boot.console import EXPLAIN, Reason, Verdict, Watcher, context
from imagekit.boot.direct import DirectBoot, prepare_direct
from imagekit.boot.fastprep import Job, prepare_disk, pv_layout
from imagekit.boot.metadata import name_nic_eth0
from imagekit.boot.overlay import ImageFile, image_file
from imagekit.boot.pvgrub import MENU_LST, Variant, build_core
from imagekit.boot.pvgrub097 import LOADER as PVGRUB097
from imagekit.boot.pvgrub097 import Grub097Boot, Grub097Plan
from imagekit.boot.qemu import Machine, Outcome, qemu_argv, run_qemu
from imagekit.boot.report import BootReport, EntryBooted
from imagekit.bootloader.menulst import MenuLstError, parse_menu_lst
from imagekit.manifest import Manifest
from imagekit.manifest import read_manifest as read_validated
from imagekit.util.accel import Accel, detect
from imagekit.util.cache import cache_dir
from imagekit.util.errors import UsageError
from imagekit.util.progress import Progress

LOADERS = ("pvgrub", "direct", PVGRUB097)
HYPERVISORS = ("qemu", "xen")


@dataclass(frozen=True)
class BootOptions:
    image: Path
    loader: str | None = None  # None: pvgrub097 (GRUB 0.97 + Xen's loader rules) for hd0/hd00 images
    hypervisor: str = "qemu"
    variant: Variant | None = None  # None: from the partition table
    accel: str | None = None
    memory_mb: int = 1024
    cpus: int = 2
    timeout: float = 300.0
    silence: float = 120.0  # stop when the console has been quiet this long
    serial_log: Path | None = None  # default: <image>.serial.log beside the image
    attach: AttachOptions = field(default_factory=AttachOptions)  # instance store, data volumes, user-data (attach.py)
    firmware: str | None = None  # HVM: bios, uefi or both (default: from the manifest or the disk)
    disk_interface: str | None = None  # HVM: nvme (default), virtio or ide; PV images boot with virtio
    aki_version: str | None = None  # --loader pvgrub097: the PV-GRUB version (default: what `imagekit aki` registers)
    fast_prepare: bool = True  # False: libguestfs even where debugfs could edit a copy (scripts/bench-boot's old path)


@dataclass(frozen=True)
class Prepared:
    disk: guest.Disk
    menu_text: str | None
    kind: probe.ProbeKind
    added: tuple[str, ...]
    direct: DirectBoot | None
    notes: tuple[str, ...]
    grub_cfg: str | None = None  # HVM: GRUB 2's config in the mounted overlay (the NIC's net.ifnames=0 goes there)
    grub097: Grub097Boot | None = None  # --loader pvgrub097: the bytes GRUB 0.97 read, as Xen would load them
    prepared_with: str = "libguestfs"  # or "debugfs", "debugfs-cached" (imagekit/boot/fastprep.py)


def read_manifest(image: Path) -> Manifest | None:
    """The build manifest beside the image (`<image>.manifest.json`), if there is one; one that does not
    validate is a UsageError naming it and the key (imagekit.manifest.read_manifest)."""
    return read_validated(image)


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
        from imagekit.boot.pvgrub097 import prepare

        return replace(prepared, grub097=prepare(grub097, disk, workdir), added=(*prepared.added, line))
    if loader == "direct":
        if prepared.menu_text is None:
            assert disk.variant is not None
            raise UsageError(f"IMAGE: {image.path} has no {disk.variant.legacy_root}{MENU_LST}")
        direct = prepare_direct(g, disk, prepared.menu_text, workdir)
        return replace(prepared, direct=direct, added=(*prepared.added, line))
    return prepared


CMDLINE_LOADERS = ("direct", PVGRUB097)  # QEMU gets the kernel command line (-append), not from the disk


class KernelRefused(Exception):
    """GRUB 0.97's plan ends in a kernel Xen's loader refuses: the boot stops before QEMU."""


def pv_job(image: ImageFile, opts: BootOptions, loader: str, workdir: Path,
           grub097: Callable[[], Grub097Plan | None], manifest: Manifest | None) -> Job:
    """A PV boot's preparation for fastprep: edits (cached with the copy), then what the boot reads.
    `grub097()` is GRUB 0.97's plan (--loader pvgrub097, running beside this), joined only where it is read."""
    network = opts.attach.user_data is not None

    def edit(g: Any, disk: guest.Disk) -> Prepared:
        edits = with_mounts_probe(g, edit_pv(g, disk, loader), manifest)
        return edits if loader in CMDLINE_LOADERS else name_nic_eth0(g, edits, network)

    def finish(g: Any, edits: Prepared) -> Prepared:
        prepared = boot_files(g, edits, image, loader, workdir, grub097())
        return name_nic_eth0(g, prepared, network) if loader in CMDLINE_LOADERS else prepared

    def slow(g: Any) -> Prepared:
        return prepare_instance(g, prepare_overlay(g, image, opts, loader, workdir, grub097()), manifest,
                                opts.attach)

    params = {"boot": "pv", "menu_edit": loader == "pvgrub", "variant": str(opts.variant),
              "network": network and loader not in CMDLINE_LOADERS,
              "manifest": manifest.document() if manifest else None}
    return Job(params, lambda i: pv_layout(i, opts.variant), edit, finish, slow)


def _entry(verdict: Verdict, prepared: Prepared) -> EntryBooted | None:
    if prepared.direct is not None:
        d = prepared.direct
        return EntryBooted(d.entry.title, d.index, d.fallback)
    if prepared.grub097 is not None and (booted := prepared.grub097.plan.booted) is not None:
        return EntryBooted(booted.entry.title, booted.entry.index, prepared.grub097.plan.fell_back)
    if verdict.entry_title is None:
        return None
    index = None
    try:
        titles = [e.title for e in parse_menu_lst(prepared.menu_text or "").entries]
        index = titles.index(verdict.entry_title) if verdict.entry_title in titles else None
    except MenuLstError:
        pass
    return EntryBooted(verdict.entry_title, index, verdict.fallback)


def diagnose_entries(menu_text: str | None, disk: guest.Disk) -> list[str]:
    """Why GRUB could not load entries, where its own message ("couldn't load file") does not say."""
    try:
        entries = parse_menu_lst(menu_text or "").entries
    except MenuLstError as exc:
        return [f"menu.lst: {exc}"]
    found = []
    for e in entries:
        if e.root is None:
            continue
        if e.root_partition is None and disk.partitioned:
            found.append(f"entry {e.title!r}: root {e.root} is the whole disk, but the disk is partitioned: "
                         "there is no filesystem there (use (hd0,0))")
        elif e.root_partition is not None and not disk.partitioned:
            found.append(f"entry {e.title!r}: root {e.root} names a partition, but the disk has no partition "
                         "table (use (hd0))")
    return found


def default_log_path(image: Path) -> Path:
    beside = image.parent / f"{image.name}.serial.log"
    if os.access(beside.parent, os.W_OK):
        return beside
    return cache_dir() / "boot-logs" / f"{image.name}.serial.log"


def save_log(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".tmp")
    shutil.copyfile(source, partial)
    partial.replace(target)
    return target


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
    if report := boot_if_hvm(opts, image, progress):
        return report
    if opts.disk_interface not in (None, "virtio"):
        raise UsageError(f"--disk-interface {opts.disk_interface}: PV-GRUB images boot from virtio "
                         "(nvme and ide are for HVM images)")
    manifest = read_manifest(image.path)
    if opts.hypervisor == "xen":
        from imagekit.boot.xen import boot_xen

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

        job = pv_job(image, opts, loader, workdir, joined, manifest)
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
            log = workdir / "serial.log"
            argv = extend_argv(qemu_command(prepared, machine, ov, log), attached)
            with progress.stage("boot", f"{loader} under QEMU ({accel.name})") as booting:
                watcher = Watcher(on_phase=booting.phase)
                outcome = run_qemu(argv, log, watcher, timeout=opts.timeout, silence=opts.silence)
            saved = save_log(log, opts.serial_log or default_log_path(image.path))
            extra = instance_fields(attached, watcher)
    report = build_report(opts, image, loader, accel, prepared, watcher, outcome, saved, seconds_prepare)
    if grub097 is not None:
        extra.update(grub097_fields(report, grub097, seconds_grub))
    return replace(report, **extra)


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
    from imagekit.boot.pvgrub097 import aki_version_for, plan, variant_of

    variant = variant_of(image, opts.variant, workdir)
    version = aki_version_for(variant, opts.aki_version)
    progress.info(f"pvgrub097: GRUB 0.97 reads menu.lst ({variant} AKI, PV-GRUB {version})")

    def timed() -> tuple[Grub097Plan, float]:
        start = time.monotonic()
        result = plan(image.path, variant, version, workdir / "grub097")
        return result, round(time.monotonic() - start, 2)

    return replace(opts, variant=variant), pool.submit(timed)


def grub097_fields(report: BootReport, grub097: Grub097Plan, seconds: float) -> dict[str, Any]:
    """The report's additions for --loader pvgrub097: which entry booted and why, the kernel Xen starts."""
    from imagekit.boot.pvgrub097 import summary

    return {"pvgrub097": summary(grub097, seconds), "notes": [grub097.why(), *report.notes]}  # GRUB 0.97 ran
    # beside the prepare stage, whose seconds include any wait for it


def refused_report(opts: BootOptions, image: ImageFile, accel: Accel, grub097: Grub097Plan,
                   seconds: float) -> BootReport:
    """No entry boots on PV-GRUB (GRUB 0.97's errors, or Xen's loader refusing the kernel): QEMU never starts."""
    from imagekit.boot.pvgrub097 import failure, summary

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


def boot_if_hvm(opts: BootOptions, image: ImageFile, progress: Progress) -> BootReport | None:
    """An HVM image (by --firmware, its manifest or its disk) boots through firmware: imagekit/boot/hvm_boot.py."""
    from imagekit.boot.disklabel import read_label
    from imagekit.boot.firmware import choose
    from imagekit.boot.hvm_boot import boot_hvm

    with tempfile.TemporaryDirectory(prefix="imagekit-boot-") as tmp:
        label = read_label(image, Path(tmp))
        firmwares = choose(opts.firmware, read_manifest(image.path), label)
        if firmwares is None:
            return None
        return boot_hvm(opts, image, firmwares, label, Path(tmp), progress)


def build_report(opts: BootOptions, image: ImageFile, loader: str, accel: Accel, prepared: Prepared,
                 watcher: Watcher, outcome: Outcome, log: Path, seconds_prepare: float) -> BootReport:
    verdict = watcher.verdict(timed_out=outcome.timed_out, silent_for=outcome.silent_for)
    notes = list(prepared.notes)
    detail = verdict.detail
    if verdict.reason is Reason.NO_ENTRY_LOADED:
        detail = "; ".join([detail, *diagnose_entries(prepared.menu_text, prepared.disk)])
    if loader == "pvgrub":
        notes.append("GRUB's menu countdown was skipped (timeout 0 after reading menu.lst): on EC2 nobody "
                     "presses a key, so it only costs time")
    if accel.name == "tcg":
        notes.append(f"TCG (no KVM): {accel.reason}")
    if verdict.reason is Reason.ROOT_NOT_FOUND and loader == "pvgrub":
        notes.append("if root= names an EC2 device (/dev/xvda1, /dev/sda1), it cannot exist under QEMU: "
                     "use LABEL= or UUID=, or --loader direct, which maps it")
    return BootReport(
        image=str(image.path), loader=loader, hypervisor=opts.hypervisor,
        variant=str(prepared.disk.variant) if prepared.disk.variant else None,
        accel=accel.name, accel_reason=accel.reason, booted=verdict.booted, reason=str(verdict.reason),
        explanation=EXPLAIN[verdict.reason], detail=detail,
        context=context(watcher.lines, verdict.line_no), entry=_entry(verdict, prepared),
        kernel_version=verdict.kernel_version,
        seconds_to_first_kernel_line=_round(verdict.t_first_kernel_line),
        seconds_to_sentinel=_round(verdict.t_sentinel), seconds_qemu=round(outcome.seconds, 2),
        seconds_prepare=round(seconds_prepare, 2), prepared_with=prepared.prepared_with,
        failed_units=list(verdict.failed_units),
        grub_errors=list(verdict.grub_errors),
        system_state=verdict.system_state, login_prompt=verdict.login_prompt, probe=str(prepared.kind),
        serial_log=str(log), added=list(prepared.added),
        mappings=list(prepared.direct.mappings) if prepared.direct else
        list(prepared.grub097.mappings) if prepared.grub097 else [], notes=notes,
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
