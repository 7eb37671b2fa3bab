"""Booting under a real Xen dom0 with pvgrub2 (`grub-x86_64-xen.bin`), where one is available.

pvgrub2 ignores menu.lst unless its embedded config calls `legacy_configfile`: the image built here
carries the same memdisk config idea as the QEMU loader (minus the serial terminal: the Xen PV
console is GRUB's console). The disk is `xvda`; an hd0 image is attached as the partition device
`xvda1`, as EC2 does. Without a dom0 (`xl info` fails) the command exits 2 and says so.

Without `xl` on PATH that is said at once. Otherwise, before `xl` is run, the same checks as --loader
pvgrub097 (`check_kernel`): a kernel Xen's domain builder on EC2's PV-GRUB would refuse, or an entry GRUB
0.97 cannot load, fails the boot there, before any domain is created.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from imagekit.boot import guest
from imagekit.boot.console import Watcher
from imagekit.boot.options import BootOptions
from imagekit.boot.overlay import ImageFile, overlay
from imagekit.boot.pv import plan_pvgrub097, prepare_overlay, refused_report
from imagekit.boot.pvgrub import MENU_LST, MODULES, Variant, cached_grub
from imagekit.boot.qemu import Machine, run_qemu
from imagekit.boot.report import BootReport
from imagekit.boot.results import BootRun, build_report, save_log
from imagekit.util.accel import Accel, detect
from imagekit.util.errors import CommandFailed, ImagekitError, UsageError
from imagekit.util.progress import Progress
from imagekit.util.run import run

GRUB_XEN_DIR = Path("/usr/lib/grub/x86_64-xen")
XEN_MODULES = (*(m for m in MODULES if m not in ("biosdisk", "linux16", "serial", "terminfo")), "search")


def xen_grub_cfg(variant: Variant) -> str:
    """pvgrub2's config: find menu.lst on the one disk attached, then read it as PV-GRUB would.

    GRUB names Xen disks after their xenstore ids, so the device is found with `search` rather than
    named: the hd0/hd00 difference is in how the disk is attached (see xl_config). This accepts a
    menu.lst on a later partition too, which PV-GRUB 1.03 would not (the QEMU loader is exact).
    """
    return "\n".join([
        "set pager=0",
        f"echo \"imagekit-pvgrub: {variant} AKI (pvgrub2), reading {variant.legacy_root}{MENU_LST}\"",
        f"if search --no-floppy --file --set=root {MENU_LST}; then",
        f"  legacy_source ($root){MENU_LST}",
        "  set timeout=0",
        "else",
        f"  echo \"imagekit-pvgrub: {variant.legacy_root}{MENU_LST} not found (the {variant} AKI looks only there)\"",
        "fi",
    ]) + "\n"


def build_pvgrub2(variant: Variant) -> Path:
    """grub-x86_64-xen.bin for `variant`, cached; UsageError when grub-xen-bin is not installed."""
    if not (GRUB_XEN_DIR / "legacycfg.mod").is_file():
        raise UsageError(f"{GRUB_XEN_DIR} is missing: pvgrub2 needs GRUB's x86_64-xen platform",
                         hint="apt-get install grub-xen-bin")
    return cached_grub(f"pvgrub2-x86_64-xen-{variant}", "x86_64-xen", xen_grub_cfg(variant), XEN_MODULES)


def xl_config(name: str, *, kernel: Path, disk: Path, disk_format: str, variant: Variant, machine: Machine) -> str:
    """An xl domain config for a PV guest booted by pvgrub2, with the machine's memory and CPUs."""
    vdev = "xvda1" if variant is Variant.HD0 else "xvda"
    backend = ", backendtype=qdisk" if disk_format != "raw" else ""
    return "\n".join([
        f'name = "{name}"',
        'type = "pv"',
        f'kernel = "{kernel}"',
        f"memory = {machine.memory_mb}",
        f"vcpus = {machine.cpus}",
        f'disk = [ "format={disk_format}, vdev={vdev}, access=rw{backend}, target={disk}" ]',
        'vif = [ "" ]',
        'on_poweroff = "destroy"',
        'on_reboot = "destroy"',
        'on_crash = "destroy"',
    ]) + "\n"


def check_dom0() -> None:
    """UsageError (exit 2) unless `xl info` works: there is no Xen dom0 here otherwise."""
    try:
        run(["xl", "info"])
    except CommandFailed as exc:
        why = "xl is not installed" if exc.returncode == 127 else exc.message
        raise UsageError(f"--hypervisor xen: no Xen dom0 here ({why})",
                         hint="boot under QEMU instead (the default), or run on a Xen dom0") from None


@contextmanager
def xen_domain(config: Path, name: str) -> Iterator[str]:
    """A PV domain from `config`, destroyed when the block ends."""
    run(["xl", "create", config])
    try:
        yield name
    finally:
        with suppress(CommandFailed):
            run(["xl", "destroy", name])


def check_kernel(opts: BootOptions, image: ImageFile, progress: Progress) -> tuple[BootOptions, BootReport | None]:
    """PV-GRUB's model before any domain: GRUB 0.97 runs the menu, Xen's domain builder's rules judge the kernel
    (imagekit/pvgrub/plan.py, as --loader pvgrub097 and lint). A report when no entry would boot, before `xl` is
    looked up. A raw image only (GRUB 0.97's shell reads the file itself): a qcow2 goes to pvgrub2 unchecked."""
    if image.format != "raw":
        return opts, None
    with tempfile.TemporaryDirectory(prefix="imagekit-boot-xen-check-") as tmp:
        opts, grub097, seconds = plan_pvgrub097(opts, image, Path(tmp), progress)
    if grub097.xen is not None:
        return opts, None
    return opts, refused_report(opts, image, Accel("xen", "not started: PV-GRUB would boot no entry"), grub097,
                                seconds)


def boot_xen(opts: BootOptions, image: ImageFile, progress: Progress) -> BootReport:
    """Boot under a real dom0 with pvgrub2; the console is read through `xl console`. Not run in CI."""
    if shutil.which("xl") is None:  # no Xen tools at all: said at once, whatever the image holds
        check_dom0()
    opts, refused = check_kernel(opts, image, progress)  # before `xl create` (and `xl info`) is run
    if refused is not None:
        return refused
    check_dom0()
    libguestfs_accel = detect(opts.accel)
    with tempfile.TemporaryDirectory(prefix="imagekit-boot-xen-") as tmp:
        workdir = Path(tmp)
        with overlay(image, workdir) as ov:
            with progress.stage("prepare", "overlay, probe") as stage, \
                    guest.open_guest(ov, libguestfs_accel, image.path.name) as g:
                prepared = prepare_overlay(g, image, opts, "pvgrub", workdir)
            if prepared.disk.variant is None:
                raise ImagekitError("--hypervisor xen: not a PV-GRUB image")
            name = f"imagekit-boot-{os.getpid()}"
            config = workdir / "domain.cfg"
            config.write_text(xl_config(name, kernel=build_pvgrub2(prepared.disk.variant), disk=ov,
                                        disk_format="qcow2", variant=prepared.disk.variant,
                                        machine=Machine(opts.memory_mb, opts.cpus)))
            log, watcher = workdir / "console.log", Watcher()
            with progress.stage("boot", "pvgrub2 under Xen"), xen_domain(config, name):
                outcome = run_qemu(["xl", "console", name], log, watcher, timeout=opts.timeout,
                                   silence=opts.silence, console_on_stdout=True)
            saved = save_log(log, opts.serial_log or image.path.with_name(image.path.name + ".serial.log"))
    return build_report(opts, image, "pvgrub", Accel("xen", "Xen dom0 (xl info works)"), prepared,
                        BootRun(watcher, outcome, saved, stage.seconds))
