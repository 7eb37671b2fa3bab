"""What an image is, for registering it: read from its build manifest, or found by inspection.

`imagekit build` writes `<image>.manifest.json` beside the image. Without one, the first
sectors tell a partitionless filesystem (PV, hd0) from an MBR or GPT disk; what they cannot
tell (virtualization of an MBR disk, architecture) must come from options.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from imagekit.image.blockmap import BadRecord, BlockMap, from_record
from imagekit.image.disklabel import read_head
from imagekit.recipe.model import BootMode, Layout, Virtualization
from imagekit.util.errors import UsageError

ARCHES = ("x86_64", "i386", "arm64")


@dataclass(frozen=True)
class DataVolumeFacts:
    """A data volume image the build wrote beside the disk image (manifest "data_volumes")."""

    name: str
    device: str  # /dev/sdh
    path: Path
    size: int
    sha256: str | None  # an old manifest's whole-file sha256
    delete_on_termination: bool
    block_map: BlockMap | None = None  # what the manifest says the bytes are


@dataclass(frozen=True)
class ImageFacts:
    path: Path
    size: int
    allocated: int
    sha256: str | None
    arch: str
    layout: Layout
    virtualization: Virtualization
    boot_mode: BootMode | None
    manifest_path: Path | None
    manifest_sha256: str | None
    recipe: dict[str, Any] | None
    data_volumes: tuple[DataVolumeFacts, ...] = ()
    block_map: BlockMap | None = None  # the manifest's image.block_map (old manifests: sha256 only)


def manifest_path_for(image: Path) -> Path:
    return image.with_name(image.name + ".manifest.json")


def _enum(kind: type[StrEnum], value: Any, where: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise UsageError(f"{where}: {value!r} is not one of {allowed}") from None


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the build manifest: {exc}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"{path}: the build manifest is not a JSON object")
    return data


def sniff_layout(image: Path) -> Layout | None:
    """hd0 for a bare ext/xfs/btrfs filesystem, hd00/gpt for a partition table, None if unsure."""
    label = read_head(image)
    if label.gpt_header:
        return Layout.GPT_UEFI
    if label.whole_disk_fs is not None:
        return Layout.HD0
    if label.mbr:
        return Layout.HD00
    return None


def allocated_bytes(image: Path) -> int:
    return os.stat(image).st_blocks * 512


def facts_from_manifest(image: Path, manifest: Path, overrides: dict[str, Any]) -> ImageFacts:
    data = read_manifest(manifest)
    for key in ("arch", "layout", "virtualization"):
        if key not in data and overrides.get(key) is None:
            raise UsageError(f"{manifest}: {key}: missing")
    info = manifest_object(manifest, "image", data.get("image") or {})
    size = image.stat().st_size
    if info.get("size") not in (None, size):
        raise UsageError(f"{manifest}: image.size {info['size']} differs from {image} ({size} bytes): stale manifest?")
    for key in ("arch", "layout", "virtualization", "boot_mode"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise UsageError(f"{manifest}: {key}: {data[key]!r} is not a string")
    boot = overrides.get("boot_mode") or data.get("boot_mode")
    recipe = data.get("recipe") if isinstance(data.get("recipe"), dict) else None
    return ImageFacts(
        path=image,
        size=size,
        allocated=allocated_bytes(image),
        sha256=manifest_sha256(manifest, "image.sha256", info.get("sha256")),
        arch=overrides.get("arch") or data["arch"],
        layout=_enum(Layout, overrides.get("layout") or data["layout"], f"{manifest}: layout"),
        virtualization=_enum(
            Virtualization, overrides.get("virtualization") or data["virtualization"], f"{manifest}: virtualization"
        ),
        boot_mode=_enum(BootMode, boot, f"{manifest}: boot_mode") if boot else None,
        manifest_path=manifest,
        manifest_sha256=hashlib.sha256(manifest.read_bytes()).hexdigest(),
        recipe=recipe,
        data_volumes=data_volumes_of(image, manifest, data),
        block_map=manifest_block_map(manifest, "image.block_map", size, info.get("block_map")),
    )


def manifest_object(manifest: Path, key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UsageError(f"{manifest}: {key}: {value!r} is not an object")
    return value


def manifest_sha256(manifest: Path, key: str, value: Any) -> str | None:
    """A sha256 the manifest records: None, or 64 lowercase hex digits."""
    if value is None:
        return None
    if not (isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)):
        raise UsageError(f"{manifest}: {key}: {value!r} is not a sha256 (64 hex digits)")
    return value


def manifest_block_map(manifest: Path, key: str, size: int, value: Any) -> BlockMap | None:
    """The block map the manifest records for an image of `size` bytes (None: an old manifest)."""
    if value is None:
        return None
    try:
        return from_record(size, value)
    except BadRecord as exc:
        raise UsageError(f"{manifest}: {key}: {exc}") from None


def manifest_string(manifest: Path, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise UsageError(f"{manifest}: {key}: {value!r} is not a non-empty string")
    return value


def data_volumes_of(image: Path, manifest: Path, data: dict[str, Any]) -> tuple[DataVolumeFacts, ...]:
    """The manifest's data volumes that have an image (imagekit/rootfs/volumes.py), each checked to be there."""
    volumes = data.get("data_volumes") or []
    if not isinstance(volumes, list):
        raise UsageError(f"{manifest}: data_volumes: {volumes!r} is not a list")
    found = []
    for n, vol in enumerate(volumes):
        vol = manifest_object(manifest, f"data_volumes.{n}", vol)
        if not vol.get("image"):
            continue
        where = f"data_volumes.{n}"
        path = image.with_name(manifest_string(manifest, f"{where}.image", vol["image"]))
        if not path.is_file():
            raise UsageError(f"{manifest}: {where}.image: {path} is missing",
                             hint="publish it beside the disk image, as `imagekit build` wrote it")
        found.append(DataVolumeFacts(
            name=manifest_string(manifest, f"{where}.name", vol.get("name")),
            device=manifest_string(manifest, f"{where}.device", vol.get("device")),
            path=path, size=path.stat().st_size,
            sha256=manifest_sha256(manifest, f"{where}.sha256", vol.get("sha256")),
            delete_on_termination=bool(vol.get("delete_on_termination", True)),
            block_map=manifest_block_map(manifest, f"{where}.block_map", path.stat().st_size, vol.get("block_map")),
        ))
    return tuple(found)


def facts_by_inspection(image: Path, overrides: dict[str, Any]) -> ImageFacts:
    layout = overrides.get("layout") or sniff_layout(image)
    if layout is None:
        raise UsageError(f"{image}: no build manifest and no filesystem or partition table recognised; pass --layout")
    layout = _enum(Layout, layout, "--layout")
    virt = overrides.get("virtualization")
    if virt is None:
        if layout.spec.pv and layout.spec.partitioned:  # hd00's MBR looks like mbr-bios's
            raise UsageError(f"{image}: an MBR disk can be PV (hd00) or HVM; pass --virtualization")
        virt = layout.spec.virtualization
    boot = overrides.get("boot_mode")
    return ImageFacts(
        path=image,
        size=image.stat().st_size,
        allocated=allocated_bytes(image),
        sha256=None,
        arch=overrides.get("arch") or "x86_64",
        layout=layout,
        virtualization=_enum(Virtualization, virt, "--virtualization"),
        boot_mode=_enum(BootMode, boot, "--boot-mode") if boot else None,
        manifest_path=None,
        manifest_sha256=None,
        recipe=None,
    )


def image_facts(image: Path, manifest: Path | None = None, **overrides: Any) -> ImageFacts:
    """Facts about `image`: from `manifest` (default `<image>.manifest.json`) or by inspection."""
    if not image.is_file():
        raise UsageError(f"{image}: no such image file")
    manifest = manifest or manifest_path_for(image)
    if manifest.is_file():
        return facts_from_manifest(image, manifest, overrides)
    return facts_by_inspection(image, overrides)
