"""Rules about menu.lst: where PV-GRUB finds it, whether it parses, whether its entries can load.

PV-GRUB 1.04+ looks in order at (hd0)/boot/grub, (hd0,0)/boot/grub, (hd0,0)/grub, (hd0,1)/boot/grub
... (hd0,3)/grub; 1.03 and earlier look in one place only: (hd0)/boot/grub with the hd0 AKI,
(hd0,0)/boot/grub with the hd00 AKI (REFERENCE, seed 002).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from imagekit.bootloader.menulst import Entry, MenuLst, MenuLstError, parse_menu_lst, split_device
from imagekit.lint.disk import grub_device
from imagekit.lint.findings import Finding, finding, unreadable
from imagekit.lint.view import ImageView, UnreadableFile


@dataclass(frozen=True)
class Location:
    partition: int | None  # None: the whole disk (hd0)
    path: str  # inside that filesystem

    @property
    def grub(self) -> str:
        return grub_device(self.partition) + self.path


@dataclass(frozen=True)
class BootEntry:
    """A menu.lst entry with its files resolved to a filesystem of the image."""

    index: int
    entry: Entry
    device: str | None  # the filesystem its root names (None: no such filesystem)
    kernel: str | None  # path on that filesystem
    initrd: str | None
    kernel_exists: bool
    initrd_exists: bool


@dataclass(frozen=True)
class BootMenu:
    location: Location
    device: str
    menu: MenuLst
    entries: tuple[BootEntry, ...]
    chosen: BootEntry | None  # what PV-GRUB boots (default, else the fallbacks that load)


def search_order(view: ImageView) -> list[Location]:
    """PV-GRUB 1.04+'s search order, restricted to the devices this image has."""
    if view.parttype is None:
        return [Location(None, "/boot/grub/menu.lst")]
    order = []
    for n in range(1, 5):
        order += [Location(n, "/boot/grub/menu.lst"), Location(n, "/grub/menu.lst")]
    return order


def legacy_location(view: ImageView) -> Location:
    """The one place PV-GRUB 1.03 looks: (hd0)/boot/grub (hd0 AKI) or (hd0,0)/boot/grub (hd00 AKI)."""
    return Location(None if view.parttype is None else 1, "/boot/grub/menu.lst")


def find_menu(view: ImageView) -> tuple[Location, str] | None:
    """The first menu.lst in PV-GRUB's order; UnreadableFile (with the location) when one is there but
    cannot be read (a symlink loop): PV-GRUB stops there too."""
    for loc in search_order(view):
        fs = view.filesystem_on_partition(loc.partition)
        if fs is not None and view.exists(fs.device, loc.path):
            return loc, fs.device
    return None


def _file_state(view: ImageView, device: str | None, path: str | None, what: str, title: str,
                problems: list[Finding]) -> bool | None:
    """Does `path` (from menu.lst: hostile input) name a file? True, False (missing), or None: the path is
    bad or unreadable, and a finding says so."""
    if device is None or path is None:
        return False
    if not path.startswith("/"):
        problems.append(finding("menulst-path", f"{title} {what} {path}", f"{path!r} is not an absolute path: "
                                "GRUB opens it on no filesystem", f"write the {what} as /boot/... or (hd0,0)/..."))
        return None
    try:
        return view.exists(device, path)
    except UnreadableFile as exc:
        problems.append(unreadable(exc, f"{title} {what} {path}"))
        return None


def _resolve(view: ImageView, index: int, entry: Entry, default_dev: str) -> tuple[BootEntry, list[Finding]]:
    problems: list[Finding] = []
    device: str | None = default_dev
    if entry.root is not None:
        part = entry.root_partition
        fs = view.filesystem_on_partition(None if part is None else part + 1)
        device = fs.device if fs else None

    def locate(path: str | None) -> tuple[str | None, str | None]:
        if path is None:
            return None, None
        dev_name, inner = split_device(path)
        if dev_name is not None:
            part = Entry("", root=dev_name).root_partition
            fs = view.filesystem_on_partition(None if part is None else part + 1)
            return (fs.device if fs else None), inner
        return device, inner

    kdev, kpath = locate(entry.kernel)
    idev, ipath = locate(entry.initrd)
    title = f"entry {index} ({entry.title})"
    kernel = _file_state(view, kdev, kpath, "kernel", title, problems)
    initrd = _file_state(view, idev, ipath, "initrd", title, problems)
    kernel_ok, initrd_ok = kernel is True, initrd is True
    if entry.kernel is None:
        problems.append(finding("menulst-kernel-missing", title, "the entry has no kernel line",
                                "add `kernel /boot/vmlinuz-VERSION root=... console=hvc0`"))
    elif kernel is False:
        problems.append(finding("menulst-kernel-missing", f"{title} kernel {entry.kernel}",
                                f"{entry.root or grub_device(None)}{kpath} does not exist",
                                "point the kernel line at a file on the boot filesystem"))
    if entry.initrd is not None and initrd is False:
        problems.append(finding("menulst-initrd-missing", f"{title} initrd {entry.initrd}",
                                f"{entry.root or grub_device(None)}{ipath} does not exist",
                                "fix the initrd line (or drop it for a kernel that needs none)"))
    return BootEntry(index, entry, kdev, kpath, ipath, kernel_ok, initrd_ok), problems


def _check_root(view: ImageView, index: int, entry: Entry) -> Iterator[Finding]:
    if entry.root is None:
        return
    title = f"entry {index} ({entry.title}) root {entry.root}"
    if not entry.root.startswith("(hd0"):
        yield finding("menulst-root", title, "PV-GRUB sees one disk, (hd0)", "use root (hd0) or (hd0,0)")
        return
    part = entry.root_partition
    if view.parttype is None and part is not None:
        yield finding("menulst-root", title, "the image has no partition table, so there is no "
                      f"{entry.root}: the hd0 AKI needs root (hd0)", "write `root (hd0)`")
    elif view.parttype is not None and part is None:
        yield finding("menulst-root", title, "the image is partitioned: (hd0) is the raw disk, "
                      "not a filesystem", "write `root (hd0,0)` (the first partition) and use the hd00 AKI")
    elif part is not None and view.filesystem_on_partition(part + 1) is None:
        yield finding("menulst-root", title, f"there is no filesystem on partition {part + 1}",
                      "root (hd0,N) counts partitions from 0")


def check_menu(view: ImageView) -> tuple[list[Finding], BootMenu | None]:
    legacy = legacy_location(view)
    try:
        found = find_menu(view)
    except UnreadableFile as exc:
        return [unreadable(exc, f"menu.lst {exc.device}:{exc.path}")], None
    if found is None:
        return [finding("menulst-missing", legacy.grub, "no menu.lst where PV-GRUB looks "
                        f"({', '.join(loc.grub for loc in search_order(view)[:3])} ...)",
                        "write /boot/grub/menu.lst on the first partition (or the whole-disk filesystem)")], None
    location, device = found
    findings: list[Finding] = []
    if location != legacy:
        findings.append(finding(
            "menulst-location", location.grub,
            f"menu.lst is at {location.grub}; PV-GRUB 1.03 ({'hd0' if view.parttype is None else 'hd00'} AKI) "
            f"only reads {legacy.grub}",
            "use a PV-GRUB 1.05 hd0 AKI, or put menu.lst at /boot/grub/menu.lst of the first partition "
            "(a /boot partition: /boot/boot/grub/menu.lst in the running system, seed 002)"))
    try:
        text = view.read_text(device, location.path) or ""
    except UnreadableFile as exc:
        findings.append(unreadable(exc, location.grub))
        return findings, None
    try:
        menu = parse_menu_lst(text)
    except MenuLstError as exc:
        findings.append(finding("menulst-parse", location.grub, str(exc), "fix the line GRUB would refuse"))
        return findings, None
    if not menu.entries:
        findings.append(finding("menulst-no-entries", location.grub, "no `title` entries: nothing to boot",
                                "add an entry: title, root, kernel, initrd"))
        return findings, None
    n = len(menu.entries)
    if not 0 <= menu.default < n:
        findings.append(finding("menulst-default", location.grub, f"default {menu.default} but the entries "
                                f"are 0..{n - 1}", "default counts entries from 0"))
    for fb in menu.fallback:
        if not 0 <= fb < n:
            findings.append(finding("menulst-fallback", location.grub, f"fallback {fb} but the entries are "
                                    f"0..{n - 1}", "fallback counts entries from 0"))
    if not menu.fallback:
        why = "there is only one kernel entry" if n == 1 else "no fallback line"
        findings.append(finding("menulst-no-fallback", location.grub, f"{why}: if the kernel cannot be "
                                "loaded PV-GRUB stops at its menu", "add a second entry (the previous kernel) "
                                "and `fallback 1` (seed 002)"))
    entries = []
    for i, entry in enumerate(menu.entries):
        findings += _check_root(view, i, entry)
        resolved, problems = _resolve(view, i, entry, device)
        entries.append(resolved)
        findings += problems
    choice = menu.pick(lambda e: entries[menu.entries.index(e)].kernel_exists)
    chosen = entries[choice.index] if choice else None
    if chosen is None:
        findings.append(finding("menulst-none-bootable", location.grub, "neither the default entry nor a "
                                "fallback can be loaded: PV-GRUB will wait at its menu (a hang)",
                                "fix the kernel paths"))
    return findings, BootMenu(location, device, menu, tuple(entries), chosen)
