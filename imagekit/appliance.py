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
import struct
from enum import StrEnum
from pathlib import Path
from typing import Any

from imagekit.accel import Accel, detect
from imagekit.errors import CommandFailed, UsageError
from imagekit.optional import require

QCOW2_MAGIC = b"QFI\xfb"
QCOW2_EXTERNAL_DATA = 1 << 2  # incompatible feature bit: the guest data lives in another file


class DiskFormat(StrEnum):
    RAW = "raw"
    QCOW2 = "qcow2"


def guestfs_handle(accel: Accel | None = None) -> Any:
    """A new, not yet launched libguestfs handle (python_return_dict=True)."""
    guestfs = require("guestfs", needed_by="reading an image with libguestfs")

    g = guestfs.GuestFS(python_return_dict=True)
    if (accel or detect()).name == "tcg":
        g.set_backend("direct")
        g.set_backend_settings(["force_tcg"])
    return g


def _head(image: Path, size: int) -> bytes:
    try:
        with open(image, "rb") as f:
            return f.read(size)
    except OSError as exc:
        raise UsageError(f"{image}: cannot read the image: {exc.strerror}") from None


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
    from imagekit.run import output

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
