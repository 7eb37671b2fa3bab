"""What differs between two images (or two build manifests): packages, files, boot configuration.

Images are read in this process (diff/native.py, reader "native") or opened read-only in one libguestfs
appliance (reader "guestfs", both disks attached; "auto", the default: native, else libguestfs): every file's sha256
and every path, then the boot configuration (menu.lst, fstab, kernel command line) as the image holds
it. Packages come from the build manifests when both have them, else from each image's dpkg database.
Two manifests compare without opening anything (packages and boot configuration only).

Images are hostile input: each is opened as the format imagekit decides (raw unless --format qcow2,
and a qcow2 only without a backing or data file: appliance.disk_format); files are hashed inside the
appliance (sha256sum streams them), and the text files compared are read only up to MAX_TEXT.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagekit.bootloader.menulst import MenuLstError, parse_menu_lst
from imagekit.manifest import Manifest
from imagekit.util.appliance import DiskFormat, Drive, session
from imagekit.util.errors import UsageError
from imagekit.util.progress import Progress

MAX_TEXT = 32 * 1024 * 1024  # menu.lst, fstab: kilobytes; dpkg's status of a large system: a few MiB


@dataclass
class Side:
    """What one image or manifest says about itself."""

    packages: dict[str, str] = field(default_factory=dict)
    boot: dict[str, str] = field(default_factory=dict)  # "menu.lst", "fstab", "cmdline" -> text
    sums: dict[str, str] | None = None  # path -> sha256 of every regular file (images only)
    paths: set[str] | None = None  # every path (images only)
    sizes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    kind: str  # "package" | "file" | "boot"
    change: str  # "added" | "removed" | "changed"
    name: str
    old: str | None = None
    new: str | None = None

    def line(self) -> str:
        mark = {"added": "+", "removed": "-", "changed": "~"}[self.change]
        detail = ""
        if self.change == "changed" and self.kind != "boot":
            detail = f" {self.old} -> {self.new}"
        elif self.change != "changed" and (self.new or self.old):
            detail = f" {self.new or self.old}"
        return f"{mark} {self.kind} {self.name}{detail}"


def dpkg_status(text: str) -> dict[str, str]:
    out = {}
    for para in text.split("\n\n"):
        fields = dict(re.findall(r"^(Package|Version|Status): (.+)$", para, re.M))
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            out[fields["Package"]] = fields.get("Version", "")
    return out


def from_manifest(manifest: Manifest) -> Side:
    side = Side(packages={p.name: p.version for p in manifest.packages or []})
    if manifest.menu_lst:
        side.boot["menu.lst"] = manifest.menu_lst.text
    if manifest.grub_cfg:  # HVM images
        side.boot["grub.cfg"] = manifest.grub_cfg.text
    if manifest.cmdline:
        side.boot["cmdline"] = manifest.cmdline
    if manifest.fstab:
        side.boot["fstab"] = manifest.fstab
    return side


def cmdline(menu: str) -> str | None:
    try:
        parsed = parse_menu_lst(menu)
    except MenuLstError:
        return None
    choice = parsed.pick()
    return choice.entry.kernel_args if choice else None


def _mount_image(g: Any, disk: str, at: str, image: Path) -> None:
    """Mount the root filesystem of `disk` (a /dev/sdX, from `image`) at `at`, and a separate /boot under it."""
    fss = {d: t for d, t in g.list_filesystems().items() if d.startswith(disk) and t not in ("swap", "unknown")}
    if not fss:
        raise UsageError(f"{image}: no filesystem libguestfs can read (not a disk image?)")
    probe = f"{at}.probe"
    g.mkmountpoint(probe)
    root = boot = None
    for dev in sorted(fss):
        try:
            g.mount_ro(dev, probe)
        except RuntimeError:
            continue
        if g.is_file(f"{probe}/etc/fstab") and root is None:
            root = dev
        elif (g.is_dir(f"{probe}/grub") or g.is_dir(f"{probe}/boot/grub")) and boot is None:
            boot = dev
        g.umount(probe)
    if root is None:
        raise UsageError(f"{image}: no filesystem holds /etc/fstab (not a Linux root?)")
    g.mount_ro(root, at)
    if boot is not None and g.is_dir(f"{at}/boot"):
        g.mount_ro(boot, f"{at}/boot")


def _text(g: Any, path: str, scratch: Path) -> str | None:
    """A regular file's text (symlinks are not followed), streamed out; None when there is none. A file
    over MAX_TEXT is not read: its size stands in for it (a change of size still shows)."""
    if not g.is_file(path):
        return None
    size = int(g.statns(path)["st_size"])
    if size > MAX_TEXT:
        return f"({size} bytes: too large to compare)\n"
    local = scratch / "text"
    g.download(path, str(local))
    try:
        return local.read_text(errors="replace")
    finally:
        local.unlink(missing_ok=True)


def image_path(name: str) -> str:
    """'./etc/motd', 'etc/motd' or '/etc/motd' (as sha256sum and find print them) -> '/etc/motd'."""
    if name == "." or name.startswith("./"):
        name = name[1:]
    return "/" + name.lstrip("/")


def _read_image(g: Any, at: str, manifest: Manifest | None, scratch: Path) -> Side:
    side = from_manifest(manifest) if manifest else Side()
    if not side.packages and (status := _text(g, f"{at}/var/lib/dpkg/status", scratch)) is not None:
        side.packages = dpkg_status(status)
    for rel in ("boot/grub/menu.lst", "boot/boot/grub/menu.lst"):
        if (menu := _text(g, f"{at}/{rel}", scratch)) is not None:
            side.boot["menu.lst"] = menu
            side.boot["cmdline"] = cmdline(menu) or ""
            break
    if (fstab := _text(g, f"{at}/etc/fstab", scratch)) is not None:
        side.boot["fstab"] = fstab
    sums = scratch / "sums"
    g.checksums_out("sha256", at, str(sums))  # sha256sum in the appliance: every file streamed, not copied out
    side.sums = {}
    with open(sums, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            digest, _, path = line.rstrip("\n").partition("  ")
            side.sums[image_path(path)] = digest
    names = scratch / "names"
    g.find0(at, str(names))
    side.paths = {image_path(n.decode(errors="surrogateescape")) for n in names.read_bytes().split(b"\0") if n}
    return side


def _sizes(g: Any, at: str, paths: list[str]) -> dict[str, int]:
    out = {}
    for p in paths:
        try:
            out[p] = int(g.lstatns(f"{at}{p}")["st_size"])
        except RuntimeError:
            continue
    return out


def read_sides_guestfs(images: tuple[Path, Path], formats: list[DiskFormat], manifests: list[Manifest | None],
                       progress: Progress) -> tuple[Side, Side]:
    """Both sides read in one libguestfs appliance (both disks attached, read-only, as `formats`)."""
    a, b = images
    drives = [Drive(p, kind) for p, kind in zip((a, b), formats, strict=True)]
    with session(drives, error=f"diff: libguestfs failed on {a} and {b}",
                 launching=progress.stage("diff", "launch libguestfs")) as g:
        read: list[Side] = []
        with tempfile.TemporaryDirectory(prefix="imagekit-diff-") as tmp:
            for disk, at, path, manifest in (("/dev/sda", "/a", a, manifests[0]), ("/dev/sdb", "/b", b, manifests[1])):
                with progress.stage("diff", f"read {path.name}"):
                    g.mkmountpoint(at)
                    _mount_image(g, disk, at, path)
                    read.append(_read_image(g, at, manifest, Path(tmp)))
        changed = file_changes(read[0], read[1])
        read[0].sizes = _sizes(g, "/a", [c.name for c in changed if c.change != "added"])
        read[1].sizes = _sizes(g, "/b", [c.name for c in changed if c.change != "removed"])
        return read[0], read[1]


def file_changes(a: Side, b: Side) -> list[Change]:
    if a.paths is None or b.paths is None or a.sums is None or b.sums is None:
        return []
    out = [Change("file", "added", p) for p in sorted(b.paths - a.paths)]
    out += [Change("file", "removed", p) for p in sorted(a.paths - b.paths)]
    out += [Change("file", "changed", p) for p in sorted(a.sums.keys() & b.sums.keys()) if a.sums[p] != b.sums[p]]
    return out


def compare(a: Side, b: Side) -> list[Change]:
    changes: list[Change] = []
    for name in sorted(a.packages.keys() | b.packages.keys()):
        old, new = a.packages.get(name), b.packages.get(name)
        if old != new:
            kind = "added" if old is None else "removed" if new is None else "changed"
            changes.append(Change("package", kind, name, old, new))
    for c in file_changes(a, b):
        old = str(a.sizes[c.name]) + " B" if c.name in a.sizes else None
        new = str(b.sizes[c.name]) + " B" if c.name in b.sizes else None
        changes.append(Change("file", c.change, c.name, old, new))
    for key in sorted(a.boot.keys() | b.boot.keys()):
        if a.boot.get(key) != b.boot.get(key):
            changes.append(Change("boot", "changed", key, a.boot.get(key), b.boot.get(key)))
    return changes
