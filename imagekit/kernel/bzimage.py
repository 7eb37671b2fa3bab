"""Turn a bzImage into the gzipped ELF vmlinux an AKI must be (seed 004).

A bzImage is a real-mode setup (boot sector + setup code, `setup_sects` sectors) followed by the
protected-mode decompressor; since boot protocol 2.08 the header says where the compressed kernel
(the "payload") sits: `payload_offset`/`payload_length`, relative to the protected-mode code.
Older kernels carry no such fields: the payload is found by its compression magic, as the
kernel's own scripts/extract-vmlinux does. Every compressor but gzip has the decompressed size
appended to the payload (4 bytes, little-endian); gzip keeps it in its own trailer.

Decompression uses the standard library where it can (gzip, bzip2, lzma, xz) and the packaged
tools otherwise (lzop, lz4, zstd), run through imagekit.util.run.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from imagekit.kernel.elf import ElfInfo, NotElf, is_elf, read_elf
from imagekit.util.errors import CommandFailed, UsageError
from imagekit.util.run import run

HEADER_END = 0x268  # the end of the boot protocol 2.15 header fields we read
BOOT_FLAG = 0xAA55
XLF_KERNEL_64 = 0x1


class Compression(StrEnum):
    GZIP = "gzip"
    BZIP2 = "bzip2"
    LZMA = "lzma"
    XZ = "xz"
    LZO = "lzo"
    LZ4 = "lz4"
    ZSTD = "zstd"


# what each payload starts with (the kernel's compressed/Makefile and scripts/extract-vmlinux)
MAGIC: dict[Compression, bytes] = {
    Compression.GZIP: b"\x1f\x8b\x08",
    Compression.XZ: b"\xfd7zXZ\x00",
    Compression.BZIP2: b"BZh",
    Compression.LZMA: b"\x5d\x00\x00",
    Compression.LZO: b"\x89LZO\x00",
    Compression.LZ4: b"\x02\x21\x4c\x18",
    Compression.ZSTD: b"\x28\xb5\x2f\xfd",
}
# A decompressed x86 vmlinux is 20-80 MiB (more only with debug info, which no boot image carries); a
# payload that decompresses to more is not a kernel but a decompression bomb, and is not expanded further.
MAX_VMLINUX = 256 * 1024 * 1024

# the packaged tool for the formats the standard library lacks: argv reading stdin, writing stdout
TOOLS: dict[Compression, list[str]] = {
    Compression.LZO: ["lzop", "-dc"],
    Compression.LZ4: ["lz4", "-dc"],
    Compression.ZSTD: ["zstd", "-dcq"],
}
# what the EC2 PV-GRUB reads: "kernels may be gzip, bzip2, lzo or xz compressed" (AWS user guide)
PVGRUB_COMPRESSIONS = frozenset({Compression.GZIP, Compression.BZIP2, Compression.LZO, Compression.XZ})


class KernelFormatError(UsageError):
    """The file is not a kernel imagekit can read (not a bzImage, truncated, corrupt payload)."""


@dataclass(frozen=True)
class BootHeader:
    """The x86 boot protocol fields imagekit uses (Documentation/arch/x86/boot.rst)."""

    protocol: tuple[int, int]
    setup_sects: int
    loadflags: int
    xloadflags: int  # 0 before protocol 2.12
    payload_offset: int | None  # None before protocol 2.08
    payload_length: int | None
    banner: str  # the version banner the header points at ("" if absent)

    @property
    def protected_mode_offset(self) -> int:
        return (self.setup_sects or 4) * 512 + 512

    @property
    def release(self) -> str:
        """The kernel release (`uname -r`): the banner's first word."""
        return self.banner.split(" ", 1)[0]

    @property
    def bits(self) -> int | None:
        """64 when the header says the kernel is 64-bit, 32 when it says it is not, None if it cannot."""
        if self.protocol < (2, 12):
            return None
        return 64 if self.xloadflags & XLF_KERNEL_64 else 32


@dataclass(frozen=True)
class Vmlinux:
    """The decompressed kernel and where it came from."""

    data: bytes
    elf: ElfInfo
    source_format: str  # "bzImage", "elf", "gzip-elf", "arm64-image" or "gzip-arm64-image"
    compression: Compression | None  # of the bzImage payload (None for an ELF input)
    header: BootHeader | None


def is_bzimage(data: bytes) -> bool:
    return len(data) >= 0x206 and data[0x202:0x206] == b"HdrS" and _u16(data, 0x1FE) == BOOT_FLAG


def _u16(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<H", data, offset)[0])


def _u32(data: bytes, offset: int) -> int:
    return int(struct.unpack_from("<I", data, offset)[0])


def _version_string(data: bytes, pointer: int) -> str:
    if not pointer:
        return ""
    start = pointer + 0x200
    raw = data[start : start + 256].split(b"\0", 1)[0]
    return raw.decode("ascii", "replace")


def read_header(data: bytes, name: str = "kernel") -> BootHeader:
    """The boot protocol header of a bzImage; KernelFormatError if it is not one."""
    if not is_bzimage(data):
        what = "an ELF file (a vmlinux)" if is_elf(data) else "not a bzImage"
        raise KernelFormatError(f"{name}: {what}: no x86 boot header ('HdrS' at 0x202, 0xAA55 at 0x1fe)")
    if len(data) < HEADER_END:
        raise KernelFormatError(f"{name}: truncated: {len(data)} bytes, shorter than the boot header")
    major, minor = data[0x207], data[0x206]
    protocol = (major, minor)
    has_payload = protocol >= (2, 8)
    return BootHeader(
        protocol=protocol,
        setup_sects=data[0x1F1],
        loadflags=data[0x211],
        xloadflags=_u16(data, 0x236) if protocol >= (2, 12) else 0,
        payload_offset=_u32(data, 0x248) if has_payload else None,
        payload_length=_u32(data, 0x24C) if has_payload else None,
        banner=_version_string(data, _u16(data, 0x20E)) if protocol >= (2, 0) else "",
    )


def detect_compression(payload: bytes) -> Compression | None:
    for compression, magic in MAGIC.items():
        if payload.startswith(magic):
            return compression
    return None


def _payload_by_header(data: bytes, header: BootHeader, name: str) -> bytes:
    assert header.payload_offset is not None and header.payload_length is not None
    start = header.protected_mode_offset + header.payload_offset
    end = start + header.payload_length
    if header.payload_length == 0:
        raise KernelFormatError(f"{name}: the boot header gives an empty payload")
    if end > len(data):
        raise KernelFormatError(
            f"{name}: truncated: the payload ends at byte {end} but the file has {len(data)} bytes"
        )
    return data[start:end]


def _gzip_candidates(data: bytes, start: int) -> list[int]:
    """Offsets after `start` where a gzip stream may begin (the first few)."""
    found: list[int] = []
    pos = data.find(MAGIC[Compression.GZIP], start)
    while pos != -1 and len(found) < 16:
        found.append(pos)
        pos = data.find(MAGIC[Compression.GZIP], pos + 1)
    return found


# --- decompressors: each returns the decompressed bytes and raises on corrupt input ---------------


def _capped(out: bytes) -> bytes:
    if len(out) > MAX_VMLINUX:
        raise ValueError(f"it decompresses to more than {MAX_VMLINUX >> 20} MiB: not a kernel")
    return out


def _gunzip(payload: bytes) -> bytes:
    d = zlib.decompressobj(wbits=31)
    out = _capped(d.decompress(payload, MAX_VMLINUX + 1))
    if not d.eof:
        raise EOFError("gzip stream ends early")
    return out


def _bunzip2(payload: bytes) -> bytes:
    d = bz2.BZ2Decompressor()
    out = _capped(d.decompress(payload, MAX_VMLINUX + 1))
    if not d.eof:
        raise EOFError("bzip2 stream ends early")
    return out


def _unlzma(fmt: int) -> Callable[[bytes], bytes]:
    def decompress(payload: bytes) -> bytes:
        d = lzma.LZMADecompressor(format=fmt)
        out = _capped(d.decompress(payload, MAX_VMLINUX + 1))
        if not d.eof:
            raise EOFError("stream ends early")
        return out

    return decompress


def _with_tool(compression: Compression) -> Callable[[bytes], bytes]:
    def decompress(payload: bytes) -> bytes:
        # the payload ends with the 4-byte size the kernel's build appended: the tools call it garbage
        if len(payload) >= 4 and _u32(payload, len(payload) - 4) > MAX_VMLINUX:
            raise ValueError(f"its size trailer says more than {MAX_VMLINUX >> 20} MiB: not a kernel")
        return _capped(run(TOOLS[compression], input=payload[:-4]).stdout)

    return decompress


DECOMPRESSORS: dict[Compression, Callable[[bytes], bytes]] = {
    Compression.GZIP: _gunzip,
    Compression.BZIP2: _bunzip2,
    Compression.LZMA: _unlzma(lzma.FORMAT_ALONE),
    Compression.XZ: _unlzma(lzma.FORMAT_XZ),
    Compression.LZO: _with_tool(Compression.LZO),
    Compression.LZ4: _with_tool(Compression.LZ4),
    Compression.ZSTD: _with_tool(Compression.ZSTD),
}


def decompress_payload(payload: bytes, compression: Compression, name: str = "kernel") -> bytes:
    """Decompress a kernel payload and check it against the size the build appended."""
    try:
        out = DECOMPRESSORS[compression](payload)
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as exc:
        raise KernelFormatError(f"{name}: the {compression} payload does not decompress: {exc}") from None
    except CommandFailed as exc:
        raise KernelFormatError(f"{name}: the {compression} payload does not decompress: {exc}") from None
    if compression is not Compression.GZIP and len(payload) >= 4:
        expected = _u32(payload, len(payload) - 4)
        if expected != len(out):
            raise KernelFormatError(
                f"{name}: the {compression} payload decompressed to {len(out)} bytes, "
                f"but its size trailer says {expected} (truncated or corrupt)"
            )
    return out


def extract_payload(data: bytes, name: str = "kernel") -> tuple[BootHeader, bytes, Compression]:
    """The bzImage's compressed kernel, by the header (protocol >= 2.08) or by the gzip magic."""
    header = read_header(data, name)
    if header.payload_offset is not None:
        payload = _payload_by_header(data, header, name)
        compression = detect_compression(payload)
        if compression is None:
            raise KernelFormatError(
                f"{name}: the payload starts with {payload[:6].hex()}, which no known compressor writes"
            )
        return header, payload, compression
    # before protocol 2.08 (Linux 2.6.26) kernels were always gzipped: find the stream by its magic
    for offset in _gzip_candidates(data, header.protected_mode_offset):
        try:
            decompress_payload(data[offset:], Compression.GZIP, name)
        except KernelFormatError:
            continue
        return header, data[offset:], Compression.GZIP
    raise KernelFormatError(f"{name}: no compressed kernel found after the setup code (truncated?)")


def check_vmlinux(out: bytes, header: BootHeader | None, name: str) -> ElfInfo:
    try:
        elf = read_elf(out)
    except NotElf as exc:
        raise KernelFormatError(f"{name}: the decompressed kernel is not an ELF vmlinux: {exc}") from None
    if header is not None and header.bits is not None and header.bits != elf.bits:
        raise KernelFormatError(
            f"{name}: the boot header says a {header.bits}-bit kernel but the vmlinux is ELF{elf.bits}"
        )
    if elf.arch not in ("x86_64", "i386"):
        raise KernelFormatError(f"{name}: the vmlinux is for {elf.arch}, not x86")
    return elf


# An arm64 kernel Image (Documentation/arch/arm64/booting.rst): "ARM\x64" at offset 0x38 of the header.
ARM64_MAGIC_OFFSET, ARM64_MAGIC = 0x38, b"ARM\x64"
ARM64_ELF = ElfInfo(bits=64, machine=183, type=2, notes=())  # what an arm64 Image stands for: EM_AARCH64


def is_arm64_image(data: bytes) -> bool:
    return data[ARM64_MAGIC_OFFSET:ARM64_MAGIC_OFFSET + 4] == ARM64_MAGIC


def load_vmlinux(data: bytes, name: str = "kernel") -> Vmlinux:
    """The ELF vmlinux inside a bzImage, or the input itself when it already is one (plain or gzipped); an
    arm64 Image (Debian's arm64 vmlinuz: a gzipped Image) as itself, its `elf` saying aarch64."""
    if is_arm64_image(data):
        return Vmlinux(data, ARM64_ELF, "arm64-image", None, None)
    if data.startswith(MAGIC[Compression.GZIP]) and not is_bzimage(data):
        out = decompress_payload(data, Compression.GZIP, name)
        if is_arm64_image(out):
            return Vmlinux(out, ARM64_ELF, "gzip-arm64-image", Compression.GZIP, None)
        return Vmlinux(out, check_vmlinux(out, None, name), "gzip-elf", Compression.GZIP, None)
    if is_elf(data):
        return Vmlinux(data, check_vmlinux(data, None, name), "elf", None, None)
    header, payload, compression = extract_payload(data, name)
    out = decompress_payload(payload, compression, name)
    return Vmlinux(out, check_vmlinux(out, header, name), "bzImage", compression, header)


def read_kernel(path: str | os.PathLike[str]) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not a kernel") from None
    except PermissionError:
        raise UsageError(f"{path}: permission denied") from None


@dataclass(frozen=True)
class AkiKernel:
    """What `kernel aki` wrote."""

    source: str
    output: str
    source_format: str
    compression: str | None
    kernel_release: str
    banner: str
    arch: str
    bits: int
    xen_pv: bool
    vmlinux_size: int
    output_size: int
    sha256: str


def write_gzip(data: bytes, out: Path, level: int = 9) -> None:
    """Write data gzipped (mtime 0: reproducible) to a temporary file beside `out`, then rename."""
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                   compresslevel=level, mtime=0) as gz:
            gz.write(data)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def convert_to_aki(source: str | os.PathLike[str], output: str | os.PathLike[str]) -> AkiKernel:
    """seed 004: an AKI kernel must not be a bzImage: write the ELF vmlinux, gzipped, to `output`."""
    name = os.fspath(source)
    vmlinux = load_vmlinux(read_kernel(source), name)
    out = Path(output)
    if not out.parent.is_dir():
        raise UsageError(f"-o: directory {out.parent} does not exist")
    write_gzip(vmlinux.data, out)
    return AkiKernel(
        source=name,
        output=os.fspath(out),
        source_format=vmlinux.source_format,
        compression=str(vmlinux.compression) if vmlinux.compression else None,
        kernel_release=vmlinux.header.release if vmlinux.header else "",
        banner=vmlinux.header.banner if vmlinux.header else "",
        arch=vmlinux.elf.arch,
        bits=vmlinux.elf.bits,
        xen_pv=vmlinux.elf.xen_pv,
        vmlinux_size=len(vmlinux.data),
        output_size=out.stat().st_size,
        sha256=hashlib.sha256(out.read_bytes()).hexdigest(),
    )
