"""Booting under a real Xen dom0 with pvgrub2 (`grub-x86_64-xen.bin`), where one is available.

pvgrub2 ignores menu.lst unless its embedded config calls `legacy_configfile`: the image built here
carries the same memdisk config idea as the QEMU loader (minus the serial terminal: the Xen PV
console is GRUB's console). The disk is `xvda`; an hd0 image is attached as the partition device
`xvda1`, as EC2 does. Without a dom0 (`xl info` fails) the command exits 2 and says so.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from imagekit.boot.pvgrub import BOOTSTRAP, MENU_LST, MODULES, Variant, grub_version, memdisk_tar, mkimage_argv
from imagekit.cache import cache_dir, key_of
from imagekit.errors import CommandFailed, ImagekitError, UsageError
from imagekit.run import run

if TYPE_CHECKING:
    from imagekit.boot.harness import BootOptions
    from imagekit.boot.overlay import ImageFile
    from imagekit.boot.report import BootReport
    from imagekit.progress import Progress

GRUB_XEN_DIR = Path("/usr/lib/grub/x86_64-xen")
XEN_MODULES = tuple(m for m in MODULES if m not in ("biosdisk", "linux16", "serial", "terminfo"))


def xen_grub_cfg(variant: Variant) -> str:
    """pvgrub2's config: find the disk holding menu.lst the way the AKI variant names it, then load it."""
    device = "xvda1" if variant is Variant.HD0 else "xvda"
    root = f"(xen/{device})" if variant is Variant.HD0 else f"(xen/{device},msdos1)"
    return "\n".join([
        "set pager=0",
        f"set root={root}",
        f"echo \"imagekit-pvgrub: {variant} AKI (pvgrub2), reading {variant.legacy_root}{MENU_LST}\"",
        f"if [ -f {root}{MENU_LST} ]; then",
        f"  legacy_configfile {root}{MENU_LST}",
        "else",
        f"  echo \"imagekit-pvgrub: {variant.legacy_root}{MENU_LST} not found (the {variant} AKI looks only there)\"",
        "fi",
    ]) + "\n"


def build_pvgrub2(variant: Variant) -> Path:
    """grub-x86_64-xen.bin for `variant`, cached; UsageError when grub-xen-bin is not installed."""
    if not (GRUB_XEN_DIR / "legacycfg.mod").is_file():
        raise UsageError(f"{GRUB_XEN_DIR} is missing: pvgrub2 needs GRUB's x86_64-xen platform",
                         hint="apt-get install grub-xen-bin")
    cfg = xen_grub_cfg(variant)
    key = key_of({"grub": grub_version(), "variant": str(variant), "cfg": cfg, "modules": XEN_MODULES})
    target = cache_dir() / "pvgrub" / f"pvgrub2-x86_64-xen-{variant}-{key}.bin"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="imagekit-pvgrub2-") as tmp:
        work = Path(tmp)
        (work / "bootstrap.cfg").write_text(BOOTSTRAP)
        (work / "memdisk.tar").write_bytes(memdisk_tar(cfg))
        partial = target.with_suffix(".tmp")
        run(mkimage_argv("x86_64-xen", partial, work / "bootstrap.cfg", work / "memdisk.tar", XEN_MODULES,
                         GRUB_XEN_DIR))
        partial.replace(target)
    return target


def xl_config(name: str, *, kernel: Path, disk: Path, disk_format: str, variant: Variant, memory_mb: int,
              cpus: int) -> str:
    """An xl domain config for a PV guest booted by pvgrub2."""
    vdev = "xvda1" if variant is Variant.HD0 else "xvda"
    backend = ", backendtype=qdisk" if disk_format != "raw" else ""
    return "\n".join([
        f'name = "{name}"',
        'type = "pv"',
        f'kernel = "{kernel}"',
        f"memory = {memory_mb}",
        f"vcpus = {cpus}",
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


def boot_xen(opts: BootOptions, image: ImageFile, progress: Progress) -> BootReport:
    check_dom0()
    raise ImagekitError("--hypervisor xen: booting under a dom0 is not implemented yet "
                        "(the xl config and the pvgrub2 image are: see imagekit.boot.xen)")
