"""What an image view answers: the `ImageView` protocol (lint/view.py's libguestfs reader and lint/native.py's
in-process one both implement it), its partitions and filesystems, and `UnreadableFile`.

Apart from lint/view.py, which opens the readers, so that the native reader imports these without importing back
the module that opens it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# menu.lst, grub.cfg, fstab, a kernel's config-VERSION (~250 KiB), dpkg's status: text files of kilobytes
# to a few MiB. libguestfs' read_file stops near 4 MiB (its message size) anyway.
MAX_TEXT = 2 * 1024 * 1024

class UnreadableFile(Exception):
    """A file a rule asked for cannot be read: the path is not absolute, a symlink loop, too large..."""

    def __init__(self, device: str, path: str, reason: str) -> None:
        super().__init__(f"{device}:{path}: {reason}")
        self.device, self.path, self.reason = device, path, reason


@dataclass(frozen=True)
class Partition:
    number: int  # 1-based
    device: str  # /dev/sda1
    start: int  # bytes
    size: int
    mbr_id: int | None  # MBR partition type byte (None on GPT)
    gpt_type: str | None  # GPT partition type GUID (None on MBR)
    guid: str | None = None  # GPT unique partition GUID, lower case (None on MBR)


@dataclass(frozen=True)
class Filesystem:
    device: str  # /dev/sda, /dev/sda1 or /dev/vg/lv
    type: str  # ext4, xfs, vfat, swap, unknown, ...
    label: str
    uuid: str
    partition: int | None  # number of the partition it sits on (None: whole disk or LVM)
    lvm: bool


class ImageView(Protocol):
    """What the lint rules (and diff) ask of an image; devices are named as libguestfs names them
    (/dev/sda, /dev/sda1), whichever reader answers."""

    image: Path
    reader: str  # "native" or "guestfs": which reader answers
    disk: str
    parttype: str | None  # "msdos", "gpt", or None (no partition table)
    partitions: tuple[Partition, ...]
    filesystems: tuple[Filesystem, ...]
    lvm_pvs: tuple[str, ...]

    def filesystem(self, device: str) -> Filesystem | None: ...
    def filesystem_on_partition(self, number: int | None) -> Filesystem | None: ...
    def disk_bytes(self, offset: int, count: int) -> bytes: ...
    def ext_features(self, device: str) -> set[str]: ...
    def exists(self, device: str, path: str) -> bool: ...
    def is_dir(self, device: str, path: str) -> bool: ...
    def size(self, device: str, path: str) -> int | None: ...
    def read(self, device: str, path: str, limit: int = MAX_TEXT) -> bytes | None: ...
    def read_text(self, device: str, path: str, limit: int = MAX_TEXT) -> str | None: ...
    def ls(self, device: str, path: str) -> list[str]: ...
    def fetched(self, device: str, path: str, limit: int) -> AbstractContextManager[Path | None]: ...
    def fetch(self, device: str, path: str, limit: int) -> bytes | None: ...



def fetch_whole(view: ImageView, device: str, path: str, limit: int) -> bytes | None:
    """`view.fetched`, read into memory (for a kernel, which is parsed whole: at most `limit` bytes); both
    readers' `fetch`."""
    with view.fetched(device, path, limit) as local:
        if local is None:
            return None
        with open(local, "rb") as f:
            return f.read(limit)


def filesystem_named(filesystems: tuple[Filesystem, ...], device: str) -> Filesystem | None:
    return next((f for f in filesystems if f.device == device), None)


def filesystem_on(filesystems: tuple[Filesystem, ...], disk: str, parttype: str | None,
                  number: int | None) -> Filesystem | None:
    """The filesystem of (hd0) (number None, partitionless) or of partition `number` (1-based): what both
    readers' `filesystem_on_partition` answer."""
    if number is None:
        return filesystem_named(filesystems, disk) if parttype is None else None
    return next((f for f in filesystems if f.partition == number), None)
