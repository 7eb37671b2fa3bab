"""PV-GRUB emulated with real GRUB code: a GRUB 2 i386-pc core image that reads the image's menu.lst.

PV-GRUB (seeds 002, 004) is GRUB 0.97 running as a Xen guest. Versions up to 1.03 look in one place:
the hd0 AKI at `(hd0)/boot/grub/menu.lst` (partitionless image), the hd00 AKI at
`(hd0,0)/boot/grub/menu.lst` (first partition; with a separate /boot partition that is the file
/boot/boot/grub/menu.lst of the running system). GRUB 2's `legacycfg` module parses GRUB-legacy
menu.lst (default, fallback, timeout, title, root, kernel, initrd) and boots it with the same
fallback rule. The core image gets an embedded config (in a memdisk) that sets root as the AKI
would and reads that one path with `legacy_source` (legacy_configfile's parser, in the current
context), then sets the menu timeout to 0: nobody presses a key on EC2, so the countdown only costs
time (a second per boot). Prefixed with `lnxboot.img` the core image is a kernel QEMU can start
with `-kernel`. Built once per GRUB version and variant, kept in the cache.
"""

from __future__ import annotations

import io
import tarfile
import tempfile
from pathlib import Path

from imagekit.pvgrub.variant import Variant
from imagekit.util.cache import cache_dir, key_of
from imagekit.util.errors import UsageError
from imagekit.util.run import output, run

GRUB_PC_DIR = Path("/usr/lib/grub/i386-pc")
MENU_LST = "/boot/grub/menu.lst"
# biosdisk + part_msdos: the disk as PV-GRUB sees it; filesystems PV-GRUB reads (seed 002);
# linux16: what legacy_kernel uses on i386-pc; *io: compressed kernels (gzip, xz, lzo).
MODULES = ("memdisk", "tar", "biosdisk", "part_msdos", "ext2", "xfs", "btrfs", "reiserfs", "legacycfg",
           "linux16", "linux", "normal", "serial", "terminfo", "test", "echo", "gzio", "xzio", "lzopio",
           "configfile", "ls")
BOOTSTRAP = "set root=(memdisk)\nset prefix=(memdisk)/boot/grub\n"

__all__ = ["MENU_LST", "MODULES", "Variant", "build_core", "cached_grub", "grub_cfg"]


def grub_cfg(variant: Variant, *, serial: bool = True) -> str:
    """The config the core image runs: a serial terminal, root as the AKI sets it, the image's menu.lst."""
    path = f"{variant.grub_root}{MENU_LST}"
    lines = []
    if serial:
        lines += ["serial --unit=0 --speed=115200", "terminal_input serial", "terminal_output serial",
                  "terminfo serial dumb"]
    lines += [
        "set pager=0",
        f"set root={variant.grub_root}",
        f"echo \"imagekit-pvgrub: {variant} AKI, reading {variant.legacy_root}{MENU_LST}\"",
        f"if [ -f {path} ]; then",
        f"  legacy_source {path}",
        "  echo \"imagekit-pvgrub: menu.lst timeout $timeout, skipped\"",
        "  set timeout=0",
        "else",
        f"  echo \"imagekit-pvgrub: {variant.legacy_root}{MENU_LST} not found (the {variant} AKI looks only there)\"",
        "fi",
    ]
    return "\n".join(lines) + "\n"


def memdisk_tar(cfg: str) -> bytes:
    """A tar holding boot/grub/grub.cfg, for grub-mkimage -m (deterministic: fixed mtime and owner)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in ("boot", "boot/grub"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        data = cfg.encode()
        info = tarfile.TarInfo("boot/grub/grub.cfg")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def grub_version() -> str:
    return output(["grub-mkimage", "--version"]).strip()


def cached_grub(name: str, platform: str, cfg: str, modules: tuple[str, ...], *, head: bytes = b"") -> Path:
    """A GRUB image for `platform` with `cfg` in its memdisk, built by grub-mkimage once per GRUB version,
    config and module list and kept in the cache as `name-KEY.img`; `head` is prepended (lnxboot.img)."""
    directory = Path("/usr/lib/grub") / platform
    key = key_of({"grub": grub_version(), "platform": platform, "cfg": cfg, "modules": modules})
    target = cache_dir() / "pvgrub" / f"{name}-{key}.img"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="imagekit-pvgrub-") as tmp:
        work = Path(tmp)
        (work / "bootstrap.cfg").write_text(BOOTSTRAP)
        (work / "memdisk.tar").write_bytes(memdisk_tar(cfg))
        run(["grub-mkimage", "-O", platform, "-d", str(directory), "-o", str(work / "core.img"),
             "-c", str(work / "bootstrap.cfg"), "-m", str(work / "memdisk.tar"), "-p", "(memdisk)/boot/grub",
             *modules])
        partial = target.with_suffix(".tmp")
        partial.write_bytes(head + (work / "core.img").read_bytes())
        partial.replace(target)
    return target


def build_core(variant: Variant) -> Path:
    """The cached lnxboot+core image for `variant`, built with grub-mkimage when missing."""
    if not (GRUB_PC_DIR / "legacycfg.mod").is_file():
        raise UsageError(f"{GRUB_PC_DIR}/legacycfg.mod is missing",
                         hint="install grub-pc-bin (scripts/setup does)")
    return cached_grub(f"pvgrub-{variant}", "i386-pc", grub_cfg(variant), MODULES,
                       head=(GRUB_PC_DIR / "lnxboot.img").read_bytes())
