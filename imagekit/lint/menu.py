"""Rules about menu.lst as the image view reads it: where it is, whether it parses, the kernels it names.

Whether PV-GRUB finds it and loads an entry (root device, files, kernel) is GRUB 0.97's own answer, the
boot's model: imagekit/lint/pvgrub.py. This module only finds the entries' kernels for the config checks.

PV-GRUB 1.04+ looks in order at (hd0)/boot/grub, (hd0,0)/boot/grub, (hd0,0)/grub, (hd0,1)/boot/grub
... (hd0,3)/grub; 1.03 and earlier look in one place only: (hd0)/boot/grub with the hd0 AKI,
(hd0,0)/boot/grub with the hd00 AKI (REFERENCE, seed 002).
"""

from __future__ import annotations

from dataclasses import dataclass

from imagekit.bootloader.menulst import Entry, MenuLst, MenuLstError, parse_menu_lst, split_device
from imagekit.lint.disk import grub_device
from imagekit.lint.findings import Finding, finding, unreadable
from imagekit.lint.pvgrub import variant_of_table
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
    # whether GRUB 0.97 opens them on the AKI's disk (root device, missing file) is the model's answer:
    # imagekit/lint/pvgrub.py
    return BootEntry(index, entry, kdev, kpath, ipath, kernel_ok, initrd_ok), problems


def check_menu(view: ImageView) -> tuple[list[Finding], BootMenu | None]:
    legacy = legacy_location(view)
    try:
        found = find_menu(view)
    except UnreadableFile as exc:
        return [unreadable(exc, f"menu.lst {exc.device}:{exc.path}")], None
    if found is None:
        return [], None  # menulst-missing: GRUB 0.97's own search for the AKI version (imagekit/lint/pvgrub.py)
    location, device = found
    findings: list[Finding] = []
    if location != legacy:
        findings.append(finding(
            "menulst-location", location.grub,
            f"menu.lst is at {location.grub}; PV-GRUB 1.03 ({variant_of_table(view.parttype) or 'hd00'} AKI) "
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
    if not menu.fallback:
        why = "there is only one kernel entry" if n == 1 else "no fallback line"
        findings.append(finding("menulst-no-fallback", location.grub, f"{why}: if the kernel cannot be "
                                "loaded PV-GRUB stops at its menu", "add a second entry (the previous kernel) "
                                "and `fallback 1` (seed 002)"))
    entries = []
    for i, entry in enumerate(menu.entries):
        resolved, problems = _resolve(view, i, entry, device)
        entries.append(resolved)
        findings += problems
    choice = menu.pick(lambda e: entries[menu.entries.index(e)].kernel_exists)
    chosen = entries[choice.index] if choice else None
    return findings, BootMenu(location, device, menu, tuple(entries), chosen)
