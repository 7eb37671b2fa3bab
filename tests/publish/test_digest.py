"""The publish-time digest against an independent reading of the same file (plain reads, hashlib)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from imagekit.publish.digest import digest_image
from tests.publish.conftest import BLOCK, write_image


def test_sha256_and_block_map_match_a_plain_read(tmp_path: Path) -> None:
    size = 40 * BLOCK + 1234  # a partial last block
    writes = {
        5: os.urandom(100),  # block 0
        3 * BLOCK - 10: os.urandom(20),  # straddles blocks 2 and 3
        9 * BLOCK: bytes(BLOCK),  # written zeros: allocated, not a data block
        size - 7: b"tail!!!",  # the partial last block
    }
    image = write_image(tmp_path / "img.raw", size, writes)
    data = image.path.read_bytes()
    expected = {
        i: hashlib.sha256(data[i * BLOCK : (i + 1) * BLOCK].ljust(BLOCK, b"\0")).digest()
        for i in range((size + BLOCK - 1) // BLOCK)
        if any(data[i * BLOCK : (i + 1) * BLOCK])
    }
    digest = digest_image(image.path)
    assert digest.sha256 == hashlib.sha256(data).hexdigest()
    assert digest.blocks == expected
    assert sorted(expected) == [0, 2, 3, 40]
    assert digest.size == size
