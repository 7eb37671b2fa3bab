"""What the image's bytes are, read at publish time: the block map, and the image id it gives.

One pass over the blocks that may hold data (holes are found with SEEK_DATA and never read)
gives the block map (imagekit/image/blockmap.py): for every non-zero 512 KiB block its index and
raw SHA-256, exactly the checksums EBS direct's PutSnapshotBlock sends, and the image id, the
identity snapshots and AMIs are tagged with. The build manifest is a record; this is the bytes.
Publish compares the two before it reuses or uploads anything, and the uploaders check what they
read again against this map before they finish.

A manifest from before block maps records only the whole-file sha256: then (and only then) the
same pass also hashes the holes, at the cost of the disk's size, to check that number.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from imagekit.image.blockmap import BLOCK_SIZE, BlockMap, block_digest, data_block_indexes
from imagekit.util.errors import ImagekitError, UsageError
from imagekit.util.progress import Progress


@dataclass(frozen=True)
class ImageDigest:
    path: Path
    block_map: BlockMap
    sha256: str | None = None  # hex, of the whole file: only when asked for (an old manifest)

    @property
    def size(self) -> int:
        return self.block_map.size

    @property
    def blocks(self) -> dict[int, bytes]:
        return self.block_map.blocks

    @property
    def image_id(self) -> str:
        return self.block_map.image_id

    @property
    def linear_checksum(self) -> str:
        """The CompleteSnapshot checksum of exactly these blocks (base64)."""
        return self.block_map.aggregate


def digest_image(path: Path, progress: Progress | None = None, *, whole_sha256: bool = False) -> ImageDigest:
    """Read `path` once: its block map (and, with `whole_sha256`, the sha256 of the whole file)."""
    progress = progress or Progress()
    whole = hashlib.sha256() if whole_sha256 else None
    blocks: dict[int, bytes] = {}
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the image: {exc.strerror}") from exc
    try:
        size = os.fstat(fd).st_size
        covered = 0
        with progress.bar(f"verify {path.name}", total=size) as bar:
            for index in data_block_indexes(fd, size):
                start = index * BLOCK_SIZE
                data = os.pread(fd, min(BLOCK_SIZE, size - start), start)
                if whole is not None:
                    feed_zeros(whole, start - covered)
                    whole.update(data)
                covered = start + len(data)
                digest = block_digest(data)
                if digest is not None:
                    blocks[index] = digest
                bar.update(covered)
            if whole is not None:
                feed_zeros(whole, size - covered)
            bar.update(size)
    except OSError as exc:
        raise ImagekitError(f"{path}: reading the image failed: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    return ImageDigest(path, BlockMap(size, blocks), whole.hexdigest() if whole is not None else None)


_ZEROS = memoryview(bytes(8 << 20))


def feed_zeros(h: hashlib._Hash, count: int) -> None:
    """Hash `count` zero bytes (a hole) without reading them."""
    while count > 0:
        n = min(count, len(_ZEROS))
        h.update(_ZEROS[:n])
        count -= n


def check_against_manifest(digest: ImageDigest, expected: BlockMap | None, expected_sha256: str | None,
                           manifest: Path | None) -> None:
    """Refuse an image whose bytes are not those its build manifest describes (a stale manifest)."""
    if manifest is None:
        return
    hint = (f"rebuild the image (imagekit build writes a fresh manifest), or delete the stale {manifest} "
            "to publish the image as it is now (then --arch, --layout and --virtualization come from options)")
    if expected is not None:
        difference = digest.block_map.first_difference(expected)
        if difference is None:
            return
        raise UsageError(f"{digest.path} is not the image its build manifest {manifest} describes: {difference} "
                         f"(image id {digest.image_id[:16]}..., the manifest's {expected.image_id[:16]}...)",
                         hint=hint)
    if expected_sha256 is None or digest.sha256 == expected_sha256:
        return
    raise UsageError(
        f"{digest.path} is not the image its build manifest {manifest} describes: the image's sha256 is "
        f"{(digest.sha256 or '?')[:16]}..., the manifest's image.sha256 is {expected_sha256[:16]}...",
        hint=hint,
    )
