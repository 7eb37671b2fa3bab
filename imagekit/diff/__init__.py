"""`imagekit diff`: what differs between two images (or two build manifests).

The images are read natively (diff/native.py) or in one libguestfs appliance (diff/compare.py, which also
holds the sides' shape and compares them); `read_sides` picks the reader, as lint's `open_view` does.
"""

from __future__ import annotations

from pathlib import Path

from imagekit.diff.compare import Change, Side, compare, from_manifest, read_sides_guestfs
from imagekit.diff.native import read_sides_native
from imagekit.lint.native import NotNative
from imagekit.manifest import load_manifest, read_manifest
from imagekit.util.appliance import disk_format
from imagekit.util.errors import UsageError
from imagekit.util.progress import Progress


def read_sides(a: Path, b: Path, progress: Progress, fmt: str | None = None,
               reader: str = "auto") -> tuple[Side, Side]:
    """Both sides; `fmt` (raw or qcow2, None: raw) is how both images are opened (appliance.disk_format);
    `reader` auto, native or guestfs (lint/view.py)."""
    for p in (a, b):
        if not p.is_file():
            raise UsageError(f"{p}: no such image or manifest")
    if a.suffix == ".json" and b.suffix == ".json":
        return from_manifest(load_manifest(a)), from_manifest(load_manifest(b))
    if a.suffix == ".json" or b.suffix == ".json":
        raise UsageError("diff: give two images or two manifests, not one of each")
    formats = [disk_format(p, fmt) for p in (a, b)]
    manifests = [read_manifest(p) for p in (a, b)]
    if reader != "guestfs":
        try:
            sides: tuple[Side, Side] = read_sides_native((a, b), manifests, progress) if fmt in (None, "raw") \
                else not_native(f"a {fmt} image")
            return sides
        except NotNative as exc:
            if reader == "native":
                raise UsageError(f"diff: --reader native cannot read the images: {exc.reason}",
                                 hint="use --reader guestfs (or auto)") from None
            progress.warn(f"diff: {exc.reason}: reading the images through libguestfs instead")
    return read_sides_guestfs((a, b), formats, manifests, progress)


def not_native(reason: str) -> tuple[Side, Side]:
    raise NotNative(reason)


def diff(a: Path, b: Path, progress: Progress, fmt: str | None = None, reader: str = "auto") -> list[Change]:
    side_a, side_b = read_sides(a, b, progress, fmt, reader)
    return compare(side_a, side_b)
