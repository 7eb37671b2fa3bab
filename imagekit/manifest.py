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
from imagekit.recipe.model import BootMode, Layout, Virtualization
from imagekit.util.errors import UsageError

SCHEMA = 1  # the manifest's shape; a manifest without "schema" (before it was written) is read as 1
MAX_MANIFEST = 64 * 1024 * 1024  # a manifest lists packages and files: megabytes, never this


class _Record(BaseModel):
    """A part of the manifest the build writes in full: unknown keys are refused (a typo, or a newer
    imagekit's manifest, which says so by its schema)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _Annotation(BaseModel):
    """A part users may write themselves (publish/register settings): unknown keys are kept, unchecked."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)


class RecipeRef(_Record):
    path: str
    sha256: str


class ImageRecord(_Record):
    """The image file: its size, allocation, id and block map (imagekit/image/blockmap.py). Manifests from
    before block maps record only the whole-file `sha256`."""

    path: str | None = None
    size: int | None = None
    allocated: int | None = None
    id: str | None = None
    block_map: dict[str, Any] | None = None  # validated where it is read (blockmap.from_record)
    sha256: str | None = None


class LvmRef(_Record):
    vg: str
    lv: str


class FilesystemRecord(_Record):
    """A filesystem of the image (a partition, the whole disk, a logical volume or the ESP)."""

    mountpoint: str | None  # None: swap
    type: str
    label: str | None = None
    uuid: str | None = None
    partition: int | None = None
    offset: int
    size: int
    usage: dict[str, int] | None = None  # used/free/total of an ext filesystem ({} otherwise)
    lvm: LvmRef | None = None


class EspFiles(_Record):
    type: str
    label: str
    uuid: str | None
    mountpoint: str
    files: list[str]


class PartitionRecord(_Record):
    """A partition of an HVM disk, firmware partitions included."""

    number: int | None
    kind: str
    name: str
    type: str
    mountpoint: str | None = None
    offset: int
    size: int
    filesystem: EspFiles | None = None


class KernelRecord(_Record):
    """The file the boot entries boot, its format, and what it was made from."""

    profile: str | None = None
    version: str | None = None
    path: str | None = None
    format: str | None = None
    pv_format: str | None = None
    original: str | None = None
    original_payload: str | None = None
    xen_pv: bool | None = None


class PathRecord(_Record):
    path: str


class TextRecord(_Record):
    path: str | None = None
    text: str


class Package(_Record):
    name: str
    version: str


class DataVolumeRecord(_Record):
    """A data volume (imagekit/rootfs/volumes.py): what publish snapshots and maps, what boot attaches."""

    name: str | None = None
    mountpoint: str | None = None
    label: str | None = None
    type: str | None = None
    size: int | None = None
    device: str | None = None
    image: str | None = None  # the volume's image file, beside the disk image
    delete_on_termination: bool = True
    services: list[str] | None = None
    uuid: str | None = None
    initial: str | None = None
    id: str | None = None
    block_map: dict[str, Any] | None = None
    sha256: str | None = None  # manifests from before block maps


class LintFinding(_Record):
    rule: str
    severity: str
    object: str
    message: str


class LintRecord(_Record):
    errors: int
    warnings: int
    findings: list[LintFinding]


class Registration(_Annotation):
    ramdisk_id: str | None = None
    ari: str | None = None


class Manifest(_Record):
    """What went into an image, as the build wrote it beside the image; every reader reads this.

    Every key is optional on reading (hand-written and older manifests lack some); the build sets all
    it knows. The JSON (`document`) has the keys the build set, in this order. Unknown top-level keys
    are kept as they are (a newer imagekit may add one; tests/lint/test_hostile_input.py); inside the
    records the build writes, an unknown key is refused: changing a record's keys bumps SCHEMA."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    schema_: int = Field(default=SCHEMA, alias="schema")
    imagekit: str | None = None
    name: str | None = None
    recipe: RecipeRef | None = None
    arch: str | None = None
    layout: Layout | None = None
    virtualization: Virtualization | None = None
    boot_mode: BootMode | None = None
    image: ImageRecord | None = None
    filesystems: list[FilesystemRecord] | None = None
    kernel: KernelRecord | None = None
    initrd: PathRecord | None = None
    cmdline: str | None = None
    menu_lst: TextRecord | None = None
    fstab: str | None = None
    source_date_epoch: int | None = None
    packages: list[Package] | None = None
    grub_cfg: TextRecord | None = None  # HVM images
    partitions: list[PartitionRecord] | None = None  # HVM images
    data_volumes: list[DataVolumeRecord] | None = None
    lint: LintRecord | None = None
    timings: dict[str, float] | None = None
    # Registration settings a user may add (lint's ari-with-pvgrub reads them); never written by the build.
    ramdisk_id: str | None = None
    ari: str | None = None
    publish: Registration | None = None
    registration: Registration | None = Field(default=None, alias="register")

    def document(self) -> dict[str, Any]:
        """The manifest as JSON data: the keys that were set, in the model's order (IMAGE.manifest.json)."""
        return {"schema": self.schema_,
                **self.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude={"schema_"})}


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


def image_facts(path: Path) -> ImageRecord:
    """The manifest's image record: size, allocation, and the block map (imagekit/image/blockmap.py), read
    at the speed of the data in the image; the whole-file sha256 is `imagekit digest IMAGE`'s."""
    st = path.stat()
    blocks = block_map_of(path)
    return ImageRecord(path=path.name, size=st.st_size, allocated=st.st_blocks * 512, id=blocks.image_id,
                       block_map=blocks.record())


def start_image_facts(path: Path) -> Future[ImageRecord]:
    """`image_facts` in a background thread (hashlib releases the GIL), so the block map of a finished image
    overlaps whatever the build still has to do: removing the staged tree, reading usage, linting."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imagekit-sha256")
    future = pool.submit(image_facts, path)
    pool.shutdown(wait=False)
    return future


def write_manifest(image: Path, manifest: Manifest) -> Path:
    """Write the manifest beside `image` atomically (temp name, then rename)."""
    target = manifest_path(image)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        tmp.write_text(json.dumps(manifest.document(), indent=2, sort_keys=False) + "\n")
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written manifest
    return target


def read_manifest(image: Path) -> Manifest | None:
    """The manifest beside `image` (None when there is none), read by `load_manifest`."""
    path = manifest_path(image)
    if not path.is_file():
        return None
    return load_manifest(path)


def load_manifest(path: Path) -> Manifest:
    """The one reader of a build manifest (lint, boot, publish, diff, digest). A manifest that is not JSON,
    not an object, of another schema, or has a key of the wrong type or an unknown one is a UsageError
    naming the file and the key (exit 2). A manifest from before "schema" was written is read as schema 1:
    the same keys."""
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
    check_schema(path, data.get("schema", SCHEMA))
    try:
        return Manifest.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise UsageError(f"{path}: {key}: {first['msg']}") from None


def check_schema(path: Path, schema: Any) -> None:
    """Schema 1 is the only one so far; a newer imagekit's manifest is refused, not half-read."""
    if type(schema) is not int or schema < 1:
        raise UsageError(f"{path}: schema: {schema!r} is not a manifest schema (1 to {SCHEMA})")
    if schema > SCHEMA:
        raise UsageError(f"{path}: schema: {schema} is newer than this imagekit reads ({SCHEMA})",
                         hint="read it with the imagekit that built the image, or a newer one")
