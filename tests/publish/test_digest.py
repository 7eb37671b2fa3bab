"""The block map and image id against an independent reading of the same file (plain reads, hashlib)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from imagekit.image.blockmap import BLOCK_SIZE, BlockMap, StreamMap, block_map_of, from_record
from imagekit.publish.digest import digest_image
from tests.publish.conftest import BLOCK, independent_block_map, write_image


def sample(tmp_path: Path) -> tuple[Path, int]:
    size = 40 * BLOCK + 1234  # a partial last block
    writes = {
        5: os.urandom(100),  # block 0
        3 * BLOCK - 10: os.urandom(20),  # straddles blocks 2 and 3
        9 * BLOCK: bytes(BLOCK),  # written zeros: allocated, not a data block
        size - 7: b"tail!!!",  # the partial last block
    }
    return write_image(tmp_path / "img.raw", size, writes).path, size


def test_sha256_and_block_map_match_a_plain_read(tmp_path: Path) -> None:
    path, size = sample(tmp_path)
    expected = independent_block_map(path)
    digest = digest_image(path, whole_sha256=True)
    assert digest.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest.blocks == expected
    assert sorted(expected) == [0, 2, 3, 40]
    assert digest.size == size
    assert digest_image(path).sha256 is None  # the whole-file hash only when asked for


def test_the_image_id_is_the_same_however_the_bytes_are_read(tmp_path: Path) -> None:
    path, size = sample(tmp_path)
    stream = StreamMap()
    with open(path, "rb") as fh:
        while data := fh.read(3 * BLOCK_SIZE + 17):  # parts that do not line up with blocks
            stream.update(data)
    read = stream.finish()
    assert read == block_map_of(path) == BlockMap(size, independent_block_map(path))
    assert read.image_id == digest_image(path).image_id


def test_the_image_id_tells_apart_what_the_linear_aggregate_does_not(tmp_path: Path) -> None:
    """EBS's LINEAR checksum hashes the digests only: the same blocks at other indexes, or in a longer file,
    give the same aggregate. The image id covers the size and the indexes too."""
    digest = hashlib.sha256(b"x").digest()
    a, moved = BlockMap(4 * BLOCK, {0: digest}), BlockMap(4 * BLOCK, {1: digest})
    longer = BlockMap(5 * BLOCK, {0: digest})
    assert a.aggregate == moved.aggregate == longer.aggregate
    assert len({a.image_id, moved.image_id, longer.image_id}) == 3
    assert from_record(a.size, a.record()) == a


def test_imagekit_digest_prints_sha256sums_number_and_checks_the_manifest(tmp_path: Path) -> None:
    path, size = sample(tmp_path)
    sha = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]
    manifest = path.with_name(path.name + ".manifest.json")
    mapped = BlockMap(size, independent_block_map(path))
    manifest.write_text(json.dumps({"image": {"id": mapped.image_id, "block_map": mapped.record()}}))

    def digest(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "imagekit", "digest", str(path), *args],
                              capture_output=True, text=True, timeout=60)

    plain = digest()
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.splitlines()[0] == f"{sha}  {path}"
    assert f"manifest {manifest}: matches" in plain.stdout
    with open(path, "r+b") as fh:  # one byte in block 7 changes: the manifest no longer describes the image
        fh.seek(7 * BLOCK + 1)
        fh.write(b"!")
    changed = digest("--json")
    assert changed.returncode == 1, changed.stderr
    figures = json.loads(changed.stdout)
    assert figures["schema"] == "imagekit.digest/1" and figures["data_blocks"] == len(mapped.blocks) + 1
    assert figures["manifest"]["verdict"].startswith("differs: block 7 ")
    assert figures["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
