"""What the image's bytes are, read at publish time: the whole-file sha256 and the EBS block map.

One pass over the blocks that may hold data (holes are found with SEEK_DATA and never read)
gives both: the sha256 of the whole file as `sha256sum` prints it (the build manifest's
`image.sha256`, the identity snapshots are tagged with) and, for every non-zero 512 KiB block,
its index and raw SHA-256, exactly the checksums EBS direct's PutSnapshotBlock sends. The
manifest is a record; this is the bytes. Publish compares the two before it reuses or uploads
anything, and the uploaders check what they read again against this map before they finish.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from imagekit.errors import ImagekitError, UsageError
from imagekit.progress import Progress
from imagekit.publish.ebs_direct import BLOCK_SIZE, ZERO_BLOCK, data_block_indexes, linear_checksum


@dataclass(frozen=True)
class ImageDigest:
    path: Path
    size: int
    sha256: str  # hex, of the whole file
    blocks: dict[int, bytes]  # index -> raw SHA-256 of each non-zero 512 KiB block (zero-padded at the end)

    @property
    def linear_checksum(self) -> str:
        """The CompleteSnapshot checksum of exactly these blocks (base64)."""
        return linear_checksum(self.blocks)


def digest_image(path: Path, progress: Progress | None = None) -> ImageDigest:
    """Read `path` once: its sha256 and its block map."""
    progress = progress or Progress()
    whole = hashlib.sha256()
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
                feed_zeros(whole, start - covered)
                data = os.pread(fd, min(BLOCK_SIZE, size - start), start)
                whole.update(data)
                covered = start + len(data)
                if data.ljust(BLOCK_SIZE, b"\0") != ZERO_BLOCK:
                    blocks[index] = hashlib.sha256(data.ljust(BLOCK_SIZE, b"\0")).digest()
                bar.update(covered)
            feed_zeros(whole, size - covered)
            bar.update(size)
    except OSError as exc:
        raise ImagekitError(f"{path}: reading the image failed: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    return ImageDigest(path, size, whole.hexdigest(), blocks)


_ZEROS = memoryview(bytes(8 << 20))


def feed_zeros(h: hashlib._Hash, count: int) -> None:
    """Hash `count` zero bytes (a hole) without reading them."""
    while count > 0:
        n = min(count, len(_ZEROS))
        h.update(_ZEROS[:n])
        count -= n


def check_against_manifest(digest: ImageDigest, expected_sha256: str | None, manifest: Path | None) -> None:
    """Refuse an image whose bytes are not those its build manifest describes (a stale manifest)."""
    if expected_sha256 is None or manifest is None or digest.sha256 == expected_sha256:
        return
    raise UsageError(
        f"{digest.path} is not the image its build manifest {manifest} describes: the image's sha256 is "
        f"{digest.sha256[:16]}..., the manifest's image.sha256 is {expected_sha256[:16]}...",
        hint=f"rebuild the image (imagekit build writes a fresh manifest), or delete the stale {manifest} "
        "to publish the image as it is now (then --arch, --layout and --virtualization come from options)",
    )
