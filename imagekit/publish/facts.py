"""What an image is, for registering it: read from its build manifest, or found by inspection.

`imagekit build` writes `<image>.manifest.json` beside the image. Without one, the first
sectors tell a partitionless filesystem (PV, hd0) from an MBR or GPT disk; what they cannot
tell (virtualization of an MBR disk, architecture) must come from options.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from imagekit.image.blockmap import BadRecord, BlockMap, from_record
from imagekit.image.disklabel import read_head
from imagekit.manifest import ImageRecord, Manifest, load_manifest, manifest_path
from imagekit.recipe.layouts import LAYOUTS, PartitionTable
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


def _enum(kind: type[StrEnum], value: Any, where: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise UsageError(f"{where}: {value!r} is not one of {allowed}") from None


def sniff_layout(image: Path) -> Layout | None:
    """The layout table's first entry whose partition table and firmware partitions the disk has: hd0 for a
    bare ext/xfs/btrfs filesystem, hd00 for an MBR (mbr-bios's looks alike: --virtualization decides), the
    GPT layouts by their BIOS boot partition and ESP; None if no entry matches."""
    label = read_head(image)
    if label.gpt_header:
        table: PartitionTable | None = PartitionTable.GPT
        parts = {kind for kind, present in (("bios-boot", label.bios_boot), ("esp", label.esp)) if present}
    elif label.whole_disk_fs is not None:
        table, parts = None, set()
    elif label.mbr:
        table, parts = PartitionTable.MBR, set()
    else:
        return None
    return next((layout for layout, spec in LAYOUTS.items()
                 if spec.table == table and set(spec.firmware_parts) == parts), None)


def allocated_bytes(image: Path) -> int:
    return os.stat(image).st_blocks * 512


def facts_from_manifest(image: Path, path: Path, overrides: dict[str, Any]) -> ImageFacts:
    manifest = load_manifest(path)
    for key in ("arch", "layout", "virtualization"):
        if getattr(manifest, key) is None and overrides.get(key) is None:
            raise UsageError(f"{path}: {key}: missing")
    info = manifest.image or ImageRecord()
    size = image.stat().st_size
    if info.size not in (None, size):
        raise UsageError(f"{path}: image.size {info.size} differs from {image} ({size} bytes): stale manifest?")
    boot = overrides.get("boot_mode") or manifest.boot_mode
    arch = overrides.get("arch") or manifest.arch
    assert arch is not None
    return ImageFacts(
        path=image,
        size=size,
        allocated=allocated_bytes(image),
        sha256=manifest_sha256(path, "image.sha256", info.sha256),
        arch=arch,
        layout=_enum(Layout, overrides.get("layout") or manifest.layout, f"{path}: layout"),
        virtualization=_enum(
            Virtualization, overrides.get("virtualization") or manifest.virtualization, f"{path}: virtualization"
        ),
        boot_mode=_enum(BootMode, boot, f"{path}: boot_mode") if boot else None,
        manifest_path=path,
        manifest_sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        recipe=manifest.recipe.model_dump() if manifest.recipe else None,
        data_volumes=data_volumes_of(image, path, manifest),
        block_map=manifest_block_map(path, "image.block_map", size, info.block_map),
    )


def manifest_sha256(manifest: Path, key: str, value: str | None) -> str | None:
    """A sha256 the manifest records: None, or 64 lowercase hex digits."""
    if value is None:
        return None
    if not (len(value) == 64 and all(c in "0123456789abcdef" for c in value)):
        raise UsageError(f"{manifest}: {key}: {value!r} is not a sha256 (64 hex digits)")
    return value


def manifest_block_map(manifest: Path, key: str, size: int, value: dict[str, Any] | None) -> BlockMap | None:
    """The block map the manifest records for an image of `size` bytes (None: an old manifest)."""
    if value is None:
        return None
    try:
        return from_record(size, value)
    except BadRecord as exc:
        raise UsageError(f"{manifest}: {key}: {exc}") from None


def manifest_string(manifest: Path, key: str, value: str | None) -> str:
    if not value:
        raise UsageError(f"{manifest}: {key}: {value!r} is not a non-empty string")
    return value


def data_volumes_of(image: Path, path: Path, manifest: Manifest) -> tuple[DataVolumeFacts, ...]:
    """The manifest's data volumes that have an image (imagekit/rootfs/volumes.py), each checked to be there."""
    found = []
    for n, vol in enumerate(manifest.data_volumes or []):
        if not vol.image:
            continue
        where = f"data_volumes.{n}"
        file = image.with_name(vol.image)
        if not file.is_file():
            raise UsageError(f"{path}: {where}.image: {file} is missing",
                             hint="publish it beside the disk image, as `imagekit build` wrote it")
        found.append(DataVolumeFacts(
            name=manifest_string(path, f"{where}.name", vol.name),
            device=manifest_string(path, f"{where}.device", vol.device),
            path=file, size=file.stat().st_size,
            sha256=manifest_sha256(path, f"{where}.sha256", vol.sha256),
            delete_on_termination=vol.delete_on_termination,
            block_map=manifest_block_map(path, f"{where}.block_map", file.stat().st_size, vol.block_map),
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
    manifest = manifest or manifest_path(image)
    if manifest.is_file():
        return facts_from_manifest(image, manifest, overrides)
    return facts_by_inspection(image, overrides)
