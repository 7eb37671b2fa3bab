"""`imagekit boot` for HVM images: the image's own GRUB 2 started by real firmware (SeaBIOS, OVMF).

    boot_hvm(opts, target, (Firmware.BIOS, Firmware.UEFI), workdir, progress) -> BootReport

One overlay is prepared (probe, mounts probe, console=ttyS0, net.ifnames=0 with user-data); each
firmware boots a throw-away qcow2 layer on it, so a hybrid image is booted both ways from the same
starting point. The disk is attached as NVMe, as on Nitro (`--disk-interface virtio|ide` for others),
on QEMU's `pc` machine: Nitro's x86 instances show an i440FX host bridge too, and OVMF without Secure
Boot needs nothing q35 has. The NIC has no option ROM and only the root disk has a boot index, so
neither firmware tries a network boot nor another disk. The instance store, data volumes, metadata
service and NoCloud seed are those of a PV boot (attach.py), made afresh for each firmware's boot; on
NVMe they are NVMe controllers too (nvme1n1, nvme2n1, ...), as EBS volumes and instance stores on Nitro.
The mounts probe (mounts.py) says whether fstab's entries, the ESP at /boot/efi among them, came up.
The report is that of the first boot that failed (else the first degraded one, else the last), with one
result per firmware.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from imagekit.boot.attach import (
    Attached,
    attach_disks,
    drive_args,
    instance_fields,
    nic_args,
    prepare_instance,
    volume_waits,
)
from imagekit.boot.console import Watcher
from imagekit.boot.fastprep import Job, hvm_layout, prepare_disk
from imagekit.boot.firmware import Firmware, describe, firmware_argv
from imagekit.boot.guest import Disk
from imagekit.boot.hvm import edit_hvm, prepare_hvm
from imagekit.boot.options import BootOptions, BootTarget
from imagekit.boot.overlay import ImageFile, layer, overlay
from imagekit.boot.prepared import Prepared
from imagekit.boot.probe import ProbeKind
from imagekit.boot.qemu import QEMU, Machine, run_qemu
from imagekit.boot.report import BootReport, FirmwareResult
from imagekit.boot.results import BootRun, build_report, default_log_path, save_log
from imagekit.manifest import Manifest
from imagekit.recipe.arch import ARCHES, Arch, ArchSpec, spec_named
from imagekit.util.accel import Accel, detect
from imagekit.util.errors import UsageError
from imagekit.util.progress import Progress

INTERFACES = ("nvme", "virtio", "ide")
NIC = "virtio-net-pci,romfile="  # no option ROM: no iPXE, so neither firmware offers a network boot
LOADER = "firmware"  # the report's `loader`: the image's own bootloader, started by the firmware


def check_hvm_options(opts: BootOptions) -> str:
    """The disk interface to use; UsageError for options that only mean something to PV-GRUB images."""
    if opts.loader is not None:
        raise UsageError(f"--loader {opts.loader}: an HVM image boots through firmware and its own GRUB; "
                         "--loader is for PV-GRUB images")
    if opts.variant is not None:
        raise UsageError(f"--variant {opts.variant}: PV-GRUB AKI variants do not apply to an HVM image")
    if opts.hypervisor != "qemu":
        raise UsageError(f"--hypervisor {opts.hypervisor}: HVM images are booted under QEMU only")
    interface = opts.disk_interface or "nvme"
    if interface not in INTERFACES:
        raise UsageError(f"--disk-interface: {interface!r} is not one of {', '.join(INTERFACES)}")
    return interface


def disk_argv(interface: str, disk: Path) -> list[str]:
    """The overlay as the boot disk: NVMe (as on Nitro), virtio-blk or IDE; the only boot device."""
    drive = f"if=none,id=root,file={disk},format=qcow2,cache=unsafe"
    device = {"nvme": "nvme,drive=root,serial=imagekit-root", "virtio": "virtio-blk-pci,drive=root",
              "ide": "ide-hd,drive=root,bus=ide.0"}[interface]
    return ["-drive", drive, "-device", f"{device},bootindex=1"]


def hvm_argv(machine: Machine, *, firmware: list[str], interface: str, disk: Path, serial_log: Path,  # noqa: PLR0913 (QEMU's own parts, each a keyword)
             attached: Attached | None = None, spec: ArchSpec = ARCHES[Arch.X86_64]) -> list[str]:
    """QEMU for an HVM boot: firmware, one boot disk, then the instance's other disks (not bootable) in EC2's
    order, serial console to a file, user networking without PXE (with user-data: the metadata service's).
    `spec`: the image's architecture (arm64: qemu-system-aarch64 -M virt, always TCG on an x86_64 host)."""
    attached = attached or Attached()
    accel = machine.accel.qemu_args()
    if spec.arch is not Arch.X86_64:
        accel = ["-accel", "tcg,thread=multi", *(["-cpu", spec.cpu] if spec.cpu else [])]
    qemu = QEMU if spec.arch is Arch.X86_64 else spec.qemu
    return [qemu, *accel, "-machine", spec.machine, "-m", str(machine.memory_mb),
            "-smp", str(machine.cpus), "-nodefaults", "-display", "none", "-no-reboot", "-boot", "strict=on",
            *firmware, *disk_argv(interface, disk), *drive_args(attached.disks),
            "-chardev", f"file,id=console,path={serial_log}", "-serial", "chardev:console",
            *nic_args(attached, NIC)]


def log_path(opts: BootOptions, image: ImageFile, firmware: Firmware, several: bool) -> Path:
    """Where one boot's console is saved: --serial-log (or IMAGE.serial.log), `.bios`/`.uefi` added for two."""
    path = opts.serial_log or default_log_path(image.path)
    return path.with_name(f"{path.stem}.{firmware}{path.suffix}") if several else path


@dataclass(frozen=True)
class Run:
    """What every firmware's boot of one image shares: the prepared overlay and the options."""

    opts: BootOptions
    image: ImageFile
    accel: Accel
    interface: str
    overlay: Path
    prepared: Prepared
    seconds_prepare: float
    several: bool  # more than one firmware: the logs get .bios / .uefi
    workdir: Path
    spec: ArchSpec  # the image's architecture (the manifest's; x86_64 without one)


def hvm_job(opts: BootOptions, manifest: Manifest | None, waits: tuple[str, ...] = ()) -> Job:
    """An HVM boot's preparation for fastprep: every edit is in the filesystems (cached with the copy).
    `waits`: the attached volumes whose device timeout is stretched (attach.volume_waits)."""

    console = spec_named(manifest.arch if manifest else None).qemu_console  # QEMU's serial port: ttyS0, ttyAMA0

    def edit(g: Any, disk: Disk) -> Prepared:  # g: the copy's extfs.ExtTree, "mounted" as the disk says
        return prepare_instance(g, edit_hvm(g, disk, console), manifest, opts.attach, waits)

    def slow(g: Any) -> Prepared:
        return prepare_instance(g, prepare_hvm(g, console), manifest, opts.attach, waits)

    params = {"boot": "hvm", "network": opts.attach.user_data is not None,
              "manifest": manifest.document() if manifest else None, "waits": list(waits)}
    return Job(params, hvm_layout, edit, lambda g, edits: edits, slow)


@contextmanager
def prepare(target: BootTarget, workdir: Path, opts: BootOptions, accel: Accel,
            waits: tuple[str, ...] = ()) -> Iterator[tuple[Path, Prepared]]:
    """The boot disk (a qcow2 overlay) with its probes and console; nothing is added (no libguestfs, no copy)
    to a disk with no Linux filesystem at all. `waits`: as hvm_job's."""
    image, manifest, label = target.image, target.manifest, target.label
    if not label.may_hold_root:
        with overlay(image, workdir) as ov:
            yield ov, Prepared(Disk(None, "", None, False), None, ProbeKind.NONE, (), None,
                               ("no Linux partition on the disk: nothing added, the disk is booted as it is",))
        return
    with prepare_disk(image, workdir, hvm_job(opts, manifest, waits), accel, fast=opts.fast_prepare) as done:
        yield done


def attach_each(opts: BootOptions, image: ImageFile, manifest: Manifest | None,
                firmwares: tuple[Firmware, ...], interface: str, workdir: Path) -> dict[Firmware, Attached]:
    """Each firmware's own instance store, volume overlays and metadata service log, in a directory of its
    own: the second boot of a hybrid image does not see what the first wrote."""
    return {f: attach_disks(image.path, manifest, opts.attach, workdir / f"instance.{f}", interface)
            for f in firmwares}


def boot_once(run: Run, firmware: Firmware, attached: Attached, progress: Progress) -> BootReport:
    """One firmware's boot, on a throw-away layer of the prepared overlay, with its own attachments."""
    opts = run.opts
    machine = Machine(opts.memory_mb, opts.cpus, run.accel)
    with layer(run.overlay, run.workdir, f"{firmware}.qcow2") as disk:
        log = run.workdir / f"serial.{firmware}.log"
        argv = hvm_argv(machine, firmware=firmware_argv(firmware, run.workdir, run.spec), interface=run.interface,
                        disk=disk, serial_log=log, attached=attached, spec=run.spec)
        with progress.stage("boot", f"{firmware} firmware, {run.interface} disk, under QEMU ({run.accel.name})") \
                as booting:
            watcher = Watcher(firmware_boot=True, on_phase=booting.phase, uefi_name=run.spec.uefi_name)
            outcome = run_qemu(argv, log, watcher, timeout=opts.timeout, silence=opts.silence)
        saved = save_log(log, log_path(opts, run.image, firmware, run.several))
    report = build_report(opts, run.image, LOADER, run.accel, run.prepared,
                          BootRun(watcher, outcome, saved, run.seconds_prepare))
    t_bootloader = watcher.t_bootloader
    return replace(report, firmware=str(firmware), disk_interface=run.interface,
                   seconds_to_bootloader=None if t_bootloader is None else round(t_bootloader, 2),
                   **instance_fields(attached, watcher))


def result_of(report: BootReport) -> FirmwareResult:
    return FirmwareResult(
        firmware=report.firmware or "", booted=report.booted, reason=report.reason, detail=report.detail,
        seconds_to_bootloader=report.seconds_to_bootloader,
        seconds_to_first_kernel_line=report.seconds_to_first_kernel_line,
        seconds_to_sentinel=report.seconds_to_sentinel, seconds_qemu=report.seconds_qemu,
        serial_log=report.serial_log, degraded=report.degraded)


def combine(reports: list[BootReport], firmwares: tuple[Firmware, ...]) -> BootReport:
    """One report: the first failed boot's (else the first degraded one's, else the last), booted only if
    every firmware booted, degraded if any boot was."""
    chosen = next((r for r in reports if not r.booted), next((r for r in reports if r.degraded), reports[-1]))
    return replace(chosen, firmware=describe(firmwares), firmwares=[result_of(r) for r in reports],
                   degraded=any(r.degraded for r in reports))


def boot_hvm(opts: BootOptions, target: BootTarget, firmwares: tuple[Firmware, ...], workdir: Path,
             progress: Progress) -> BootReport:
    """Boot an HVM image with each firmware in turn, from one prepared overlay."""
    interface = check_hvm_options(opts)
    image, manifest = target.image, target.manifest
    spec = spec_named(manifest.arch if manifest else None)
    if Firmware.BIOS in firmwares and Firmware.BIOS not in spec.firmwares:
        raise UsageError(f"--firmware bios: an {spec.arch.value} image boots UEFI only (firmware {spec.qemu} "
                         f"-M {spec.machine} with {spec.firmware_package})")
    attached = attach_each(opts, image, manifest, firmwares, interface, workdir)
    with progress.stage("accel"):
        # a foreign architecture is emulated whatever the host's KVM can do
        accel = detect(opts.accel) if not spec.foreign else Accel("tcg", f"{spec.arch.value}: emulated (TCG)")
    with ExitStack() as stack:
        with progress.stage("prepare", "probe, grub.cfg console") as stage:
            waits = volume_waits(attached[firmwares[0]], accel)  # every firmware's boot attaches the same volumes
            ov, prepared = stack.enter_context(prepare(target, workdir, opts, accel, waits))
        run = Run(opts, image, accel, interface, ov, prepared, stage.seconds, len(firmwares) > 1, workdir, spec)
        reports = [boot_once(run, f, attached[f], progress) for f in firmwares]
    return combine(reports, firmwares)
