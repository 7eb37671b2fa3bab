"""Copy-on-write overlays: the image under test is a read-only backing file and is never written.

Everything the harness adds (the probe, console=ttyS0) goes into a qcow2 overlay that is deleted
when the boot ends, so the image's sha256 is the same before and after.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from imagekit.util.appliance import check_image_file
from imagekit.util.errors import CommandFailed, UsageError
from imagekit.util.run import output, run


@dataclass(frozen=True)
class ImageFile:
    path: Path  # absolute
    format: str  # as qemu-img sees it: raw, qcow2, vmdk, ...
    virtual_size: int


def image_file(path: Path, option: str = "IMAGE") -> ImageFile:
    """What qemu-img says the image is; UsageError (naming `option`) when it is not a readable image."""
    check_image_file(path, option)
    try:
        info = json.loads(output(["qemu-img", "info", "--output=json", "-U", path]))
    except CommandFailed as exc:
        raise UsageError(f"{option}: {path} is not a disk image qemu-img can read: {exc.output.strip()}") from None
    if info.get("backing-filename"):
        raise UsageError(f"{option}: {path} has a backing file; boot the image it is backed by, or flatten it")
    if ((info.get("format-specific") or {}).get("data") or {}).get("data-file"):  # QEMU would open that host file
        raise UsageError(f"{option}: {path} keeps its data in an external file; flatten it (qemu-img convert)")
    size = int(info.get("virtual-size", 0))
    if size < 1024 * 1024:
        raise UsageError(f"{option}: {path} is {size} bytes: too small to be a bootable disk image")
    return ImageFile(path.resolve(), str(info["format"]), size)


@contextmanager
def overlay(image: ImageFile, workdir: Path) -> Iterator[Path]:
    """A fresh qcow2 overlay on `image` in `workdir`, deleted when the block ends."""
    path = workdir / "overlay.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", image.format, "-b", image.path, path])
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


@contextmanager
def layer(base: Path, workdir: Path, name: str) -> Iterator[Path]:
    """A qcow2 on top of another overlay (one boot of several from the same prepared overlay)."""
    path = workdir / name
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, path])
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
