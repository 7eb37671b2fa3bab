"""A kernel as Xen's domain builder loads it for PV-GRUB: which bytes it accepts, and the ELF it starts.

PV-GRUB hands the kernel file's bytes (as GRUB 0.97 read them: `grub_open` already gunzips a gzipped
file) to Xen's domain builder (`kexec` in stubdom/grub/kexec.c -> `xc_dom_kernel_mem`). That code, in
xen-project/xen tools/libs/guest, decides:
  1. the whole blob, when it starts with the gzip magic, is gunzipped (`xc_dom_try_gunzip`,
     xg_dom_core.c). No other whole-file compressor is tried.
  2. a loader must accept it (`xc_dom_find_loader`):
     - ELF (xg_dom_elfloader.c): an ELF image whose Xen notes `elf_xen_parse` accepts;
     - bzImage (xg_dom_bzimageloader.c `xc_dom_probe_bzimage_kernel`): "HdrS" at 0x202, boot protocol
       2.08 or later, the payload at `(setup_sects + 1) * 512 + payload_offset`, decompressed by its magic
       (gzip, bzip2, xz, zstd, lzma, lzo, lz4; anything else: "unknown compression format"), then the ELF
       loader's probe on the result.
  3. `elf_xen_parse` / `elf_xen_note_check` (xen/common/libelf/libelf-dominfo.c), for a PV guest: Xen
     ELF notes (or a `__xen_guest` section) must be there ("Not a Xen-ELF image"), GUEST_OS "linux" or
     LOADER "generic", XEN_VERSION "xen-3.0".
Payloads: Xen's loader gained lz4 in 4.4 and zstd in 4.15; AWS documents PV-GRUB for gzip, bzip2, lzo and
xz kernels only, so lz4 and zstd are refused here with that reason (lzma, which Xen has decoded as long as
xz, is accepted).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from imagekit.kernel.bzimage import Compression, KernelFormatError, decompress_payload
from imagekit.kernel.elf import ELF_MAGIC, PT_NOTE, NotElf, read_elf

XEN_ELFNOTE_ENTRY = 1
XEN_ELFNOTE_XEN_VERSION = 5
XEN_ELFNOTE_GUEST_OS = 6
XEN_ELFNOTE_LOADER = 8
XEN_ELFNOTE_PHYS32_ENTRY = 18
EM_386, EM_X86_64 = 3, 62
# the magic each payload is told by, in the order xc_dom_probe_bzimage_kernel tests them
XEN_MAGIC: tuple[tuple[bytes, Compression], ...] = (
    (b"\x1f\x8b", Compression.GZIP), (b"BZh", Compression.BZIP2), (b"\xfd7zXZ", Compression.XZ),
    (b"\x28\xb5\x2f\xfd", Compression.ZSTD), (b"\x5d\x00", Compression.LZMA), (b"\x89LZO\x00", Compression.LZO),
    (b"\x02\x21", Compression.LZ4),
)
# payloads Xen decodes but AWS's PV-GRUB is not documented to: the Xen release that added each
NEWER_XEN = {Compression.LZ4: "4.4", Compression.ZSTD: "4.15"}
KERNEL_FORMAT = "pvgrub-kernel-format"
NOT_XEN_PV = "pvgrub-not-xen-pv"


class XenRefused(Exception):
    """Xen's domain builder would refuse the kernel: `reason` is the boot report's failure reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class XenKernel:
    """The kernel Xen would start: its ELF and how it got there."""

    elf: bytes  # the ELF vmlinux the ELF loader takes
    path: tuple[str, ...]  # each step, e.g. ("gunzip (whole file)", "ELF")
    compression: Compression | None  # of a bzImage payload, or gzip for a gzipped ELF
    notes: dict[int, bytes]  # Xen ELF notes: type -> descriptor
    bits: int

    @property
    def pvh(self) -> bool:
        """Carries XEN_ELFNOTE_PHYS32_ENTRY: QEMU's -kernel can start it through its PVH entry."""
        return XEN_ELFNOTE_PHYS32_ENTRY in self.notes

    def note_text(self, kind: int) -> str:
        return self.notes.get(kind, b"").split(b"\0", 1)[0].decode("ascii", "replace")


def xen_load(data: bytes, name: str = "kernel") -> XenKernel:
    """What Xen's domain builder does with a PV-GRUB kernel's bytes; XenRefused when it would refuse them."""
    path: list[str] = []
    compression = None
    if data[:2] == b"\x1f\x8b" and len(data) >= 6:
        data, compression = _gunzip(data, name), Compression.GZIP
        path.append("gunzip (whole file, xc_dom_try_gunzip)")
    if data[:4] == ELF_MAGIC:
        path.append("ELF loader")
        return _elf_kernel(data, name, tuple(path), compression)
    if data[0x202:0x206] == b"HdrS":
        payload, compression = _bzimage_payload(data, name)
        path.append(f"bzImage loader ({compression} payload)")
        return _elf_kernel(payload, name, tuple(path), compression)
    raise XenRefused(KERNEL_FORMAT, f"{name}: neither an ELF image nor a bzImage (starts {data[:4].hex()}): "
                     "xc_dom_find_loader: no loader found")


def _gunzip(data: bytes, name: str) -> bytes:
    try:
        out = zlib.decompressobj(wbits=31).decompress(data)
    except zlib.error as exc:
        raise XenRefused(KERNEL_FORMAT, f"{name}: gzipped, but it does not gunzip ({exc}): "
                         "xc_dom_try_gunzip fails") from None
    return out


def _bzimage_payload(data: bytes, name: str) -> tuple[bytes, Compression]:
    """The decompressed payload, as xc_dom_probe_bzimage_kernel finds and decompresses it."""
    payload, compression = probe_bzimage(data, name)
    try:
        return decompress_payload(payload, compression, name), compression
    except KernelFormatError as exc:
        raise XenRefused(KERNEL_FORMAT, f"{exc}: Xen's loader would fail the same way") from None


def bzimage_refusal(data: bytes, name: str = "kernel") -> XenRefused | None:
    """Why Xen's bzImage loader on EC2's PV-GRUB would refuse this bzImage before decompressing it (its
    header or its payload's compression: lz4, zstd, unknown), or None when the payload is one it decodes."""
    try:
        probe_bzimage(data, name)
    except XenRefused as exc:
        return exc
    return None


def probe_bzimage(data: bytes, name: str) -> tuple[bytes, Compression]:
    """The compressed payload and its compression, as xc_dom_probe_bzimage_kernel finds it; XenRefused when
    the header is too old or the compression is one EC2's PV-GRUB does not decode."""
    if len(data) < 0x250:
        raise XenRefused(KERNEL_FORMAT, f"{name}: bzImage too small for its setup header")
    version, setup_sects = struct.unpack_from("<H", data, 0x206)[0], data[0x1F1]
    if version < 0x0208:
        raise XenRefused(KERNEL_FORMAT, f"{name}: bzImage boot protocol too old ({version:04x}): "
                         "Xen's loader needs 2.08 (payload_offset)")
    offset, length = struct.unpack_from("<II", data, 0x248)
    start = (setup_sects + 1) * 512 + offset
    if start >= len(data) or start + length > len(data):
        raise XenRefused(KERNEL_FORMAT, f"{name}: the bzImage payload lies past the end of the file")
    payload = data[start : start + length]
    compression = next((c for magic, c in XEN_MAGIC if payload.startswith(magic)), None)
    if compression is None:
        raise XenRefused(KERNEL_FORMAT, f"{name}: bzImage payload starts {payload[:4].hex()}: "
                         "xc_dom_probe_bzimage_kernel: unknown compression format")
    refused = payload_refusal(compression)
    if refused is not None:
        raise XenRefused(KERNEL_FORMAT, f"{name}: {refused}; "
                         "install the kernel as a gzipped ELF vmlinux (`imagekit kernel aki`)")
    return payload, compression


def payload_refusal(compression: Compression) -> str | None:
    """Why EC2's PV-GRUB would not decompress a bzImage payload of this compression, or None if it would."""
    if compression not in NEWER_XEN:
        return None
    return (f"bzImage payload is {compression}: AWS documents PV-GRUB for gzip, bzip2, lzo and xz kernels only "
            f"({compression} needs Xen {NEWER_XEN[compression]} or later, which EC2's PV-GRUB is not documented "
            "to be)")


def _elf_kernel(data: bytes, name: str, path: tuple[str, ...], compression: Compression | None) -> XenKernel:
    try:
        elf = read_elf(data)
    except NotElf as exc:
        raise XenRefused(KERNEL_FORMAT, f"{name}: not a valid ELF image ({exc}): "
                         "xc_dom_probe_elf_kernel fails") from None
    if elf.machine not in (EM_386, EM_X86_64):
        raise XenRefused(KERNEL_FORMAT, f"{name}: an ELF for {elf.arch}, not x86: xc_dom_guest_type: "
                         "unknown image type")
    notes = xen_notes(data)
    kernel = XenKernel(data, path, compression, notes, elf.bits)
    check_notes(kernel, name)
    return kernel


def check_notes(kernel: XenKernel, name: str) -> None:
    """elf_xen_note_check for a PV guest (libelf-dominfo.c)."""
    if not kernel.notes:
        raise XenRefused(NOT_XEN_PV, f"{name}: no Xen ELF notes: Xen's loader says \"Not a Xen-ELF image: No ELF "
                         "notes or '__xen_guest' section found\" (the kernel was built without CONFIG_XEN_PV)")
    loader, guest_os = kernel.note_text(XEN_ELFNOTE_LOADER), kernel.note_text(XEN_ELFNOTE_GUEST_OS)
    if not loader.startswith("generic") and not guest_os.startswith("linux"):
        raise XenRefused(NOT_XEN_PV, f"{name}: Xen notes say LOADER {loader!r}, GUEST_OS {guest_os!r}: Xen "
                         "only loads images built for the generic loader or Linux")
    version = kernel.note_text(XEN_ELFNOTE_XEN_VERSION)
    if not version.startswith("xen-3.0"):
        raise XenRefused(NOT_XEN_PV, f"{name}: Xen notes say XEN_VERSION {version!r}: Xen only loads images "
                         "built for xen-3.0")


def xen_notes(data: bytes) -> dict[int, bytes]:
    """The `Xen` notes of the ELF's PT_NOTE segments (type -> descriptor), as elf_xen_parse reads them."""
    is64, endian = data[4] == 2, "<" if data[5] == 1 else ">"
    if is64:
        phoff, phentsize, phnum = struct.unpack_from(f"{endian}Q", data, 32)[0], *struct.unpack_from(
            f"{endian}HH", data, 54)
    else:
        phoff, phentsize, phnum = struct.unpack_from(f"{endian}I", data, 28)[0], *struct.unpack_from(
            f"{endian}HH", data, 42)
    notes: dict[int, bytes] = {}
    for i in range(phnum):
        at = phoff + i * phentsize
        if is64:
            p_type, _, p_offset, _, _, p_filesz = struct.unpack_from(f"{endian}IIQQQQ", data, at)
        else:
            p_type, p_offset, _, _, p_filesz = struct.unpack_from(f"{endian}IIIII", data, at)
        if p_type == PT_NOTE and p_offset:  # Xen skips a note segment at offset 0 (broken binutils)
            notes.update(_segment_notes(data, p_offset, p_filesz, endian))
    return notes


def _segment_notes(data: bytes, offset: int, size: int, endian: str) -> dict[int, bytes]:
    notes: dict[int, bytes] = {}
    pos, end = offset, min(offset + size, len(data))
    while pos + 12 <= end:
        namesz, descsz, kind = struct.unpack_from(f"{endian}III", data, pos)
        pos += 12
        owner = data[pos : pos + namesz].rstrip(b"\0")
        pos += (namesz + 3) & ~3
        if owner == b"Xen":
            notes[kind] = data[pos : pos + descsz]
        pos += (descsz + 3) & ~3
    return notes
