"""One way to start libguestfs: with the accelerator imagekit's KVM probe chose, on drives of known format.

libguestfs' direct backend tries KVM first and has no TCG fallback of its own; where the probe found
KVM broken (it hangs or asserts on some hosts) the handle is told to use TCG. Working KVM is left alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imagekit.accel import Accel, detect
from imagekit.optional import require


def guestfs_handle(accel: Accel | None = None) -> Any:
    """A new, not yet launched libguestfs handle (python_return_dict=True)."""
    guestfs = require("guestfs", needed_by="reading an image with libguestfs")

    g = guestfs.GuestFS(python_return_dict=True)
    if (accel or detect()).name == "tcg":
        g.set_backend("direct")
        g.set_backend_settings(["force_tcg"])
    return g


def drive_format(image: Path) -> str:
    """'qcow2' for a qcow2 file, else 'raw' (never let libguestfs guess a format)."""
    with open(image, "rb") as f:
        head = f.read(4)
    return "qcow2" if head == b"QFI\xfb" else "raw"
