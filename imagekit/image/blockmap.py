"""An image's identity at data speed: its block map.

The image is cut into blocks of 512 KiB, the block size of EBS snapshots. For every block that is not
all zeros the map holds its index and raw SHA-256: exactly the checksums EBS direct's PutSnapshotBlock
sends, and EBS's LINEAR aggregate (the CompleteSnapshot checksum) is the SHA-256 of those digests in
index order. Holes are found with SEEK_DATA/SEEK_HOLE and never read, so the cost grows with the data
in the image, not with its size: a 2 GiB image holding 400 MB costs the hashing of 400 MB.

The image id is the SHA-256 of the map itself (a version tag, the image size, the block size, and each
index with its digest): two files have the same id exactly when they read the same, byte for byte,
as far as SHA-256 can tell. The build manifest records the map (`image.block_map`, `image.id`);
publish computes it again from the bytes and compares (a record is never trusted over the bytes).
`imagekit digest IMAGE` prints the whole-file sha256 too, the number `sha256sum` gives.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BLOCK_SIZE = 524288
ZERO_BLOCK = bytes(BLOCK_SIZE)
ID_VERSION = b"imagekit-block-map-1\0"
ALGORITHM = "SHA256"  # EBS ChecksumAlgorithm
AGGREGATION = "LINEAR"  # EBS ChecksumAggregationMethod


def block_count(image_size: int) -> int:
    return (image_size + BLOCK_SIZE - 1) // BLOCK_SIZE


def data_block_indexes(fd: int, size: int) -> Iterator[int]:
    """Indexes of the blocks that may hold data: holes are skipped without being read."""
    if not hasattr(os, "SEEK_DATA"):
        yield from range(block_count(size))
        return
    offset = 0
    last = -1
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole remains (or the filesystem cannot tell: read all)
            return
        end = min(size, os.lseek(fd, start, os.SEEK_HOLE))
        for index in range(max(start // BLOCK_SIZE, last + 1), (end - 1) // BLOCK_SIZE + 1):
            last = index
            yield index
        offset = end


def block_digest(data: bytes) -> bytes | None:
    """The raw SHA-256 of one block (zero-padded to BLOCK_SIZE), None for an all-zero block."""
    padded = data.ljust(BLOCK_SIZE, b"\0")
    return None if padded == ZERO_BLOCK else hashlib.sha256(padded).digest()


def linear_checksum(digests: dict[int, bytes]) -> str:
    """EBS's LINEAR aggregate: SHA-256 over the blocks' raw digests in index order, base64."""
    outer = hashlib.sha256()
    for index in sorted(digests):
        outer.update(digests[index])
    return base64.b64encode(outer.digest()).decode()


@dataclass(frozen=True)
class BlockMap:
    size: int  # bytes in the image
    blocks: dict[int, bytes]  # index -> raw SHA-256 of each non-zero block

    @property
    def aggregate(self) -> str:
        """The CompleteSnapshot checksum of exactly these blocks (base64)."""
        return linear_checksum(self.blocks)

    @property
    def image_id(self) -> str:
        """SHA-256 (hex) of the map: the image's identity."""
        h = hashlib.sha256(ID_VERSION + struct.pack(">QI", self.size, BLOCK_SIZE))
        for index in sorted(self.blocks):
            h.update(struct.pack(">Q", index) + self.blocks[index])
        return h.hexdigest()

    def record(self) -> dict[str, Any]:
        """The manifest's `block_map`."""
        return {
            "block_size": BLOCK_SIZE,
            "algorithm": ALGORITHM,
            "aggregation": AGGREGATION,
            "aggregate": self.aggregate,
            "data_blocks": len(self.blocks),
            "blocks": [[i, base64.b64encode(self.blocks[i]).decode()] for i in sorted(self.blocks)],
        }

    def first_difference(self, other: BlockMap) -> str | None:
        """Where two maps differ, in words (None: they are the same)."""
        if self.size != other.size:
            return f"size {self.size} != {other.size}"
        for index in sorted(set(self.blocks) | set(other.blocks)):
            if self.blocks.get(index) != other.blocks.get(index):
                return f"block {index} (bytes {index * BLOCK_SIZE}-{(index + 1) * BLOCK_SIZE - 1}) differs"
        return None


class BadRecord(ValueError):
    """A block map record that is not one: the message names the key at fault."""


def from_record(size: int, data: Any) -> BlockMap:
    """The block map a manifest records, validated (BadRecord names the key)."""
    if not isinstance(data, dict):
        raise BadRecord(f"{data!r:.60} is not an object")
    if data.get("block_size") != BLOCK_SIZE:
        raise BadRecord(f"block_size: {data.get('block_size')!r:.40} is not {BLOCK_SIZE}")
    if data.get("algorithm", ALGORITHM) != ALGORITHM or data.get("aggregation", AGGREGATION) != AGGREGATION:
        raise BadRecord(f"algorithm/aggregation: only {ALGORITHM}/{AGGREGATION} are known")
    rows = data.get("blocks")
    if not isinstance(rows, list):
        raise BadRecord("blocks: not a list of [index, base64 sha256]")
    blocks: dict[int, bytes] = {}
    limit = block_count(size)
    for n, row in enumerate(rows):
        blocks.update([_row(n, row, limit)])
    if len(blocks) != len(rows):
        raise BadRecord("blocks: an index is listed twice")
    return BlockMap(size, blocks)


def _row(n: int, row: Any, limit: int) -> tuple[int, bytes]:
    if not (isinstance(row, list) and len(row) == 2 and type(row[0]) is int and isinstance(row[1], str)):
        raise BadRecord(f"blocks.{n}: {row!r:.60} is not [index, base64 sha256]")
    index, text = row
    if not 0 <= index < limit:
        raise BadRecord(f"blocks.{n}: index {index} is outside the image ({limit} blocks)")
    try:
        digest = base64.b64decode(text, validate=True)
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise BadRecord(f"blocks.{n}: {text!r:.60} is not a base64 SHA-256")
    return index, digest


class StreamMap:
    """The block map of bytes read in order (an upload's parts): what was read, not what was meant to be."""

    def __init__(self) -> None:
        self.size = 0
        self.blocks: dict[int, bytes] = {}
        self._pending = bytearray()

    def update(self, data: bytes) -> None:
        self._pending += data
        whole = len(self._pending) - len(self._pending) % BLOCK_SIZE
        for at in range(0, whole, BLOCK_SIZE):
            self._add(bytes(self._pending[at : at + BLOCK_SIZE]))
        del self._pending[:whole]

    def _add(self, block: bytes) -> None:
        digest = block_digest(block)
        if digest is not None:
            self.blocks[self.size // BLOCK_SIZE] = digest
        self.size += len(block)

    def finish(self) -> BlockMap:
        if self._pending:
            self._add(bytes(self._pending))
            self._pending.clear()
        return BlockMap(self.size, dict(self.blocks))


def read_block_map(fd: int, size: int, on_block: Any = None) -> BlockMap:
    """The block map of an open file of `size` bytes; `on_block(bytes_covered)` after each block read."""
    blocks: dict[int, bytes] = {}
    for index in data_block_indexes(fd, size):
        start = index * BLOCK_SIZE
        data = os.pread(fd, min(BLOCK_SIZE, size - start), start)
        if len(data) < min(BLOCK_SIZE, size - start):
            raise OSError(f"short read at byte {start + len(data)} of {size}: the file shrank")
        digest = block_digest(data)
        if digest is not None:
            blocks[index] = digest
        if on_block is not None:
            on_block(start + len(data))
    return BlockMap(size, blocks)


def block_map_of(path: Path) -> BlockMap:
    with open(path, "rb") as f:
        return read_block_map(f.fileno(), os.fstat(f.fileno()).st_size)
