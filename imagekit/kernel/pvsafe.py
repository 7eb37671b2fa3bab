"""PV-safe kernels (issue 14): the file a PV image's menu.lst boots, in a form EC2's PV-GRUB loads.

PV-GRUB hands the kernel file to Xen's domain builder, which decompresses a bzImage's payload itself
and is documented by AWS for gzip, bzip2, lzo and xz payloads only (imagekit/kernel/xenload.py, the one
model of that loader). Debian's cloud kernel is an LZ4 bzImage, so a PV build installs beside it the ELF
vmlinux inside it, gzipped (seed 004: "strip vmlinux; gzip vmlinux"), and menu.lst boots that. GRUB 0.97
gunzips the file as it reads it; Xen's ELF loader takes the result.

The gzip is deterministic (mtime 0, no file name, level 6 as plain `gzip`), so reproducible builds
stay byte-identical. Unpacking and gzipping a cloud kernel takes ~2 s, most of a warm PV build's own work, so
`cached_pv_safe_kernel` keeps the result in the cache (`pv-kernel/`), keyed by the kernel's sha256, the gzip
level and zlib's version, and trusts an entry only when its bytes have the sha256 recorded beside them.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from enum import StrEnum
from pathlib import Path
from typing import Literal

from imagekit.kernel.bzimage import MAGIC, Compression, is_bzimage, load_vmlinux
from imagekit.kernel.elf import is_elf
from imagekit.kernel.xenload import bzimage_refusal
from imagekit.util.atomic import write_bytes
from imagekit.util.cache import cache_dir, key_of, unwritable
from imagekit.util.errors import ImagekitError

PvFormat = Literal["auto", "bzimage", "vmlinux-gz"]
PV_KERNEL_PREFIX = "pvgrub-vmlinux-"
GZIP_LEVEL = 6
FS_BLOCK = 4096  # imagekit's ext block size (imagekit/data/mke2fs.conf)


class KernelFormat(StrEnum):
    """What a kernel file is, as the manifest records it."""

    BZIMAGE = "bzimage"
    VMLINUX_GZ = "vmlinux-gz"
    VMLINUX = "vmlinux"  # a plain ELF


def pv_kernel_name(version: str) -> str:
    """/boot/pvgrub-vmlinux-VERSION.gz: not vmlinu[xz]-* (linux-version, update-initramfs -k all and GRUB 2's
    10_linux would take it for another kernel), not xen* (20_linux_xen's hypervisors)."""
    return f"{PV_KERNEL_PREFIX}{version}.gz"


def file_format(data: bytes) -> KernelFormat | None:
    if is_bzimage(data):
        return KernelFormat.BZIMAGE
    if is_elf(data):
        return KernelFormat.VMLINUX
    if data.startswith(MAGIC[Compression.GZIP]):
        return KernelFormat.VMLINUX_GZ
    return None


def needs_conversion(data: bytes, pv_format: PvFormat, name: str) -> bool:
    """Whether a PV image should boot a gzipped vmlinux made from this kernel instead of the file itself."""
    if pv_format == "bzimage":
        return False
    if pv_format == "vmlinux-gz":
        return file_format(data) is not KernelFormat.VMLINUX_GZ
    return is_bzimage(data) and bzimage_refusal(data, name) is not None


def pv_safe_kernel(data: bytes, name: str) -> tuple[bytes, Compression | None]:
    """The kernel's ELF vmlinux, gzipped deterministically, and the compression of the payload it came from."""
    vmlinux = load_vmlinux(data, name)
    out = gzip.compress(vmlinux.data, compresslevel=GZIP_LEVEL, mtime=0)
    check_no_zero_blocks(out, name)
    return out, vmlinux.compression


def cached_pv_safe_kernel(data: bytes, name: str) -> tuple[bytes, Compression | None]:
    """pv_safe_kernel, from the cache when an entry for these kernel bytes is there and intact."""
    directory = cache_dir() / "pv-kernel"
    key = key_of({"schema": 1, "kernel": hashlib.sha256(data).hexdigest(), "gzip": GZIP_LEVEL,
                  "zlib": zlib.ZLIB_RUNTIME_VERSION})
    found = _load_entry(directory / f"{key}.gz")
    if found is not None:
        return found
    out, payload = pv_safe_kernel(data, name)
    if unwritable(directory) is None:
        _store_entry(directory / f"{key}.gz", out, payload)
    return out, payload


def _load_entry(path: Path) -> tuple[bytes, Compression | None] | None:
    try:
        record = json.loads(path.with_suffix(".json").read_text())
        out = path.read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("sha256") != hashlib.sha256(out).hexdigest():
        return None  # a record is never trusted over the bytes it describes
    payload = record.get("payload")
    return out, Compression(payload) if payload in set(Compression) else None


def _store_entry(path: Path, out: bytes, payload: Compression | None) -> None:
    """The gzip, then its record (so an entry without a record is no entry), each under a temporary name."""
    record = json.dumps({"sha256": hashlib.sha256(out).hexdigest(), "payload": str(payload) if payload else None})
    for target, blob in ((path, out), (path.with_suffix(".json"), record.encode())):
        try:
            write_bytes(target, blob)
        except OSError:
            return  # the cache is an optimisation: a full disk leaves no entry, the build goes on


def check_no_zero_blocks(data: bytes, name: str, block: int = FS_BLOCK) -> None:
    """mke2fs -d stores an all-zero block as a hole, which Debian's GRUB 0.97 and Xen's ext4 code misread
    (docs/pvgrub-097.md): such a gzip would not boot on ext4."""
    zero = bytes(block)
    for at in range(0, len(data) - block + 1, block):
        if data[at : at + block] == zero:
            raise ImagekitError(f"{name}: the gzipped vmlinux has an all-zero {block}-byte block at {at}, "
                                "which ext4 stores as a hole that PV-GRUB misreads",
                                hint='set pv_format = "bzimage" in the kernel profile, or report this kernel')
