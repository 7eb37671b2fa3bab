"""The build manifest: what went into an image, written beside it as `<image>.manifest.json`."""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from imagekit.image.blockmap import block_map_of
from imagekit.util.errors import UsageError

SCHEMA = 1
MAX_MANIFEST = 64 * 1024 * 1024  # a manifest lists packages and files: megabytes, never this


class _Lenient(BaseModel):
    """Keys readers do not use are kept and not checked (newer imagekits add some)."""

    model_config = ConfigDict(extra="allow", strict=True)


class _Text(_Lenient):
    text: str


class _Package(_Lenient):
    name: str
    version: str


class _Volume(_Lenient):
    image: str | None = None
    device: str | None = None
    name: str | None = None
    label: str | None = None
    mountpoint: str | None = None
    services: list[str] | None = None


class _Registration(_Lenient):
    ramdisk_id: str | None = None
    ari: str | None = None


class ManifestFields(_Lenient):
    """The fields lint, diff and boot read from a manifest, with the types they assume."""

    arch: str | None = None
    virtualization: str | None = None
    boot_mode: str | None = None
    layout: str | None = None
    cmdline: str | None = None
    fstab: str | None = None
    menu_lst: _Text | None = None
    grub_cfg: _Text | None = None
    packages: list[_Package] | None = None
    data_volumes: list[_Volume] | None = None
    publish: _Registration | None = None
    registration: _Registration | None = Field(None, alias="register")


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
    """The manifest's image record: size, allocation, and the block map (imagekit/image/blockmap.py), read
    at the speed of the data in the image; the whole-file sha256 is `imagekit digest IMAGE`'s."""
    st = path.stat()
    blocks = block_map_of(path)
    return {"path": path.name, "size": st.st_size, "allocated": st.st_blocks * 512, "id": blocks.image_id,
            "block_map": blocks.record()}


def start_image_facts(path: Path) -> Future[dict[str, Any]]:
    """`image_facts` in a background thread (hashlib releases the GIL), so the block map of a finished image
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
    """The manifest beside `image` (None when there is none), with the fields readers use validated:
    a manifest that is not JSON, not an object, or has a field of the wrong type is a UsageError naming
    the file and the key. Unknown keys are kept as they are."""
    path = manifest_path(image)
    if not path.is_file():
        return None
    return load_manifest(path)


def load_manifest(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_MANIFEST + 1)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the manifest: {exc.strerror}") from None
    if len(raw) > MAX_MANIFEST:
        raise UsageError(f"{path}: the manifest is over {MAX_MANIFEST >> 20} MiB: not a build manifest")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise UsageError(f"{path}: not a JSON manifest: {str(exc).splitlines()[0][:200]}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: the manifest is a JSON {type(data).__name__}, not an object")
    try:
        ManifestFields.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise UsageError(f"{path}: {key}: {first['msg']}") from None
    return data
