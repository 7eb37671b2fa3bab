"""What an initrd holds: the member names of its cpio archives, however they are compressed.

An initramfs is one or more "newc" cpio archives, each plain or compressed, one after another
(Debian: an uncompressed early-microcode archive, then the main one compressed with zstd).
Lint asks it one question: is a driver (nvme.ko, ena.ko, xen-blkfront.ko) in there?
"""

from __future__ import annotations

import bz2
import lzma
import zlib
from collections.abc import Iterable

from imagekit.errors import CommandFailed
from imagekit.kernel.bzimage import TOOLS, Compression, KernelFormatError, detect_compression
from imagekit.run import run

NEWC = (b"070701", b"070702")
HEADER = 110
TRAILER = "TRAILER!!!"


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _hex(data: bytes, pos: int) -> int:
    """A newc header field: 8 ASCII hex digits (an initrd is read from the image: hostile input)."""
    field = data[pos : pos + 8]
    if len(field) != 8 or not all(c in b"0123456789abcdefABCDEF" for c in field):
        raise KernelFormatError(f"initrd: corrupt cpio header field at byte {pos}: {field!r}")
    return int(field, 16)


def _read_cpio(data: bytes, pos: int, names: list[str]) -> int:
    """Append the member names of the archive at `pos`; return the offset after its trailer."""
    while True:
        if data[pos : pos + 6] not in NEWC or pos + HEADER > len(data):
            raise KernelFormatError(f"initrd: corrupt cpio header at byte {pos}")
        filesize, namesize = _hex(data, pos + 54), _hex(data, pos + 94)
        name = data[pos + HEADER : pos + HEADER + namesize - 1].decode("utf-8", "replace")
        pos = _align4(pos + HEADER + namesize)
        pos = _align4(pos + filesize)
        if name == TRAILER:
            return pos
        names.append(name.removeprefix("./"))


def _decompress_all(data: bytes, compression: Compression) -> bytes:
    """The whole compressed stream at the start of `data` (whatever follows it is ignored)."""
    try:
        if compression is Compression.GZIP:
            return zlib.decompressobj(wbits=31).decompress(data)
        if compression is Compression.BZIP2:
            return bz2.BZ2Decompressor().decompress(data)
        if compression in (Compression.XZ, Compression.LZMA):
            fmt = lzma.FORMAT_XZ if compression is Compression.XZ else lzma.FORMAT_ALONE
            return lzma.LZMADecompressor(format=fmt).decompress(data)
        return run(TOOLS[compression], input=data).stdout
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError, CommandFailed) as exc:
        raise KernelFormatError(f"initrd: the {compression} stream does not decompress: {exc}") from None


def initrd_members(data: bytes) -> list[str]:
    """Every member name of every cpio archive in the initrd, in order."""
    names: list[str] = []
    pos = 0
    while pos < len(data):
        if data[pos : pos + 6] in NEWC:
            pos = _read_cpio(data, pos, names)
            while pos < len(data) and data[pos] == 0:  # archives are padded (to 512 bytes or more)
                pos += 1
            continue
        compression = detect_compression(data[pos : pos + 8])
        if compression is None:
            raise KernelFormatError(f"initrd: neither a cpio archive nor a known compressor at byte {pos}")
        data, pos = _decompress_all(data[pos:], compression), 0
    return names


def module_names(members: Iterable[str]) -> set[str]:
    """Kernel module names among the members: 'kernel/drivers/nvme/host/nvme.ko.zst' -> 'nvme'."""
    found = set()
    for member in members:
        base = member.rsplit("/", 1)[-1]
        for suffix in (".ko", ".ko.xz", ".ko.zst", ".ko.gz"):
            if base.endswith(suffix):
                found.add(base[: -len(suffix)].replace("_", "-"))
    return found
