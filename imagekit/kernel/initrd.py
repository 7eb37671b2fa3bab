"""What an initrd holds: the member names of its cpio archives, however they are compressed.

An initramfs is one or more "newc" cpio archives, each plain or compressed, one after another
(Debian: an uncompressed early-microcode archive, then the main one compressed with zstd).
Lint asks it one question: is a driver (nvme.ko, ena.ko, xen-blkfront.ko) in there?

The initrd comes from the image (hostile input) and may be large: it is read as a stream, forward
only, in chunks (headers are parsed, member data skipped), through the standard library's
decompressors or the packaged tool (zstd, lz4, lzop) on a pipe; memory stays at a few chunks
whatever its size, and at most MAX_DATA decompressed bytes are read (a bomb stops there).
"""

from __future__ import annotations

import bz2
import io
import lzma
import os
import threading
import zlib
from collections.abc import Callable, Iterable
from contextlib import ExitStack, suppress
from typing import BinaryIO

from imagekit.kernel.bzimage import TOOLS, Compression, KernelFormatError, detect_compression
from imagekit.util.errors import CommandFailed
from imagekit.util.run import Piped, pipe

NEWC = (b"070701", b"070702")
HEADER = 110
TRAILER = "TRAILER!!!"
CHUNK = 1 << 20
MAX_NAME = 4096  # PATH_MAX: a longer member name is a corrupt header
MAX_DATA = 4 << 30  # decompressed bytes read at most (Debian's initrds expand to ~100 MiB)

Source = Callable[[int], bytes]  # read(n): up to n bytes, b"" at the end


class _Stream:
    """Bytes read forward only from a source, with `pos` counted from the start of this stream."""

    def __init__(self, source: Source) -> None:
        self._source, self._buf, self._at, self.pos = source, b"", 0, 0

    def peek(self, n: int) -> bytes:
        if len(self._buf) - self._at < n:
            parts = [self._buf[self._at:]]
            have = len(parts[0])
            while have < n and (more := self._source(max(CHUNK, n - have))):
                parts.append(more)
                have += len(more)
            self._buf, self._at = b"".join(parts), 0
        return self._buf[self._at : self._at + n]

    def read(self, n: int) -> bytes:
        data = self.peek(n)
        self._at += len(data)
        self.pos += len(data)
        if self.pos > MAX_DATA:
            raise KernelFormatError(f"initrd: over {MAX_DATA >> 30} GiB decompressed: not an initrd")
        return data

    def skip(self, n: int) -> None:
        while n > 0:
            data = self.read(min(n, CHUNK))
            if not data:
                return
            n -= len(data)

    def skip_zeros(self) -> None:
        """Archives are padded (to 512 bytes or more) with zeros."""
        while chunk := self.peek(CHUNK):
            zeros = len(chunk) - len(chunk.lstrip(b"\0"))
            self.read(zeros)
            if zeros < len(chunk):
                return


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _hex(data: bytes, pos: int) -> int:
    """A newc header field: 8 ASCII hex digits (an initrd is read from the image: hostile input)."""
    field = data[pos : pos + 8]
    if len(field) != 8 or not all(c in b"0123456789abcdefABCDEF" for c in field):
        raise KernelFormatError(f"initrd: corrupt cpio header field at byte {pos}: {field!r}")
    return int(field, 16)


def _read_cpio(s: _Stream, names: list[str]) -> None:
    """Append the member names of the archive at the stream's position, up to its trailer."""
    while True:
        start = s.pos
        head = s.read(HEADER)
        if len(head) < HEADER or head[:6] not in NEWC:
            raise KernelFormatError(f"initrd: corrupt cpio header at byte {start}")
        filesize, namesize = _hex(head, 54), _hex(head, 94)
        if not 0 < namesize <= MAX_NAME:
            raise KernelFormatError(f"initrd: corrupt cpio header at byte {start}: a {namesize}-byte name")
        name = s.read(namesize)[:-1].decode("utf-8", "replace")
        s.skip(_align4(s.pos) - s.pos)
        s.skip(_align4(s.pos + filesize) - s.pos)
        if name == TRAILER:
            return
        names.append(name.removeprefix("./"))


def _stdlib(under: _Stream, compression: Compression) -> Source:
    """Decompress `under` from its position with the standard library, a chunk at a time."""
    if compression is Compression.GZIP:
        z = zlib.decompressobj(wbits=31)

        def gunzip(n: int) -> bytes:
            while not z.eof:
                data = z.unconsumed_tail or under.read(CHUNK)
                if not data:
                    raise EOFError("the stream ends early")
                if out := z.decompress(data, n):
                    return out
            return b""

        return gunzip
    d: bz2.BZ2Decompressor | lzma.LZMADecompressor
    if compression is Compression.BZIP2:
        d = bz2.BZ2Decompressor()
    else:
        d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ if compression is Compression.XZ else lzma.FORMAT_ALONE)

    def other(n: int) -> bytes:
        while not d.eof:
            data = under.read(CHUNK) if d.needs_input else b""
            if d.needs_input and not data:
                raise EOFError("the stream ends early")
            if out := d.decompress(data, n):
                return out
        return b""

    return other


def _feed(under: _Stream, tool: Piped, failures: list[KernelFormatError]) -> None:
    """The rest of `under` into the tool's stdin (a thread: the caller reads its stdout meanwhile); stdin
    is closed however it ends, so the tool always sees the end of its input."""
    stdin = tool.proc.stdin
    assert stdin is not None
    try:
        while data := under.read(CHUNK):
            stdin.write(data)
    except KernelFormatError as exc:  # the stream under the tool's is corrupt: the reader reports it
        failures.append(exc)
    except (OSError, ValueError):  # the tool exited (a broken pipe), or the reader stopped
        pass
    finally:
        with suppress(OSError, ValueError):
            stdin.close()


def _with_tool(under: _Stream, compression: Compression, stack: ExitStack) -> Source:
    tool = stack.enter_context(pipe(TOOLS[compression]))
    failures: list[KernelFormatError] = []
    feeder = threading.Thread(target=_feed, args=(under, tool, failures), daemon=True)
    feeder.start()

    def stop() -> None:
        if tool.proc.poll() is None:
            tool.proc.kill()
        feeder.join()

    stack.callback(stop)
    stdout = tool.proc.stdout
    assert stdout is not None

    def read(n: int) -> bytes:
        data = os.read(stdout.fileno(), n)
        if data:
            return data
        feeder.join()
        if failures:
            raise failures[0]
        if (failed := tool.failed()) is not None:
            raise failed
        return b""

    return read


def _decompressed(under: _Stream, compression: Compression, stack: ExitStack) -> _Stream:
    source = _with_tool(under, compression, stack) if compression in TOOLS else _stdlib(under, compression)

    def checked(n: int) -> bytes:
        try:
            return source(n)
        except KernelFormatError:
            raise
        except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError, CommandFailed) as exc:
            raise KernelFormatError(f"initrd: the {compression} stream does not decompress: {exc}") from None

    return _Stream(checked)


def initrd_members(initrd: bytes | BinaryIO) -> list[str]:
    """Every member name of every cpio archive in the initrd (bytes, or a file read as a stream), in order.
    Whatever follows a compressed archive's stream is ignored, as the kernel does."""
    f = io.BytesIO(initrd) if isinstance(initrd, bytes) else initrd
    names: list[str] = []
    with ExitStack() as stack:
        s = _Stream(f.read)
        while head := s.peek(8):
            if head[:6] in NEWC:
                _read_cpio(s, names)
                s.skip_zeros()
                continue
            compression = detect_compression(head)
            if compression is None:
                raise KernelFormatError(f"initrd: neither a cpio archive nor a known compressor at byte {s.pos}")
            s = _decompressed(s, compression, stack)
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
