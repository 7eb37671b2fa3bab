"""A read-only view of any disk image: the readers (`open_view`) and the libguestfs one (`GuestfsView`).

The `ImageView` protocol both readers answer, and its vocabulary, are in lint/view_types.py.

`open_view` picks the reader: `native` (imagekit/lint/native.py: the image read in this process, no
appliance), `guestfs` (one libguestfs appliance launch per lint), or `auto` (native, and libguestfs for
what the native reader cannot open: LVM, qcow2, a filesystem type it has no reader for; said on stderr).

Through libguestfs, the drive is added read-only (libguestfs puts a throw-away overlay in front of it) and every
filesystem is mounted read-only, one at a time, only when a rule asks for a file on it. The view
answers in the terms of PV-GRUB and EC2: the partition table, the filesystems (type, label,
UUID), whether a path exists on a given filesystem, file contents.

Paths come from the image (menu.lst, grub.cfg, fstab) and are hostile input: a path that is not
absolute, a symlink loop, a file too large to read are `UnreadableFile`, which the rules turn into
findings; nothing larger than the caller's bound is read, and nothing is read whole into memory
unless it is under that bound.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from imagekit.lint.native import NotNative, open_native
from imagekit.lint.view_types import MAX_TEXT as MAX_TEXT  # the rule modules' names for the view's vocabulary
from imagekit.lint.view_types import Filesystem as Filesystem
from imagekit.lint.view_types import ImageView as ImageView
from imagekit.lint.view_types import Partition as Partition
from imagekit.lint.view_types import UnreadableFile as UnreadableFile
from imagekit.lint.view_types import fetch_whole, filesystem_named, filesystem_on
from imagekit.util.appliance import DiskFormat, Drive, session
from imagekit.util.errors import UsageError

Reader = Literal["auto", "native", "guestfs"]
READERS: tuple[str, ...] = ("auto", "native", "guestfs")


class GuestfsView:
    """Facts about one image, read through an open libguestfs handle."""

    reader = "guestfs"

    def __init__(self, g: Any, image: Path) -> None:
        self.g = g
        self.image = image
        self.disk: str = g.list_devices()[0]
        self._mounted: str | None = None
        self.parttype: str | None = self._parttype()
        self.partitions: tuple[Partition, ...] = self._partitions()
        self.filesystems: tuple[Filesystem, ...] = self._filesystems()
        self.lvm_pvs: tuple[str, ...] = tuple(g.pvs()) if self._has_lvm() else ()

    # --- structure --------------------------------------------------------------------------

    def _parttype(self) -> str | None:
        try:
            kind: str = self.g.part_get_parttype(self.disk)
            return kind  # "msdos" or "gpt"
        except RuntimeError:
            return None  # no partition table: a partitionless (hd0) image

    def _partitions(self) -> tuple[Partition, ...]:
        if self.parttype is None:
            return ()
        parts = []
        for p in self.g.part_list(self.disk):
            n = int(p["part_num"])
            mbr_id = gpt_type = guid = None
            if self.parttype == "msdos":
                mbr_id = int(self.g.part_get_mbr_id(self.disk, n))
            elif self.parttype == "gpt":
                gpt_type = str(self.g.part_get_gpt_type(self.disk, n)).upper()
                guid = self._safe(self.g.part_get_gpt_guid, self.disk, n).lower() or None
            parts.append(Partition(n, f"{self.disk}{n}", int(p["part_start"]), int(p["part_size"]),
                                   mbr_id, gpt_type, guid))
        return tuple(parts)

    def _has_lvm(self) -> bool:
        return bool(self.g.feature_available(["lvm2"])) and bool(self.g.pvs())

    def _filesystems(self) -> tuple[Filesystem, ...]:
        found = []
        for device, fstype in sorted(self.g.list_filesystems().items()):
            label = uuid = ""
            if fstype not in ("unknown", "swap") or fstype == "swap":
                label, uuid = self._safe(self.g.vfs_label, device), self._safe(self.g.vfs_uuid, device)
            part = self._partition_number(device)
            lvm = device.startswith("/dev/mapper/") or (part is None and device != self.disk)
            found.append(Filesystem(device, fstype, label, uuid, part, lvm))
        return tuple(found)

    def _partition_number(self, device: str) -> int | None:
        for p in self.partitions:
            if p.device == device:
                return p.number
        return None

    @staticmethod
    def _safe(fn: Any, *args: Any) -> str:
        try:
            return str(fn(*args))
        except RuntimeError:
            return ""

    def filesystem(self, device: str) -> Filesystem | None:
        return filesystem_named(self.filesystems, device)

    def filesystem_on_partition(self, number: int | None) -> Filesystem | None:
        return filesystem_on(self.filesystems, self.disk, self.parttype, number)

    def disk_bytes(self, offset: int, count: int) -> bytes:
        data: bytes = self.g.pread_device(self.disk, count, offset)
        return data

    def ext_features(self, device: str) -> set[str]:
        try:
            info = self.g.tune2fs_l(device)
        except RuntimeError:
            return set()
        return set(str(info.get("Filesystem features", "")).split())

    # --- files -------------------------------------------------------------------------------

    def _mount(self, device: str) -> bool:
        if self._mounted == device:
            return True
        self.g.umount_all()
        self._mounted = None
        try:
            self.g.mount_ro(device, "/")
        except RuntimeError:
            return False
        self._mounted = device
        return True

    def _ask(self, device: str, path: str, question: Any, *args: Any) -> Any:
        """`question(path, *args)` on the mounted `device`; a bad path or a libguestfs error is UnreadableFile."""
        if not path.startswith("/"):
            raise UnreadableFile(device, path, "not an absolute path")
        if "\0" in path:
            raise UnreadableFile(device, path, "the path holds a NUL byte")
        try:
            return question(path, *args)
        except RuntimeError as exc:
            raise UnreadableFile(device, path, str(exc).split(": ", 1)[-1]) from None

    def exists(self, device: str, path: str) -> bool:
        """A regular file (after symlinks) at `path`; a symlink loop raises UnreadableFile."""
        return self._mount(device) and bool(self._ask(device, path, self.g.is_file, True))

    def is_dir(self, device: str, path: str) -> bool:
        return self._mount(device) and bool(self._ask(device, path, self.g.is_dir, True))

    def size(self, device: str, path: str) -> int | None:
        """The size of the file at `path` (after symlinks), or None when there is no regular file."""
        if not self.exists(device, path):
            return None
        return int(self._ask(device, path, self.g.statns)["st_size"])

    def _bounded(self, device: str, path: str, limit: int) -> int | None:
        size = self.size(device, path)
        if size is not None and size > limit:
            raise UnreadableFile(device, path, f"{size} bytes, over the {limit} bytes lint reads of it")
        return size

    def read(self, device: str, path: str, limit: int = MAX_TEXT) -> bytes | None:
        """A small file's bytes, or None when it does not exist; over `limit` bytes it is UnreadableFile."""
        if self._bounded(device, path, limit) is None:
            return None
        data: bytes = self._ask(device, path, self.g.read_file)
        return data

    def read_text(self, device: str, path: str, limit: int = MAX_TEXT) -> str | None:
        data = self.read(device, path, limit)
        return None if data is None else data.decode("utf-8", "replace")

    def ls(self, device: str, path: str) -> list[str]:
        if not self.is_dir(device, path):
            return []
        return sorted(self._ask(device, path, self.g.ls))

    @contextmanager
    def fetched(self, device: str, path: str, limit: int) -> Iterator[Path | None]:
        """A larger file (a kernel, an initrd) of at most `limit` bytes, as a temp file (None when there is
        none), removed on the way out: its size is checked first (a sparse 3 GiB file is refused without
        reading it), then libguestfs streams it out of the appliance in chunks."""
        if self._bounded(device, path, limit) is None:
            yield None
            return
        with tempfile.TemporaryDirectory(prefix="imagekit-lint-") as tmp:
            local = Path(tmp) / "file"
            self._ask(device, path, self.g.download, os.fspath(local))
            yield local

    def fetch(self, device: str, path: str, limit: int) -> bytes | None:
        return fetch_whole(self, device, path, limit)


@contextmanager
def open_view(image: str | os.PathLike[str], fmt: DiskFormat | None = None, reader: str = "auto",
              warn: Callable[[str], None] | None = None) -> Iterator[ImageView]:
    """A view of `image` (read-only, as `fmt`: raw unless given, `appliance.disk_format` decides and
    checks it) through `reader`: native, guestfs, or auto (native, else libguestfs, and `warn` says why)."""
    path = Path(image)
    if not path.is_file():
        raise UsageError(f"{path}: no such image file")
    if reader not in READERS:
        raise UsageError(f"--reader: {reader!r} is not one of {', '.join(READERS)}")
    if reader == "guestfs":
        with open_guestfs_view(path, fmt) as view:
            yield view
        return
    try:
        native = open_native(path, fmt)
    except NotNative as exc:
        if reader == "native":
            raise UsageError(f"{path}: --reader native cannot read it: {exc.reason}",
                             hint="use --reader guestfs (or auto)") from None
        if warn is not None:
            warn(f"{path.name}: {exc.reason}: reading it through libguestfs instead")
        with open_guestfs_view(path, fmt) as view:
            yield view
        return
    with native as view:
        yield view


@contextmanager
def open_guestfs_view(path: Path, fmt: DiskFormat | None = None) -> Iterator[ImageView]:
    """Launch libguestfs on `path`, read-only, as `fmt`, and close it (shutdown, then close) on the way out."""
    with session([Drive(path, fmt or DiskFormat.RAW)], launch_error=f"{path}: libguestfs could not open the image",
                 error=f"{path}: libguestfs failed while reading the image") as g:
        yield GuestfsView(g, path)
