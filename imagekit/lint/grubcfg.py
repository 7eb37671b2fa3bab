"""Rules about an HVM image's GRUB 2: its grub.cfg, the files its entries load, and the ESP.

GRUB 2 (in the MBR gap or BIOS boot partition for legacy BIOS, `EFI/BOOT/BOOTX64.EFI` on the ESP for
UEFI) reads `/boot/grub/grub.cfg` (`/grub/grub.cfg` on a separate /boot). Each entry finds its
filesystem with `search` (by UUID or label) or `set root=`, then loads `linux` and `initrd` from it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from imagekit.bootloader.grubcfg import GrubCfg, GrubCfgError, GrubEntry, parse_grub_cfg
from imagekit.kernel.config import Target
from imagekit.lint.findings import Finding, finding, unreadable
from imagekit.lint.kernel import KernelFiles
from imagekit.lint.system import ESP_GUID, resolve
from imagekit.lint.view import Filesystem, ImageView, UnreadableFile

CFG_PATHS = ("/boot/grub/grub.cfg", "/grub/grub.cfg")
GRUB_ROOT = re.compile(r"^\(?hd[0-9]{1,3},(?:gpt|msdos)?([0-9]{1,3})\)?$")  # ASCII, short: int() is safe
NVME_TIMEOUT = "nvme_core.io_timeout"


@dataclass(frozen=True)
class GrubMenu:
    device: str  # the filesystem holding grub.cfg
    path: str
    cfg: GrubCfg

    @property
    def where(self) -> str:
        return f"{self.device}:{self.path}"


@dataclass(frozen=True)
class LoadedEntry:
    entry: GrubEntry
    device: str | None  # the filesystem the entry loads from (None: its search finds nothing)
    kernel_exists: bool


def find_grub_cfg(view: ImageView) -> tuple[GrubMenu | None, list[Finding]]:
    for fs in _readable(view):
        for path in CFG_PATHS:
            try:
                text = view.read_text(fs.device, path)
            except UnreadableFile as exc:
                return None, [unreadable(exc, f"grub.cfg {exc.device}:{exc.path}")]
            if text is None:
                continue
            try:
                return GrubMenu(fs.device, path, parse_grub_cfg(text)), []
            except GrubCfgError as exc:
                return None, [finding("grubcfg-parse", f"{fs.device}:{path}", str(exc), "fix the syntax")]
    return None, []


def _readable(view: ImageView) -> list[Filesystem]:
    return [f for f in view.filesystems if f.type not in ("swap", "unknown", "vfat")]


def entry_device(view: ImageView, menu: GrubMenu, entry: GrubEntry) -> str | None:
    """The filesystem an entry loads its kernel from, as GRUB would find it."""
    search = entry.search or menu.cfg.search
    if search is not None and entry.root is None:
        if search.kind == "FILE":
            return next((f.device for f in _readable(view) if _exists(view, f.device, search.value, [])), None)
        fs = resolve(view, str(search))
        return fs.device if fs else None
    if entry.root is not None and (m := GRUB_ROOT.match(entry.root.strip("'\""))):
        fs = view.filesystem_on_partition(int(m.group(1)))
        return fs.device if fs else None
    return menu.device


def check_grub_cfg(view: ImageView, menu: GrubMenu, serial: bool = True) -> tuple[list[Finding], list[LoadedEntry]]:
    """grub.cfg's own findings and the entries it loads. `serial`: the architecture's GRUB must drive the
    serial port itself (x86: `serial` + `terminal_output serial`); arm64-efi has no com0 and keeps the
    firmware's console, which is the serial port on Graviton (recipe/arch.py grub_serial)."""
    findings: list[Finding] = []
    cfg = menu.cfg
    if not cfg.entries:
        findings.append(finding("grubcfg-no-entries", menu.where, "grub.cfg has no menuentry",
                                "add one menuentry per kernel"))
        return findings, []
    for name, refs in (("default", [cfg.default] if cfg.default else []), ("fallback", cfg.fallback)):
        for ref in refs:
            if "$" not in ref and cfg.pick(ref) is None:
                findings.append(finding(f"grubcfg-{name}", f"{menu.where} set {name}={ref}",
                                        f"{name} {ref} names no entry ({len(cfg.top_level)} in the menu)",
                                        f"set {name} to an entry's index or title"))
    if serial and not (cfg.serial and cfg.terminal_serial):
        findings.append(finding("grubcfg-no-serial", menu.where, "GRUB does not write to the serial port: "
                                "its menu and errors never reach the EC2 serial console or get-console-output",
                                "add `serial --unit=0 --speed=115200` and `terminal_output serial console`"))
    loaded = []
    for entry in cfg.entries:
        device = entry_device(view, menu, entry)
        obj = f"{menu.where} entry {entry.title!r}"
        search = entry.search or cfg.search
        if device is None:
            how = f"search {search}" if search and entry.root is None else f"root {entry.root}"
            findings.append(finding("grubcfg-search-unresolved", obj, f"{how} finds no filesystem in the image: "
                                    "GRUB cannot load this entry", "search by the boot filesystem's UUID or label"))
            loaded.append(LoadedEntry(entry, None, False))
            continue
        exists = entry.linux is not None and _exists(view, device, entry.linux, findings, f"{obj} linux")
        if entry.linux is None:
            findings.append(finding("grubcfg-kernel-missing", obj, "the entry has no linux line", "add one"))
        elif exists is False:
            findings.append(finding("grubcfg-kernel-missing", f"{obj} linux {entry.linux}",
                                    f"{entry.linux} does not exist on {device}",
                                    "paths are relative to the filesystem the entry searches"))
        for initrd in entry.initrds:
            if _exists(view, device, initrd, findings, f"{obj} initrd") is False:
                findings.append(finding("grubcfg-initrd-missing", f"{obj} initrd {initrd}",
                                        f"{initrd} does not exist on {device}", "fix the path or rebuild the initrd"))
        loaded.append(LoadedEntry(entry, device, exists is True))
    return findings, loaded


def _exists(view: ImageView, device: str, path: str, findings: list[Finding], obj: str = "") -> bool | None:
    """Is there a file at `path` (from grub.cfg: hostile input)? None, with a finding, when it cannot be told
    (a path GRUB would read on another device, a symlink loop)."""
    try:
        return view.exists(device, path)
    except UnreadableFile as exc:
        findings.append(unreadable(exc, f"{obj} {path}".strip()))
        return None


def entry_kernels(loaded: list[LoadedEntry]) -> list[KernelFiles]:
    kernels: list[KernelFiles] = []
    for item in loaded:
        e = item.entry
        if not item.kernel_exists or item.device is None or e.linux is None:
            continue
        if any((k.device, k.path) == (item.device, e.linux) for k in kernels):
            continue
        initrd = e.initrds[0] if e.initrds else None
        kernels.append(KernelFiles(item.device, e.linux, initrd, f"{item.device}:{e.linux}"))
    return kernels


def check_esp(view: ImageView) -> Iterator[Finding]:
    """UEFI firmware must read the ESP: FAT32 (FAT12/16 only on small removable media)."""
    for p in view.partitions:
        if not (p.gpt_type == ESP_GUID or p.mbr_id == 0xEF):
            continue
        obj = f"{p.device} (EFI system partition)"
        fs = view.filesystem_on_partition(p.number)
        boot_sector = view.disk_bytes(p.start, 512)
        if fs is None or fs.type != "vfat":
            yield finding("esp-not-fat32", obj, f"the ESP holds {fs.type if fs else 'no filesystem'}, not FAT32",
                          "mkfs.fat -F 32 on the ESP")
        elif boot_sector[82:90] != b"FAT32   ":
            kind = boot_sector[54:62].decode("ascii", "replace").strip() or "FAT12/16"
            yield finding("esp-not-fat32", obj, f"the ESP is {kind}, not FAT32: UEFI requires FAT32 on a "
                          "fixed disk", "mkfs.fat -F 32 (the ESP needs >= 33 MiB for FAT32 with 512-byte sectors)")


def check_nitro_cmdline(where: str, args: str, target: Target) -> Iterator[Finding]:
    """Nitro presents EBS as NVMe; a timed-out NVMe I/O makes the root read-only unless the timeout is raised."""
    if target is not Target.NITRO:
        return
    if not any(w.startswith(f"{NVME_TIMEOUT}=") for w in args.split()):
        yield finding("cmdline-nvme-timeout", where, f"no {NVME_TIMEOUT}= on the kernel command line: an EBS "
                      "I/O that outlasts the default 30 s fails and the root filesystem goes read-only",
                      f"add {NVME_TIMEOUT}=4294967295 (as AWS and Debian's cloud images do)")
