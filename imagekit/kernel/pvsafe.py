"""PV-safe kernels (issue 14): the file a PV image's menu.lst boots, in a form EC2's PV-GRUB loads.

PV-GRUB hands the kernel file to Xen's domain builder, which decompresses a bzImage's payload itself
and is documented by AWS for gzip, bzip2, lzo and xz payloads only (imagekit/kernel/xenload.py, the one
model of that loader). Debian's cloud kernel is an LZ4 bzImage, so a PV build installs beside it the ELF
vmlinux inside it, gzipped (seed 004: "strip vmlinux; gzip vmlinux"), and menu.lst boots that. GRUB 0.97
gunzips the file as it reads it; Xen's ELF loader takes the result.

The gzip is deterministic (mtime 0, no file name, level 6 as plain `gzip`), so reproducible builds
stay byte-identical.
"""

from __future__ import annotations

import gzip
from enum import StrEnum
from typing import Literal

from imagekit.kernel.bzimage import MAGIC, Compression, is_bzimage, load_vmlinux
from imagekit.kernel.elf import is_elf
from imagekit.kernel.xenload import bzimage_refusal
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


def check_no_zero_blocks(data: bytes, name: str, block: int = FS_BLOCK) -> None:
    """mke2fs -d stores an all-zero block as a hole, which Debian's GRUB 0.97 and Xen's ext4 code misread
    (docs/pvgrub-097.md): such a gzip would not boot on ext4."""
    zero = bytes(block)
    for at in range(0, len(data) - block + 1, block):
        if data[at : at + block] == zero:
            raise ImagekitError(f"{name}: the gzipped vmlinux has an all-zero {block}-byte block at {at}, "
                                "which ext4 stores as a hole that PV-GRUB misreads",
                                hint='set pv_format = "bzimage" in the kernel profile, or report this kernel')
