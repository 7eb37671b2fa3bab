"""The direct loader: no bootloader; the entry PV-GRUB would pick, its kernel and initrd given to QEMU.

imagekit's own menu.lst parser (the one lint uses) picks the entry: the default if its kernel file
exists on the boot filesystem, else each fallback in turn. The kernel and initrd are copied out of
the overlay with libguestfs. EC2 device names on the command line (/dev/sda1, /dev/xvda1) cannot
exist under QEMU: they are mapped to the virtio disk and the mapping is reported.
"""

from __future__ import annotations

import gzip
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagekit.boot.guest import Disk, is_file
from imagekit.boot.probe import SERIAL_ARG
from imagekit.bootloader.menulst import Entry, MenuLstError, parse_menu_lst, split_device
from imagekit.util.errors import UsageError

EC2_DEVICE = re.compile(r"^/dev/(?:sd|xvd)(?P<letter>[a-z])(?P<part>\d*)$")


@dataclass(frozen=True)
class DirectBoot:
    entry: Entry
    index: int
    fallback: bool
    kernel: Path
    initrd: Path | None
    append: str
    mappings: tuple[str, ...]  # "root=/dev/xvda1 -> root=/dev/vda", for the report


def entry_loadable(g: Any, disk: Disk, entry: Entry) -> bool:
    """Could PV-GRUB load this entry's kernel (and initrd) from the disk?"""
    if not entry.kernel:
        return False
    device, path = split_device(entry.kernel)
    root = device or entry.root
    if root is not None and (entry.root_partition is not None) != disk.partitioned:
        return False  # (hd0) on a partitioned disk, or (hd0,N) on a partitionless one
    if root is not None and entry.root_partition not in (None, 0):
        return False  # only the boot filesystem (first partition) is readable here
    files = [path] + ([split_device(entry.initrd)[1]] if entry.initrd else [])
    return all(is_file(g, disk.boot_path(f)) for f in files)


def map_devices(args: str, disk: Disk) -> tuple[str, tuple[str, ...]]:
    """The kernel arguments with EC2 block device names mapped to QEMU's virtio disk."""
    out, notes = [], []
    for word in args.split():
        key, eq, value = word.partition("=")
        m = EC2_DEVICE.match(value) if eq and key in ("root", "resume") else None
        if m:
            part = m["part"] if disk.partitioned else ""  # a partitionless image is attached as a partition
            mapped = f"{key}=/dev/vd{m['letter']}{part}"
            notes.append(f"{word} -> {mapped} (EC2 device name; QEMU's disk is virtio)")
            word = mapped
        out.append(word)
    return " ".join(out), tuple(notes)


def prepare_direct(g: Any, disk: Disk, menu_text: str, workdir: Path) -> DirectBoot:
    """Pick the entry, copy its kernel and initrd out, build the command line."""
    try:
        menu = parse_menu_lst(menu_text)
    except MenuLstError as exc:
        raise UsageError(f"menu.lst: {exc}") from None
    choice = menu.pick(lambda e: entry_loadable(g, disk, e))
    if choice is None:
        raise UsageError("menu.lst: no entry can be loaded (every kernel file is missing)",
                         hint="the PV-GRUB loader shows what GRUB itself says: drop --loader direct")
    entry = choice.entry
    assert entry.kernel is not None
    kernel = workdir / "vmlinuz"
    g.download(disk.boot_path(split_device(entry.kernel)[1]), str(kernel))
    initrd = None
    if entry.initrd:
        initrd = workdir / "initrd.img"
        g.download(disk.boot_path(split_device(entry.initrd)[1]), str(initrd))
    args, notes = map_devices(entry.kernel_args, disk)
    if SERIAL_ARG not in args.split():
        args = f"{SERIAL_ARG} {args}".strip()
    if gunzipped := gunzip_kernel(kernel):
        kernel, notes = gunzipped, (*notes, f"{entry.kernel} gunzipped as PV-GRUB's GRUB 0.97 reads it")
    return DirectBoot(entry, choice.index, choice.fallback, kernel, initrd, args, notes)


def gunzip_kernel(kernel: Path) -> Path | None:
    """A gzipped kernel (the PV-safe vmlinux-gz: QEMU's -kernel does not gunzip) as its ELF beside it; None if
    the file is not gzipped."""
    with open(kernel, "rb") as f:
        if f.read(2) != b"\x1f\x8b":
            return None
    out = kernel.with_name("vmlinux")
    with gzip.open(kernel, "rb") as src, open(out, "wb") as dest:
        shutil.copyfileobj(src, dest, 1 << 20)
    return out
