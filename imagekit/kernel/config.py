"""Does a kernel have what an EC2 target needs? Each option is present (=y), module (=m) or missing.

The config comes from a file (/boot/config-VERSION, plain or gzipped like /proc/config.gz), from
the kernel itself when it was built with CONFIG_IKCONFIG, or from the config file installed beside
the kernel (/boot/config-VERSION next to /boot/vmlinuz-VERSION).

Targets: `pv` (PV-GRUB on Xen PV instances), `hvm` (any HVM instance type: Xen HVM and Nitro),
`nitro` (Nitro instance types only).
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from imagekit.kernel.bzimage import MAGIC, Compression, is_bzimage, load_vmlinux, read_kernel
from imagekit.kernel.elf import ElfInfo, is_elf
from imagekit.util.errors import UsageError


class Target(StrEnum):
    PV = "pv"
    HVM = "hvm"
    NITRO = "nitro"


class Status(StrEnum):
    PRESENT = "present"  # =y
    MODULE = "module"  # =m
    MISSING = "missing"  # not set, or not in the config at all


class Need(StrEnum):
    BUILTIN = "built-in"
    ANY = "built-in or module"


@dataclass(frozen=True)
class Requirement:
    options: tuple[str, ...]  # any of these satisfies it (CONFIG_ prefix left out)
    need: Need
    severity: str  # "error" or "warning" when unmet
    why: str
    legacy: tuple[str, ...] = ()  # used instead when no option above is known to this config at all


@dataclass(frozen=True)
class OptionResult:
    option: str  # the option that decided the status (the first one when all are missing)
    status: Status
    need: Need
    severity: str
    ok: bool
    why: str
    note: str = ""


@dataclass(frozen=True)
class KernelConfig:
    options: dict[str, str]  # "XEN_PV" -> "y" | "m" | "n" | other value
    source: str  # where it was read from
    elf: ElfInfo | None = None  # set when the input was a kernel


FILESYSTEMS: dict[str, tuple[str, ...]] = {
    "ext2": ("EXT4_FS", "EXT2_FS"),
    "ext3": ("EXT4_FS", "EXT3_FS"),
    "ext4": ("EXT4_FS",),
    "xfs": ("XFS_FS",),
    "btrfs": ("BTRFS_FS",),
    "reiserfs": ("REISERFS_FS",),
    "vfat": ("VFAT_FS",),
}

_NVME = Requirement(("BLK_DEV_NVME",), Need.ANY, "error", "EBS volumes are NVMe devices on Nitro instances")
_ENA = Requirement(("ENA_ETHERNET",), Need.ANY, "error", "the network adapter of Nitro instances (ENA)")
_SERIAL = Requirement(("SERIAL_8250_CONSOLE",), Need.BUILTIN, "warning",
                      "console=ttyS0: the HVM serial console (get-console-output)")
_DEVTMPFS = Requirement(("DEVTMPFS",), Need.BUILTIN, "warning", "/dev populated at boot (systemd needs it)")
_INITRD = Requirement(("BLK_DEV_INITRD",), Need.BUILTIN, "warning", "loading an initrd (for the modules)")

REQUIREMENTS: dict[Target, tuple[Requirement, ...]] = {
    Target.PV: (
        Requirement(("XEN_PV",), Need.BUILTIN, "error", "starts as a Xen PV guest (PV-GRUB boots PV only)",
                    legacy=("XEN",)),
        Requirement(("HVC_XEN",), Need.BUILTIN, "error", "console=hvc0: the Xen PV console"),
        Requirement(("XEN_BLKDEV_FRONTEND",), Need.ANY, "error", "the root disk is a Xen block device (xvda)"),
        Requirement(("XEN_NETDEV_FRONTEND",), Need.ANY, "error", "the network is a Xen netfront device"),
        _DEVTMPFS,
        _INITRD,
    ),
    Target.HVM: (
        _NVME,
        _ENA,
        Requirement(("XEN_PVHVM",), Need.BUILTIN, "warning", "PV drivers on Xen HVM instance types (t2, m4)"),
        Requirement(("XEN_BLKDEV_FRONTEND",), Need.ANY, "warning", "EBS volumes on Xen HVM instance types"),
        Requirement(("XEN_NETDEV_FRONTEND",), Need.ANY, "warning", "the network on Xen HVM instance types"),
        _SERIAL,
        _DEVTMPFS,
        _INITRD,
    ),
    Target.NITRO: (_NVME, _ENA, _SERIAL, _DEVTMPFS, _INITRD),
}

_LINE = re.compile(r"^CONFIG_([A-Za-z0-9_]+)=(.*)$")
_NOT_SET = re.compile(r"^# CONFIG_([A-Za-z0-9_]+) is not set$")
IKCFG_START, IKCFG_END = b"IKCFG_ST", b"IKCFG_ED"


def parse_config(text: str) -> dict[str, str]:
    """A kernel .config as {name without CONFIG_: value}; 'is not set' becomes 'n'."""
    options: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if m := _LINE.match(line):
            options[m[1]] = m[2].strip('"') if m[2].startswith('"') else m[2]
        elif m := _NOT_SET.match(line):
            options[m[1]] = "n"
    return options


def looks_like_config(text: str) -> bool:
    return any(_LINE.match(line) for line in text.splitlines()[:200])


MAX_IKCONFIG = 4 * 1024 * 1024  # a kernel's .config is ~250 KiB


def ikconfig(vmlinux: bytes) -> str | None:
    """The config a CONFIG_IKCONFIG kernel embeds (gzip between IKCFG_ST and IKCFG_ED), if any."""
    start = vmlinux.find(IKCFG_START)
    if start == -1:
        return None
    end = vmlinux.find(IKCFG_END, start)
    if end == -1:
        return None
    try:
        d = zlib.decompressobj(wbits=31)
        text = d.decompress(vmlinux[start + len(IKCFG_START) : end], MAX_IKCONFIG)
    except (OSError, EOFError, zlib.error):
        return None
    return text.decode(errors="replace") if d.eof else None  # cut short or over MAX_IKCONFIG: no config


def sibling_config(kernel: Path, release: str = "") -> Path | None:
    """/boot/config-VERSION for /boot/vmlinuz-VERSION (or for the release the boot header names)."""
    names = []
    for prefix in ("vmlinuz-", "vmlinux-", "pvgrub-vmlinux-", "bzImage-", "kernel-"):
        if kernel.name.startswith(prefix):
            names.append("config-" + kernel.name[len(prefix) :].removesuffix(".gz"))
    if release:
        names.append(f"config-{release}")
    for name in names:
        candidate = kernel.with_name(name)
        if candidate.is_file():
            return candidate
    return None


def _is_kernel(data: bytes) -> bool:
    return is_bzimage(data) or is_elf(data) or data.startswith(MAGIC[Compression.GZIP])


def load_config(path: str | os.PathLike[str]) -> KernelConfig:
    """The kernel config in `path`: a config file (maybe gzipped) or a kernel (bzImage/vmlinux)."""
    name = os.fspath(path)
    data = read_kernel(path)
    if data.startswith(MAGIC[Compression.GZIP]):
        try:
            inner = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            inner = b""
        if inner and not is_elf(inner):
            data = inner  # a gzipped config (/proc/config.gz)
    if not _is_kernel(data):
        text = data.decode(errors="replace")
        if not looks_like_config(text):
            raise UsageError(f"{name} ({len(data)} bytes): neither a kernel config (no CONFIG_ lines) nor a kernel")
        return KernelConfig(parse_config(text), name)
    vmlinux = load_vmlinux(data, name)
    embedded = ikconfig(vmlinux.data)
    if embedded is not None:
        return KernelConfig(parse_config(embedded), f"{name} (embedded, CONFIG_IKCONFIG)", vmlinux.elf)
    release = vmlinux.header.release if vmlinux.header else ""
    beside = sibling_config(Path(path), release)
    if beside is None:
        raise UsageError(
            f"{name}: the kernel has no embedded config (CONFIG_IKCONFIG) and no config-VERSION beside it",
            hint="pass the kernel's config file instead (/boot/config-VERSION)",
        )
    return KernelConfig(parse_config(beside.read_text(errors="replace")), os.fspath(beside), vmlinux.elf)


def _status(value: str | None) -> Status:
    if value == "y":
        return Status.PRESENT
    if value == "m":
        return Status.MODULE
    return Status.MISSING


def evaluate(req: Requirement, options: dict[str, str], initrd: bool | None) -> OptionResult:
    names = req.options
    if req.legacy and not any(n in options for n in names):
        names = req.legacy
    ranked = sorted(names, key=lambda n: [Status.PRESENT, Status.MODULE, Status.MISSING].index(
        _status(options.get(n))))
    best = ranked[0]
    status = _status(options.get(best))
    note = ""
    if status is Status.PRESENT:
        ok = True
    elif status is Status.MODULE and req.need is Need.ANY:
        ok = initrd is not False
        note = "in the initrd" if initrd else "needs an initrd" if initrd is None else "no initrd to load it"
    elif status is Status.MODULE:
        ok, note = False, "must be built in"
    else:
        ok = False
    return OptionResult(best, status, req.need, req.severity, ok, req.why, note)


def requirements(target: Target | str, fs: str | None = "ext4") -> tuple[Requirement, ...]:
    target = Target(target)
    reqs = REQUIREMENTS[target]
    if fs:
        if fs not in FILESYSTEMS:
            raise UsageError(f"--fs: {fs!r} is not one of {', '.join(FILESYSTEMS)}")
        reqs = (Requirement(FILESYSTEMS[fs], Need.ANY, "error", f"mounting the {fs} root and /boot"), *reqs)
    return reqs


def check_config(
    config: KernelConfig | dict[str, str], target: Target | str, fs: str | None = "ext4",
    initrd: bool | None = None,
) -> list[OptionResult]:
    """Every option the target needs, with its status. initrd: is there one (None: unknown)."""
    options = config.options if isinstance(config, KernelConfig) else config
    return [evaluate(req, options, initrd) for req in requirements(target, fs)]
