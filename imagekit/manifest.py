"""The build manifest: what went into an image, written beside it as `<image>.manifest.json`."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

SCHEMA = 1


def manifest_path(image: Path) -> Path:
    return image.with_name(image.name + ".manifest.json")


def sha256_file(path: Path, chunk: int = 4 * 1024 * 1024) -> str:
    """sha256 of a (sparse) file; holes are read as zeros, as any reader of the image sees them."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def image_facts(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": path.name, "size": st.st_size, "allocated": st.st_blocks * 512, "sha256": sha256_file(path)}


def write_manifest(image: Path, data: dict[str, Any]) -> Path:
    """Write the manifest atomically (temp name, then rename)."""
    target = manifest_path(image)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    tmp.write_text(json.dumps({"schema": SCHEMA, **data}, indent=2, sort_keys=False) + "\n")
    tmp.replace(target)
    return target


def read_manifest(image: Path) -> dict[str, Any] | None:
    path = manifest_path(image)
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data
