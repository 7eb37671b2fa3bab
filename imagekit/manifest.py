"""The build manifest: what went into an image, written beside it as `<image>.manifest.json`."""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

SCHEMA = 1


def manifest_path(image: Path) -> Path:
    return image.with_name(image.name + ".manifest.json")


_ZEROS = memoryview(bytes(8 << 20))


def sha256_file(path: Path, chunk: int = 8 << 20) -> str:
    """sha256 of a (sparse) file as any reader sees it; holes are hashed from a zero buffer, not read."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        fd, size, pos = f.fileno(), os.fstat(f.fileno()).st_size, 0
        while pos < size:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: a hole up to the end
                data = size
            while pos < data:  # the hole [pos, data)
                n = min(len(_ZEROS), data - pos)
                h.update(_ZEROS[:n])
                pos += n
            if pos >= size:
                break
            hole = os.lseek(fd, pos, os.SEEK_HOLE)
            f.seek(pos)
            while pos < hole:
                block = f.read(min(chunk, hole - pos))
                if not block:
                    raise OSError(f"{path}: short read at {pos}")
                h.update(block)
                pos += len(block)
    return h.hexdigest()


def image_facts(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": path.name, "size": st.st_size, "allocated": st.st_blocks * 512, "sha256": sha256_file(path)}


def start_image_facts(path: Path) -> Future[dict[str, Any]]:
    """`image_facts` in a background thread (hashlib releases the GIL), so the digest of a finished image
    overlaps whatever the build still has to do: removing the staged tree, reading usage, linting."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imagekit-sha256")
    future = pool.submit(image_facts, path)
    pool.shutdown(wait=False)
    return future


def write_manifest(image: Path, data: dict[str, Any]) -> Path:
    """Write the manifest atomically (temp name, then rename)."""
    target = manifest_path(image)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        tmp.write_text(json.dumps({"schema": SCHEMA, **data}, indent=2, sort_keys=False) + "\n")
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written manifest
    return target


def read_manifest(image: Path) -> dict[str, Any] | None:
    path = manifest_path(image)
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data
