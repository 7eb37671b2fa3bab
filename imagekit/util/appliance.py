"""One way to start libguestfs: with the accelerator imagekit's KVM probe chose, on drives of known format.

libguestfs' direct backend tries KVM first and has no TCG fallback of its own; where the probe found
KVM broken (it hangs or asserts on some hosts) the handle is told to use TCG. Working KVM is left alone.

The format of a drive is imagekit's decision, never a guess from the file's first bytes: a hostile
"raw" image that starts like a qcow2 header would otherwise be opened as qcow2, and a qcow2 names
other files (a backing file, an external data file) that QEMU opens on the host. imagekit builds raw
images, so raw is the default; qcow2 is read only when the user asks for it and only when it is
self-contained (no backing file, no external data file, not encrypted).
"""

from __future__ import annotations

import json
import os
import stat
import struct
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from imagekit.util.accel import Accel, detect
from imagekit.util.errors import CommandFailed, ImagekitError, UsageError
from imagekit.util.optional import require
from imagekit.util.run import output

QCOW2_MAGIC = b"QFI\xfb"
QCOW2_EXTERNAL_DATA = 1 << 2  # incompatible feature bit: the guest data lives in another file


class DiskFormat(StrEnum):
    RAW = "raw"
    QCOW2 = "qcow2"


@dataclass(frozen=True)
class Drive:
    """A disk given to the appliance: its file, the format imagekit decided (never sniffed), read-only or not."""

    path: Path
    format: DiskFormat = DiskFormat.RAW
    readonly: bool = True


def guestfs_handle(accel: Accel | None = None) -> Any:
    """A new, not yet launched libguestfs handle (python_return_dict=True), on the accelerator imagekit chose:
    the one place that choice reaches libguestfs (no environment variables are set)."""
    guestfs = require("guestfs", needed_by="reading an image with libguestfs")

    g = guestfs.GuestFS(python_return_dict=True)
    if (accel or detect()).name == "tcg":
        g.set_backend("direct")
        g.set_backend_settings(["force_tcg"])
    return g


@contextmanager
def session(drives: Sequence[Drive], *, error: str | None = None, launch_error: str | None = None,
            hint: str | None = None, accel: Accel | None = None,
            launching: AbstractContextManager[object] | None = None) -> Iterator[Any]:
    """A launched libguestfs handle on `drives`, the one owner of every appliance imagekit starts.

    libguestfs' RuntimeError (adding a drive, launching, or any call in the block) becomes an ImagekitError:
    `error` (default: "IMAGE: libguestfs failed", naming the drives) + ": " + libguestfs' message;
    `launch_error` is the prefix for a failed add or launch (default: `error`), `hint` the error's hint.
    `launching` wraps the launch (a progress stage). However the block ends the appliance is shut down
    then closed (nova's guestfs wrapper): a failing shutdown is the error when the block succeeded (it
    is where a writable drive's last writes are flushed), and second to the block's own error otherwise."""
    names = ", ".join(os.fspath(d.path) for d in drives)
    error = error or f"{names}: libguestfs failed"
    g = guestfs_handle(accel)
    shut_down = False
    try:
        try:
            for drive in drives:
                g.add_drive_opts(os.fspath(drive.path), format=str(drive.format), readonly=drive.readonly)
            with launching or nullcontext():
                g.launch()
        except RuntimeError as exc:
            raise ImagekitError(f"{launch_error or error}: {exc}", hint=hint) from None
        try:
            yield g
            shut_down = True
            g.shutdown()
        except RuntimeError as exc:
            raise ImagekitError(f"{error}: {exc}", hint=hint) from None
    finally:
        if not shut_down:
            with suppress(RuntimeError):  # the block's own error is the one reported
                g.shutdown()
        g.close()


def _head(image: Path, size: int) -> bytes:
    try:
        with open(image, "rb") as f:
            return f.read(size)
    except OSError as exc:
        raise UsageError(f"{image}: cannot read the image: {exc.strerror}") from None


SECTOR = 512
SMALLEST_DISK = 1 << 20  # 1 MiB: below that no layout imagekit reads fits (the first partition starts at 1 MiB)


def check_image_file(image: Path, option: str = "IMAGE", fmt: str | None = None) -> None:
    """Refuse at once what cannot be a disk image: a missing path, a directory, a file too small for a disk
    or not a whole number of sectors (a raw image; a qcow2 is judged by its header in `disk_format`).
    Every command taking an IMAGE calls this first, before any appliance or QEMU is started."""
    try:
        st = image.stat()
    except FileNotFoundError:
        raise UsageError(f"{option}: {image}: no such image file") from None
    except OSError as exc:
        raise UsageError(f"{option}: {image}: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{option}: {image} is a directory, not a disk image",
                         hint="give the image file imagekit build wrote, e.g. out/NAME.img")
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{option}: {image} is not a regular file, so not a disk image imagekit reads")
    if fmt == DiskFormat.QCOW2 or (fmt is None and _head(image, 4) == QCOW2_MAGIC):
        return
    hint = (f"{image.name} looks like a recipe: build it first (imagekit build {image} -o out/NAME.img)"
            if image.suffix == ".toml" else "give the image file imagekit build wrote, e.g. out/NAME.img")
    if st.st_size < SMALLEST_DISK:
        raise UsageError(f"{option}: {image} is {st.st_size} bytes: too small to be a disk image "
                         f"(the smallest is 1 MiB)", hint=hint)
    if st.st_size % SECTOR:
        raise UsageError(f"{option}: {image} is {st.st_size} bytes: not a whole number of {SECTOR}-byte sectors, "
                         "so not a disk image", hint=hint)


def disk_format(image: Path, requested: str | None, option: str = "--format") -> DiskFormat:
    """The format to open `image` with: `requested` (raw or qcow2), checked; None means raw, and a file
    that starts like a qcow2 is refused then rather than guessed (the user says which it is)."""
    if requested is None:
        if _head(image, 4) == QCOW2_MAGIC:
            raise UsageError(f"{image}: starts with a qcow2 header; imagekit reads raw images unless told: "
                             f"pass {option} qcow2 to read it as qcow2, or {option} raw to read its bytes as a disk")
        return DiskFormat.RAW
    try:
        fmt = DiskFormat(requested)
    except ValueError:
        raise UsageError(f"{option}: {requested!r} is not one of {', '.join(DiskFormat)}") from None
    if fmt is DiskFormat.QCOW2:
        check_qcow2(image, option)
    return fmt


def check_qcow2(image: Path, option: str = "--format") -> None:
    """Refuse a qcow2 that is not self-contained: QEMU would open the files it names on the host.
    The header is read here first (nothing else is opened), then qemu-img confirms it, told the format."""
    head = _head(image, 104)
    if len(head) < 72 or head[:4] != QCOW2_MAGIC:
        raise UsageError(f"{option} qcow2: {image} is not a qcow2 image (no qcow2 header)")
    version, backing_offset, _, _, _, crypt = struct.unpack(">IQIIQI", head[4:36])
    incompatible = struct.unpack(">Q", head[72:80])[0] if version >= 3 and len(head) >= 80 else 0
    if backing_offset:
        raise UsageError(f"{image}: the qcow2 has a backing file; imagekit does not follow it to the host "
                         "(flatten it: qemu-img convert -O raw)")
    if incompatible & QCOW2_EXTERNAL_DATA:
        raise UsageError(f"{image}: the qcow2 keeps its data in an external file; imagekit does not open it "
                         "(flatten it: qemu-img convert -O raw)")
    if crypt:
        raise UsageError(f"{image}: the qcow2 is encrypted; imagekit cannot read it")
    try:
        info = json.loads(output(["qemu-img", "info", "--output=json", "-f", "qcow2", "-U", image]))
    except CommandFailed as exc:
        reason = exc.output.strip().splitlines()[-1] if exc.output.strip() else str(exc)
        raise UsageError(f"{image}: not a qcow2 image qemu-img can read: {reason}") from None
    except ValueError:
        raise UsageError(f"{image}: qemu-img info printed no JSON") from None
    data = (info.get("format-specific") or {}).get("data") or {}
    if info.get("backing-filename") or data.get("data-file"):
        raise UsageError(f"{image}: the qcow2 names another file (backing or data file); imagekit does not open it")
