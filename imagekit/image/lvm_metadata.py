"""Read an LVM2 physical volume straight from an image file: where each logical volume's bytes are.

LVM writes its metadata as text in a ring buffer near the start of the PV. Reading it on the host
(label, metadata area header, current text) tells imagekit each LV's exact byte range in the image,
so the filesystems are made there with the host's mkfs (`mke2fs -d -E offset=`), never copied
through a VM. Format: lib/format_text/layout.h and lib/label/label.h in the LVM2 sources; the
checksums (`lvm_crc`) are lib/misc/crc.c's. lvm_rewrite.py writes the same structures back.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagekit.util.errors import ImagekitError

SECTOR = 512
LABEL_ID = b"LABELONE"
LVM2_TYPE = b"LVM2 001"
MDA_MAGIC = b" LVM2 x[5A%r0N*>"
INITIAL_CRC = 0xF597A6CF  # lib/misc/crc.h


class NotLvm(ImagekitError):
    pass


@dataclass(frozen=True)
class LogicalExtent:
    """One logical volume as a byte range of the image (linear, single-segment LVs only)."""

    name: str
    offset: int  # bytes from the start of the image
    size: int


def lvm_crc(data: bytes, initial: int = INITIAL_CRC) -> int:
    """LVM's calc_crc (lib/misc/crc.c): the reflected CRC-32 of zlib's table, without zlib's inversion
    of the running value on entry and exit, so zlib computes it from the inverted initial value."""
    return zlib.crc32(data, initial ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


@dataclass(frozen=True)
class PvLayout:
    """Where a PV's label and metadata areas are, in bytes from the start of the PV."""

    label: int  # the label sector (label_header, then the pv_header at label + offset_xl)
    header: int  # the pv_header: pv uuid (32 bytes), device size, then the two disk_locn lists
    data_areas: list[tuple[int, int]]  # (offset, size)
    metadata_areas: list[tuple[int, int]]  # (offset, size): each starts with an mda_header sector


def pv_layout(head: bytes) -> PvLayout:
    """The layout of the PV whose first four sectors are `head` (the label is in one of them)."""
    for sector in range(4):
        at = sector * SECTOR
        if head[at:at + 8] == LABEL_ID and head[at + 24:at + 32] == LVM2_TYPE:
            (offset_xl,) = struct.unpack_from("<I", head, at + 20)
            data, meta = _disk_locations(head, at + offset_xl)
            return PvLayout(at, at + offset_xl, data, meta)
    raise NotLvm("no LVM2 label in the first four sectors")


def _disk_locations(head: bytes, at: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The PV header's data areas and metadata areas: lists of (offset, size), zero-terminated."""
    at += 32 + 8  # pv uuid, device size
    areas: list[list[tuple[int, int]]] = [[], []]
    for which in (0, 1):
        while True:
            offset, size = struct.unpack_from("<QQ", head, at)
            at += 16
            if offset == 0:
                break
            areas[which].append((offset, size))
    return areas[0], areas[1]


def read_metadata_text(image: Path, pv_offset: int) -> str:
    """The current metadata text of the PV that starts `pv_offset` bytes into `image`."""
    with open(image, "rb") as f:
        f.seek(pv_offset)
        mdas = pv_layout(f.read(4 * SECTOR)).metadata_areas
        if not mdas:
            raise NotLvm("the PV has no metadata area")
        mda_start, mda_size = mdas[0]
        f.seek(pv_offset + mda_start)
        header = f.read(SECTOR)
        if header[4:20] != MDA_MAGIC:
            raise NotLvm("bad metadata area header")
        offset, size = struct.unpack_from("<QQ", header, 40)  # raw_locns[0]
        if size == 0:
            raise NotLvm("the metadata area is empty")
        first = min(size, mda_size - offset)  # the ring buffer may wrap past its end
        f.seek(pv_offset + mda_start + offset)
        text = f.read(first)
        if first < size:
            f.seek(pv_offset + mda_start + SECTOR)
            text += f.read(size - first)
    return text.rstrip(b"\0").decode()


_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|(-?\d+)|([A-Za-z0-9_.+-]+)|(.))')


def _tokens(text: str) -> list[str | int]:
    out: list[str | int] = []
    for m in _TOKEN.finditer(text):
        comment, string, number, word, punct = m.groups()
        if comment:
            continue
        if string is not None:
            out.append(string)  # keeps its quotes: "x" is a string, x a name
        elif number is not None:
            out.append(int(number))
        elif word is not None:
            out.append(word)
        elif punct and punct.strip():
            out.append(punct)
    return out


def parse_config(text: str) -> dict[str, Any]:
    """LVM's text format: `name { ... }` sections, `key = value` with strings, numbers and [lists]."""
    tokens = _tokens(text)
    pos = 0

    def value() -> Any:
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok == "[":
            items = []
            while tokens[pos] != "]":
                if tokens[pos] != ",":
                    items.append(value())
                else:
                    pos += 1
            pos += 1
            return items
        if isinstance(tok, str) and tok.startswith('"'):
            return tok[1:-1]
        return tok

    def section() -> dict[str, Any]:
        nonlocal pos
        out: dict[str, Any] = {}
        while pos < len(tokens) and tokens[pos] != "}":
            name = str(tokens[pos])
            if tokens[pos + 1] == "{":
                pos += 2
                out[name] = section()
                pos += 1  # "}"
            elif tokens[pos + 1] == "=":
                pos += 2
                out[name] = value()
            else:
                raise NotLvm(f"cannot parse LVM metadata near {name!r}")
        return out

    return section()


def logical_extents(image: Path, pv_offset: int) -> dict[str, LogicalExtent]:
    """Each LV of the (single-PV) volume group on the PV at `pv_offset`: its byte range in the image."""
    config = parse_config(read_metadata_text(image, pv_offset))
    vgs = {k: v for k, v in config.items() if isinstance(v, dict)}
    if len(vgs) != 1:
        raise NotLvm(f"expected one volume group in the metadata, found {len(vgs)}")
    vg = next(iter(vgs.values()))
    extent = int(vg["extent_size"]) * SECTOR
    pvs = vg["physical_volumes"]
    found = {}
    for name, lv in (vg.get("logical_volumes") or {}).items():
        segments = [v for k, v in lv.items() if k.startswith("segment") and isinstance(v, dict)]
        if len(segments) != 1 or segments[0].get("type") != "striped" or segments[0].get("stripe_count") != 1:
            raise NotLvm(f"logical volume {name} is not one linear segment")
        seg = segments[0]
        pv_name, first_pe = seg["stripes"][0], int(seg["stripes"][1])
        pe_start = int(pvs[pv_name]["pe_start"]) * SECTOR
        found[name] = LogicalExtent(name, pv_offset + pe_start + first_pe * extent, int(seg["extent_count"]) * extent)
    return found
