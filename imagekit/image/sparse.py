"""Copy byte ranges between files, skipping holes, so sparse images stay sparse."""

from __future__ import annotations

import os
from pathlib import Path


def copy_range(src: Path, dst: Path, *, src_offset: int = 0, length: int | None = None, dst_offset: int = 0) -> int:
    """Copy src[src_offset : src_offset+length] to dst at dst_offset, data extents only; return bytes copied."""
    copied = 0
    with open(src, "rb") as s, open(dst, "r+b") as d:
        end = os.fstat(s.fileno()).st_size if length is None else src_offset + length
        pos = src_offset
        while pos < end:
            try:
                start = os.lseek(s.fileno(), pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            if start >= end:
                break
            stop = min(os.lseek(s.fileno(), start, os.SEEK_HOLE), end)
            at = start
            while at < stop:
                done = os.copy_file_range(s.fileno(), d.fileno(), stop - at, at, dst_offset + at - src_offset)
                if done == 0:
                    raise OSError(f"short copy from {src}")
                at += done
            copied += stop - start
            pos = stop
    return copied
