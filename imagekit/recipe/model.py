"""Stage 1: a recipe (TOML, one file per image) validated into typed, frozen objects.

Stages never see raw dicts. Every error names the file and the key:
    recipes/x.toml: layout: 'hd1' is not one of hd0, hd00, mbr-bios, gpt-uefi, gpt-hybrid
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from imagekit.recipe.arch import ARCHES, Arch, layout_refusal

# the layout table's vocabulary, re-exported: recipes name a Layout
from imagekit.recipe.layouts import LAYOUTS, Bootloader
from imagekit.recipe.layouts import BootMode as BootMode
from imagekit.recipe.layouts import Layout as Layout
from imagekit.recipe.layouts import Virtualization as Virtualization
from imagekit.util.errors import RecipeError


class FsType(StrEnum):
    EXT2 = "ext2"
    EXT3 = "ext3"
    EXT4 = "ext4"
    XFS = "xfs"
    BTRFS = "btrfs"


# What PV-GRUB can read /boot from (seed 002): ext2/3/4, XFS, ReiserFS, BTRFS (beta).
# imagekit cannot make ReiserFS (no rootless mkfs that populates it), so it is not offered.
PVGRUB_BOOT_FS = (FsType.EXT2, FsType.EXT3, FsType.EXT4, FsType.XFS, FsType.BTRFS)

MiB = 1024 * 1024
GiB = 1024 * MiB
_UNITS = {"": 1, "B": 1, "K": 1024, "M": MiB, "G": GiB, "T": 1024 * GiB}


# The largest size imagekit takes: EBS's largest volume (io2 Block Express, 64 TiB). Anything past it is a typo
# (and `int(float("1" + 309 zeros))` would be an OverflowError, not a message).
MAX_SIZE = 64 * 1024 * GiB


def parse_size(value: object) -> int:
    """'4G', '512M', '1.5G', 4294967296 -> bytes (binary units), at most MAX_SIZE."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size like 4G or 512M")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"{_short(value)} is not a positive size")
        return _bounded(value, value)
    text = str(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE) if len(text) <= 1000 else None
    if not m:
        raise ValueError(f"{_short(value)} is not a size like 4G or 512M")
    size = int(Decimal(m[1]) * _UNITS[m[2].upper()])  # Decimal: exact, and never inf
    if size <= 0:
        raise ValueError(f"{value!r} is not a positive size")
    return _bounded(size, value)


def _bounded(size: int, value: object) -> int:
    if size > MAX_SIZE:
        raise ValueError(f"{_short(value)} is larger than 64T (EBS's largest volume)")
    return size


def _short(value: object, limit: int = 60) -> str:
    """repr(value), cut to `limit` characters: a message stays one short line whatever the input."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"a {len(str(abs(value))) if value.bit_length() < 10000 else 'many'}-digit number"
    text = repr(value)
    if len(text) <= limit:
        return text
    return text[: limit - 4] + "...'" if text[0] == "'" else text[:limit] + "..."


# --- strings that land in argv, menu.lst, grub.cfg, fstab or a path of the image ------------------------

# Where the kernel mounts virtual filesystems at boot (devtmpfs, proc, sysfs): a file a recipe put there
# would never be seen, and these are the host paths where a stray write does the most harm. /run is left
# alone: it is an ordinary directory in the staged tree (the image's /var/run -> /run lands there, as in a
# chroot), hidden by a tmpfs only while the system runs, like any Debian image's /run.
VIRTUAL_DIRS = ("dev", "proc", "sys")
NAME_MAX = 255  # bytes in one path component (Linux)
PATH_MAX = 4095


def check_text(value: str, what: str, limit: int) -> None:
    """One line of printable text: no newline, tab or other control character (they would inject lines)."""
    bad = next((c for c in value if not c.isprintable()), None)
    if bad is not None:
        raise ValueError(f"{what} holds the control character {bad!r}: give one line of printable text")
    if len(value) > limit:
        raise ValueError(f"{what} is {len(value)} characters long (at most {limit})")


def check_image_path(path: str) -> None:
    """An absolute path in the image without `..`, `.`, empty components or kernel filesystems."""
    check_text(path, f"{_short(path)}", PATH_MAX)
    if not path.startswith("/"):
        raise ValueError(f"{_short(path)} must be an absolute path in the image")
    parts = path.split("/")[1:]
    if parts == [""]:
        raise ValueError("'/' is the image's root directory, not a file")
    for part in parts:
        if part in ("", ".", ".."):
            raise ValueError(f"{_short(path)}: {part or 'an empty'!r} component: give a plain path like /etc/motd"
                             .replace("'an empty'", "an empty"))
        if len(part.encode()) > NAME_MAX:
            raise ValueError(f"{_short(path)}: a component is longer than {NAME_MAX} bytes")
    if parts[0] in VIRTUAL_DIRS:
        raise ValueError(f"{_short(path)} is under /{parts[0]}, where the kernel mounts a virtual filesystem at "
                         "boot (nothing written there is seen)")


def check_host_path(path: Path) -> None:
    """A host path a recipe names (a file to copy, a tarball, a directory): no NUL, not over Linux's limits."""
    text = str(path)
    check_text(text, _short(text), PATH_MAX)
    if any(len(part.encode()) > NAME_MAX for part in text.split("/")):
        raise ValueError(f"{_short(text)}: a component is longer than {NAME_MAX} bytes")


# What GRUB 2's grub.cfg (a small shell language) would read as syntax on a `linux` line: `;` or `&` ends
# the command, `{}` a block, `$` expands, `#` a comment, quotes and `\` change words. The kernel command
# line needs none of them (Linux takes "..." for a value with spaces: an even number of `"` is allowed).
_GRUB_SPECIAL = set(";&|<>{}$`'\\#")


def check_kernel_args(value: str, what: str) -> None:
    """Kernel command line words: printable ASCII, nothing menu.lst or grub.cfg would read as syntax."""
    check_text(value, what, 2048)
    bad = next((c for c in value if not c.isascii() or c in _GRUB_SPECIAL), None)
    if bad is not None:
        raise ValueError(f"{what} holds {bad!r}, which GRUB would read as syntax (or is not ASCII)")
    if value.count('"') % 2:
        raise ValueError(f"{what} has an unbalanced '\"'")


TITLE_FIELDS = ("name", "kernel_version")


def check_title(value: str) -> None:
    """A boot entry title: one printable line; {name} and {kernel_version} are the only fields."""
    check_text(value, "title", 200)
    try:
        fields = [(f, conv, spec) for _, f, spec, conv in string.Formatter().parse(value) if f is not None]
    except ValueError as exc:
        raise ValueError(f"title {_short(value)}: {exc} (write {{{{ and }}}} for a brace)") from None
    for field, conv, spec in fields:
        if field not in TITLE_FIELDS or conv or spec:
            shown = field + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "")
            raise ValueError(f"title {_short(value)}: {{{shown}}} is not a field: use {{name}} or "
                             "{kernel_version} ({{ and }} for a brace)")


# A Debian package name (Policy 5.6.1), optionally with apt's :arch and =version or /release, as mmdebstrap
# passes --include to apt. Never a leading '-' (an option) or '/' and './' (mmdebstrap reads a .deb path).
PACKAGE_RE = re.compile(r"[a-z0-9][a-z0-9+.-]{1,127}")
PACKAGE_APT_RE = re.compile(PACKAGE_RE.pattern + r"(:[a-z0-9-]{1,32})?(=[A-Za-z0-9.+~:-]{1,128}|/[a-z0-9.-]{1,64})?")


def check_package(name: str) -> str:
    if not PACKAGE_APT_RE.fullmatch(name):
        raise ValueError(f"{_short(name)} is not a Debian package name (optionally with :arch and =version "
                         "or /release)")
    return name


PackageName = Annotated[str, AfterValidator(check_package)]

Size = Annotated[int, BeforeValidator(parse_size)]


def parse_free(value: object) -> int | float:
    """Headroom: a size ('512M') or a percentage of the tree ('20%', returned as 0.2)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        number = value.strip()[:-1]
        try:
            pct = float(number)
        except ValueError:
            raise ValueError(f"{_short(value)} is not a size like 512M or a percentage like 20%") from None
        if not 0 <= pct <= 1000:
            raise ValueError(f"{_short(value)}: a percentage from 0% to 1000%")
        return pct / 100
    if value in (0, "0"):
        return 0
    try:
        return parse_size(value)
    except ValueError as exc:
        if "larger than" in str(exc):
            raise
        raise ValueError(f"{_short(value)} is not a size like 512M or a percentage like 20%") from None


def parse_image_size(value: object) -> int | str:
    return "auto" if value == "auto" else parse_size(value)


ImageSize = Annotated[int | Literal["auto"], BeforeValidator(parse_image_size)]
Free = Annotated[int | float, BeforeValidator(parse_free)]


SUITE_RE = re.compile(r"[a-z][a-z0-9.-]{0,63}")
COMPONENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
# mmdebstrap takes a MIRROR with "://" as a URI (else a file to paste, or a sources.list line); apt's methods.
MIRROR_RE = re.compile(r"(https?|file|copy|tor\+https?|mirror(\+(https?|file|copy))?)://[!-~]+")
DEBOOTSTRAP_MIRROR_RE = re.compile(r"(https?|ftp|file)://[!-~]+")
MMDEBSTRAP_VARIANTS = ("extract", "custom", "essential", "apt", "required", "minbase", "buildd", "important",
                       "debootstrap", "-", "standard")
DEBOOTSTRAP_VARIANTS = ("minbase", "buildd", "fakechroot")
PROFILE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
BOOT_FILE_RE = re.compile(r"[A-Za-z0-9._+~-]{1,255}")


def _host_path(value: object) -> object:
    if isinstance(value, str):
        check_host_path(Path(value))
    return value


HostPath = Annotated[Path, BeforeValidator(_host_path)]


class Model(BaseModel):
    """The base of every recipe and kernel profile model: unknown keys refused, frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class Bootstrap(Model):
    source: Literal["bootstrap"]
    tool: Literal["mmdebstrap", "debootstrap"] = "mmdebstrap"
    suite: str = "bookworm"
    variant: str = "minbase"
    mirror: str = "http://deb.debian.org/debian"
    components: tuple[str, ...] = ("main",)
    packages: tuple[PackageName, ...] = ()
    # A snapshot.debian.org timestamp (e.g. "20260101T000000Z"): pins the package set; the mirror
    # becomes the snapshot archive unless `mirror` names one explicitly.
    snapshot: str | None = Field(default=None, pattern=r"^\d{8}T\d{6}Z$")

    # These reach mmdebstrap's (or debootstrap's) argv, apt's sources.list and the cache's file names:
    # each is checked as what it is, so none can be an option (`--customize-hook=...`), a second
    # sources.list line or a path. The argv also ends the options with `--` (mmdebstrap; see rootfs.py).
    @field_validator("suite")
    @classmethod
    def _suite(cls, value: str) -> str:
        if not SUITE_RE.fullmatch(value):
            raise ValueError(f"{_short(value)} is not a Debian suite or codename like bookworm or stable-updates")
        return value

    @field_validator("mirror")
    @classmethod
    def _mirror(cls, value: str) -> str:
        if len(value) > 1024 or not MIRROR_RE.fullmatch(value):
            raise ValueError(f"{_short(value)} is not a mirror URL (http://, https://, file://, copy://, "
                             "mirror+http://, tor+http://...)")
        return value

    @field_validator("components")
    @classmethod
    def _components(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not 0 < len(value) <= 16:
            raise ValueError("give 1-16 archive components, e.g. [\"main\"]")
        for name in value:
            if not COMPONENT_RE.fullmatch(name):
                raise ValueError(f"{_short(name)} is not an archive component like main or non-free-firmware")
        return value

    @field_validator("snapshot")
    @classmethod
    def _snapshot(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                datetime.strptime(value, "%Y%m%dT%H%M%SZ")
            except ValueError:
                raise ValueError(f"{value!r} is not a date and time (YYYYMMDDTHHMMSSZ)") from None
        return value

    @model_validator(mode="after")
    def _tool(self) -> Bootstrap:
        variants = MMDEBSTRAP_VARIANTS if self.tool == "mmdebstrap" else DEBOOTSTRAP_VARIANTS
        if self.variant not in variants:
            raise ValueError(f"variant {_short(self.variant)} is not one of {', '.join(variants)} ({self.tool})")
        if self.tool == "debootstrap":
            plain = next((p for p in self.packages if not PACKAGE_RE.fullmatch(p)), None)
            if plain is not None:
                raise ValueError(f"packages {plain!r}: debootstrap takes plain package names (no :arch, "
                                 "=version or /release; mmdebstrap does)")
            if not DEBOOTSTRAP_MIRROR_RE.fullmatch(self.mirror):
                raise ValueError(f"mirror {_short(self.mirror)}: debootstrap reads http://, https://, ftp:// "
                                 "or file:// mirrors")
        return self

    @property
    def source_url(self) -> str:
        if self.snapshot and self.mirror == "http://deb.debian.org/debian":
            return f"http://snapshot.debian.org/archive/debian/{self.snapshot}/"
        return self.mirror


class Tarball(Model):
    source: Literal["tarball"]
    path: HostPath


class Directory(Model):
    source: Literal["directory"]
    path: HostPath


RootfsSource = Annotated[Bootstrap | Tarball | Directory, Field(discriminator="source")]


class Filesystem(Model):
    type: FsType = FsType.EXT4
    label: str
    size: Size | None = None  # /boot only; root takes the rest of the disk
    features: str | None = None  # mke2fs -O / mkfs.btrfs -O, as the tool spells it

    @field_validator("features")
    @classmethod
    def _features(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"\^?[a-z0-9_]{1,32}(,\^?[a-z0-9_]{1,32}){0,63}", value):
            raise ValueError(f"{_short(value)} is not a feature list like ^has_journal,extent")
        return value

    @model_validator(mode="after")
    def _label_fits(self) -> Filesystem:
        limit = 12 if self.type == FsType.XFS else 16
        if not 0 < len(self.label) <= limit or not re.fullmatch(r"[A-Za-z0-9_.-]+", self.label):
            raise ValueError(f"label {self.label!r} must be 1-{limit} characters of A-Z a-z 0-9 _ . -")
        return self


# FAT32 needs 65525 clusters: with 512-byte clusters that is 32 MiB of data plus the FATs, 33 MiB aligned.
ESP_MIN = 33 * MiB


class Esp(Model):
    """The EFI system partition (gpt-uefi, gpt-hybrid): FAT32, holds EFI/BOOT/BOOTX64.EFI."""

    size: Size = 128 * MiB
    label: str = "ESP"

    @model_validator(mode="after")
    def _check(self) -> Esp:
        if self.size < ESP_MIN:
            raise ValueError(f"size {self.size >> 20} MiB is too small for FAT32 (at least {ESP_MIN >> 20} MiB)")
        if not re.fullmatch(r"[A-Z0-9_-]{1,11}", self.label):
            raise ValueError(f"label {self.label!r} must be 1-11 characters of A-Z 0-9 _ - (a FAT label)")
        return self


class Filesystems(Model):
    root: Filesystem = Filesystem(label="root")
    boot: Filesystem | None = None  # a separate /boot partition (hd00 and the HVM layouts)
    esp: Esp | None = None  # the EFI system partition's size and label (gpt-uefi, gpt-hybrid); default Esp()


class Kernel(Model):
    profile: str
    cmdline: str = ""  # appended to the profile's command line
    root: Literal["label", "uuid"] | str = "label"  # how root= names the root fs; or a device, e.g. /dev/xvda1

    @field_validator("profile")
    @classmethod
    def _profile(cls, value: str) -> str:
        if not PROFILE_RE.fullmatch(value):
            raise ValueError(f"{_short(value)} is not a kernel profile name (kernels/NAME.toml: 1-64 letters, "
                             "digits, '.', '_' and '-')")
        return value

    @field_validator("cmdline")
    @classmethod
    def _cmdline(cls, value: str) -> str:
        check_kernel_args(value, "cmdline")
        return value

    @field_validator("root")
    @classmethod
    def _root(cls, value: str) -> str:
        # root= on the kernel line and the first field of fstab: a device path, nothing to split a line on
        if value in ("label", "uuid"):
            return value
        if not re.fullmatch(r"/dev/[A-Za-z0-9_][A-Za-z0-9_./:-]{0,127}", value) or "/.." in value:
            raise ValueError(f"{_short(value)} is not \"label\", \"uuid\" or a device like /dev/xvda1")
        return value


class BootEntry(Model):
    title: str
    kernel: str | None = None  # file name in /boot; default: the profile's kernel
    initrd: str | None = None  # file name in /boot; default: the profile's initrd
    args: str = ""  # appended to the kernel command line of this entry

    @field_validator("title")
    @classmethod
    def _title(cls, value: str) -> str:
        check_title(value)
        return value

    @field_validator("kernel", "initrd")
    @classmethod
    def _file_name(cls, value: str | None) -> str | None:
        if value is not None and (not BOOT_FILE_RE.fullmatch(value) or value in (".", "..")):
            raise ValueError(f"{_short(value)}: give a file name in /boot (letters, digits, '.', '_', '+', '~', '-')")
        return value

    @field_validator("args")
    @classmethod
    def _args(cls, value: str) -> str:
        check_kernel_args(value, "args")
        return value


class Boot(Model):
    default: int = 0
    fallback: int | None = None
    timeout: int = Field(default=1, ge=0, le=3600)  # seconds
    entries: tuple[BootEntry, ...] = (BootEntry(title="{name} ({kernel_version})"),)

    @model_validator(mode="after")
    def _indices(self) -> Boot:
        n = len(self.entries)
        if not n:
            raise ValueError("at least one entry is needed")
        if not 0 <= self.default < n:
            raise ValueError(f"default {self.default} is not an entry (there are {n})")
        if self.fallback is not None and not 0 <= self.fallback < n:
            raise ValueError(f"fallback {self.fallback} is not an entry (there are {n})")
        if self.fallback is not None and self.fallback == self.default:
            raise ValueError("fallback is the same entry as default")
        return self


class FileCopy(Model):
    src: Path  # relative to the recipe's directory
    dest: str  # absolute path in the image
    mode: str | None = None  # octal, e.g. "0644"

    @field_validator("src")
    @classmethod
    def _src(cls, value: Path) -> Path:
        check_host_path(value)
        return value

    @field_validator("dest")
    @classmethod
    def _dest(cls, value: str) -> str:
        check_image_path(value)
        return value

    @field_validator("mode")
    @classmethod
    def _mode(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"0?[0-7]{3,4}", value):
            raise ValueError(f"{_short(value)} is not an octal mode like 0644")
        return value


def _check_mountpoint(path: str) -> None:
    if not re.fullmatch(r"(/[A-Za-z0-9._@+-]+)+", path) or "/." in path:
        raise ValueError(f"mountpoint {path!r} must be an absolute path like /var/lib/postgresql")


class DataVolume(Model):
    """A persistent EBS volume (seed 000): mounted by LABEL, `nofail`, before the services that use it."""

    name: str  # names the emitted image <image>.<name>.img
    mountpoint: str
    device: str  # the EC2 device it is attached as, e.g. /dev/sdh
    size: Size
    type: FsType = FsType.EXT4
    label: str
    services: tuple[str, ...] = ()  # systemd units ordered after (and requiring) the mount
    delete_on_termination: bool = False
    device_timeout: int = Field(default=30, ge=1, le=3600)  # seconds to wait for the volume at boot
    initial: Literal["empty", "copy"] = "empty"  # copy: the image's files under mountpoint go to the volume
    image: bool = True  # emit the volume as its own raw image beside the disk image

    @model_validator(mode="after")
    def _check(self) -> DataVolume:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}", self.name):
            raise ValueError(f"name {self.name!r}: use 1-32 letters, digits, '_' and '-'")
        _check_mountpoint(self.mountpoint)
        if not re.fullmatch(r"/dev/(sd[c-z]|xvd[c-z])", self.device):
            raise ValueError(f"device {self.device!r} is not an EC2 data volume device (/dev/sdc ... /dev/sdz; "
                             "sda is the root volume, sdb the instance store)")
        Filesystem(type=self.type, label=self.label)  # the same label rules as any filesystem
        for unit in self.services:
            if not re.fullmatch(r"[A-Za-z0-9:_.@\\-]+\.(service|socket|mount|timer|target)", unit):
                raise ValueError(f"services {unit!r} is not a systemd unit name like postgresql.service")
        return self


class LogicalVolume(Model):
    """An LVM logical volume: a filesystem with a mount point, swap, or (mountpoint "/") the root filesystem."""

    name: str
    mountpoint: str | None = None  # "/": the root filesystem, described by [filesystems.root]
    type: str | None = None  # ext2, ext3, ext4, xfs, btrfs or swap; root: from [filesystems.root]
    label: str | None = None
    size: Size | None = None  # None: the rest of the volume group (one volume at most)

    @model_validator(mode="after")
    def _check(self) -> LogicalVolume:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_+.]{0,63}", self.name) or self.name in ("snapshot", "pvmove"):
            raise ValueError(f"name {self.name!r} is not a logical volume name (letters, digits, _ + .)")
        if self.mountpoint == "/":
            if self.type is not None or self.label is not None:
                raise ValueError("type and label of the root volume come from [filesystems.root]: leave them out")
            return self
        kinds = [t.value for t in FsType] + ["swap"]
        if self.type is None:
            raise ValueError(f"type is required ({', '.join(kinds)}; the root volume has mountpoint = \"/\")")
        if self.type not in kinds:
            raise ValueError(f"type {self.type!r} is not one of {', '.join(kinds)}")
        if self.type == "swap" and self.mountpoint is not None:
            raise ValueError("mountpoint must be left out for swap")
        if self.type != "swap":
            if self.mountpoint is None:
                raise ValueError("mountpoint is required (e.g. \"/var\")")
            _check_mountpoint(self.mountpoint)
        if self.label is None:
            raise ValueError("label is required")
        Filesystem(type=FsType(self.type) if self.type != "swap" else FsType.EXT4, label=self.label)
        return self


class Lvm(Model):
    """Seed 001/002: /boot on the first partition, an LVM physical volume on the rest."""

    vg: str = "vg0"
    volumes: tuple[LogicalVolume, ...]

    @model_validator(mode="after")
    def _check(self) -> Lvm:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_+.]{0,63}", self.vg):
            raise ValueError(f"vg {self.vg!r} is not a volume group name (letters, digits, _ + .)")
        names = [v.name for v in self.volumes]
        if len(set(names)) != len(names):
            raise ValueError(f"volumes hold two logical volumes of one name ({', '.join(names)})")
        if [v.mountpoint for v in self.volumes].count("/") != 1:
            raise ValueError("volumes need exactly one logical volume with mountpoint = \"/\"")
        if sum(v.size is None for v in self.volumes) > 1:
            raise ValueError("volumes may leave out size for one logical volume only (it takes the rest)")
        return self


class Recipe(Model):
    name: str
    description: str = ""
    arch: Arch = Arch.X86_64
    size: ImageSize  # bytes, or "auto": the smallest whole-GiB disk holding the tree plus `free`
    free: Free = 0.0  # headroom for size = "auto": bytes, or a fraction of the tree (from "20%")
    layout: Layout
    hostname: str = "localhost"
    packages: tuple[PackageName, ...] = ()  # extra packages for a bootstrap
    rootfs: RootfsSource
    filesystems: Filesystems = Filesystems()
    kernel: Kernel
    boot: Boot = Boot()
    files: tuple[FileCopy, ...] = ()
    volumes: tuple[DataVolume, ...] = ()  # persistent EBS data volumes (imagekit/rootfs/volumes.py)
    lvm: Lvm | None = None  # /boot partition + LVM on the rest (imagekit/image/lvm.py)
    reproducible: bool = False  # same inputs, same bytes (needs epoch, rootfs.snapshot or SOURCE_DATE_EPOCH)
    epoch: int | None = Field(default=None, ge=0, le=2**31 - 1)  # what ext2's 32-bit times hold (2038-01-19)
    # Where the recipe came from (set by load_recipe, not by the TOML).
    path: Path = Path("recipe.toml")
    sha256: str = ""
    kernels_dir: Path | None = None  # --kernels-dir: looked in first (recipe/kernel_profiles.py)

    @model_validator(mode="after")
    def _check(self) -> Recipe:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", self.name):
            raise ValueError(f"name {self.name!r}: use letters, digits, '.', '_' and '-'")
        if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", self.hostname):
            raise ValueError(f"hostname {_short(self.hostname)} is not a host name (RFC 1123: 1-63 of a-z 0-9 -, "
                             "no '-' at either end)")
        src = self.rootfs
        if isinstance(src, Bootstrap) and src.tool == "debootstrap":
            plain = next((p for p in self.packages if not PACKAGE_RE.fullmatch(p)), None)
            if plain is not None:
                raise ValueError(f"packages {plain!r}: debootstrap takes plain package names (no :arch, "
                                 "=version or /release; mmdebstrap does)")
        return self

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def separate_boot(self) -> bool:
        return self.filesystems.boot is not None

    @property
    def boot_fs(self) -> Filesystem:
        """The filesystem the bootloader (PV-GRUB or GRUB 2) reads its config and the kernel from."""
        return self.filesystems.boot or self.filesystems.root

    @property
    def esp(self) -> Esp | None:
        """The EFI system partition of a UEFI layout (the recipe's, or the default); None otherwise."""
        return (self.filesystems.esp or Esp()) if self.layout.spec.esp else None

    def with_layout(self, layout: Layout) -> Recipe:
        """The same recipe with another layout (`imagekit build --layout`), checked like the recipe key."""
        return self.with_build_options(layout=layout)

    def with_build_options(self, *, layout: Layout | None = None, arch: Arch | None = None) -> Recipe:
        """The same recipe with `imagekit build --layout` and/or `--arch`, checked as the recipe's keys are.

        A recipe naming its architecture's default kernel profile (recipe/arch.py) gets the new one's: a release
        builds both architectures from one recipe. A recipe naming another profile keeps it, and the build
        refuses it if it is for the other architecture (`kernel.profile`)."""
        update: dict[str, Any] = {}
        if layout is not None:
            update["layout"] = layout
        if arch is not None and arch is not self.arch:
            if ARCHES[arch].refused:
                raise RecipeError(self.path, "arch", ARCHES[arch].refused)
            update["arch"] = arch
            if self.kernel.profile == ARCHES[self.arch].profile:
                update["kernel"] = self.kernel.model_copy(update={"profile": ARCHES[arch].profile})
        changed = self.model_copy(update=update)
        check_layout(changed)
        check_storage(changed)
        return changed


def _key_part(part: object) -> str:
    """A key as the recipe spells it, escaped when it is not a plain word (a TOML key can hold anything)."""
    text = str(part)
    return text if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", text) else _short(text)


def one_line(text: str) -> str:
    """The message with any control character escaped: an error is one line whatever the recipe held."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def describe(err: Mapping[str, Any]) -> tuple[str, str]:
    """(key, message) for one pydantic error, in imagekit's words."""
    loc = [_key_part(p) for p in err["loc"] if not str(p).startswith(("function-after", "function-before"))]
    # drop discriminator tags pydantic inserts, e.g. ('rootfs', 'bootstrap', 'suite')
    if len(loc) >= 2 and loc[0] == "rootfs" and loc[1] in ("bootstrap", "tarball", "directory"):
        loc = [loc[0], *loc[2:]]
    key = ".".join(loc) or "(top level)"
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind == "extra_forbidden":
        return key, "unknown key"
    if kind == "missing":
        return key, "required key is missing"
    if kind in ("enum", "literal_error"):
        expected = str(ctx.get("expected", "")).replace(" or ", ", ").replace(chr(39), "")
        return key, f"{_short(value)} is not one of {expected}"
    if kind == "union_tag_invalid":
        return key + ".source", f"{_short(ctx.get('tag'))} is not one of bootstrap, tarball, directory"
    if kind == "union_tag_not_found":
        return key + ".source", "required key is missing (bootstrap, tarball or directory)"
    if kind == "value_error":
        return key, str(ctx.get("error", err["msg"]))
    return key, f"{err['msg'].lower()} (got {_short(value)})"


def _locate_model_error(key: str, message: str) -> tuple[str, str]:
    """Model-level checks report on their model; point at the field they name when they name one."""
    first = message.split(" ", 1)[0]
    if key.rsplit(".", 1)[-1] == first:  # a field's own validator: the key names it already
        return key, message
    if first in {"name", "hostname", "label", "default", "fallback", "dest", "mode", "size",
                 "mountpoint", "device", "services", "type", "vg", "volumes", "variant", "packages", "mirror"}:
        key = f"{key}.{first}" if key != "(top level)" else first
    return key, message


def parse_recipe(data: dict[str, Any], path: Path) -> Recipe:
    try:
        recipe = Recipe.model_validate({**data, "path": path})
    except ValidationError as exc:
        key, message = describe(exc.errors()[0])
        if exc.errors()[0]["type"] == "value_error":
            key, message = _locate_model_error(key, message)
        raise RecipeError(path, one_line(key), one_line(message)) from None
    except RecursionError:
        raise RecipeError(path, None, "nested too deeply to validate") from None
    if ARCHES[recipe.arch].refused:
        raise RecipeError(path, "arch", ARCHES[recipe.arch].refused)
    return recipe


def check_layout(recipe: Recipe) -> None:
    """Rules that span keys: the layouts the arch boots, where a separate /boot may go, which filesystems
    PV-GRUB reads, the ESP."""
    refusal = layout_refusal(recipe.arch, recipe.layout.value)
    if refusal is not None:
        raise RecipeError(recipe.path, "layout", refusal)
    spec = recipe.layout.spec
    if recipe.separate_boot and not spec.partitioned:
        raise RecipeError(recipe.path, "filesystems.boot",
                          "a separate /boot needs a partition table: use layout = \"hd00\" (PV) or an HVM layout")
    if recipe.filesystems.esp is not None and not spec.esp:
        having = " and ".join(s.layout.value for s in LAYOUTS.values() if s.esp)
        raise RecipeError(recipe.path, "filesystems.esp", f"layout {recipe.layout.value} has no EFI system "
                          f"partition ({having} have one)")
    boot = recipe.boot_fs
    key = "filesystems.boot.type" if recipe.separate_boot else "filesystems.root.type"
    if spec.bootloader is Bootloader.PVGRUB and boot.type not in PVGRUB_BOOT_FS:
        names = ", ".join(t.value for t in PVGRUB_BOOT_FS)
        raise RecipeError(recipe.path, key, f"PV-GRUB cannot read /boot from {boot.type.value} (it reads {names})")
    if recipe.separate_boot and recipe.filesystems.boot and recipe.filesystems.boot.size is None:
        raise RecipeError(recipe.path, "filesystems.boot.size", "required key is missing (e.g. \"256M\")")


def check_storage(recipe: Recipe) -> None:
    """Rules across data volumes, logical volumes and filesystems: LVM needs /boot outside it (seed 002)."""
    labels = {recipe.filesystems.root.label: "filesystems.root.label"}
    if recipe.filesystems.boot:
        labels[recipe.filesystems.boot.label] = "filesystems.boot.label"
    mounts = {"/": "filesystems.root", "/boot": "filesystems.boot"}
    lvm = recipe.lvm
    if lvm is not None:
        if not recipe.separate_boot or not recipe.layout.spec.lvm:
            allowed = " or ".join(f"layout = \"{s.layout}\"" for s in LAYOUTS.values() if s.lvm)
            raise RecipeError(recipe.path, "lvm", f"LVM needs {allowed} and a separate /boot partition "
                              "([filesystems.boot]): PV-GRUB cannot read logical volumes (seed 002)")
        for n, lv in enumerate(lvm.volumes):
            key = f"lvm.volumes.{n}"
            if lv.mountpoint not in (None, "/"):
                if lv.mountpoint in mounts:
                    raise RecipeError(recipe.path, f"{key}.mountpoint", f"{lv.mountpoint} is mounted twice")
                mounts[lv.mountpoint] = key
            if lv.label is not None:
                if lv.label in labels:
                    raise RecipeError(recipe.path, f"{key}.label", f"label {lv.label!r} is also {labels[lv.label]}")
                labels[lv.label] = f"{key}.label"
        if not isinstance(recipe.size, int):
            raise RecipeError(recipe.path, "size", "\"auto\" is not supported with [lvm]: give the disk's size")
        fixed = sum(lv.size or 0 for lv in lvm.volumes)
        room = recipe.size - (recipe.filesystems.boot.size or 0 if recipe.filesystems.boot else 0) - 8 * MiB
        if fixed > room:
            raise RecipeError(recipe.path, "size", f"the logical volumes need {fixed >> 20} MiB, the physical "
                              f"volume has about {room >> 20} MiB")
    devices: dict[str, str] = {}
    for n, vol in enumerate(recipe.volumes):
        key = f"volumes.{n}"
        if vol.mountpoint in mounts:
            raise RecipeError(recipe.path, f"{key}.mountpoint", f"{vol.mountpoint} is mounted twice")
        mounts[vol.mountpoint] = key
        if vol.label in labels:
            raise RecipeError(recipe.path, f"{key}.label", f"label {vol.label!r} is also {labels[vol.label]}")
        labels[vol.label] = f"{key}.label"
        dev = vol.device.replace("/dev/xvd", "/dev/sd")
        if dev in devices:
            raise RecipeError(recipe.path, f"{key}.device", f"{vol.device} is also {devices[dev]}.device")
        devices[dev] = key
    names = [v.name for v in recipe.volumes]
    if len(set(names)) != len(names):
        raise RecipeError(recipe.path, "volumes", f"two data volumes share a name ({', '.join(names)})")
