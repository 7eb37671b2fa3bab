"""EBS direct upload against the local cloud: round trip, zero blocks absent, retries, gathered errors."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from imagekit.publish.ebs_direct import (
    BLOCK_SIZE,
    EbsDirectUploader,
    UploadFailed,
    data_block_indexes,
    linear_checksum,
    volume_size_gib,
)
from imagekit.publish.wait import Backoff
from tests.publish.conftest import SparseImage, block_index_of, json_error, write_image

FAST = Backoff(attempts=4, base=0.01, cap=0.05)


def read_back(ebs: Any, snapshot_id: str) -> dict[int, bytes]:
    listing = ebs.list_snapshot_blocks(SnapshotId=snapshot_id)
    return {
        b["BlockIndex"]: ebs.get_snapshot_block(
            SnapshotId=snapshot_id, BlockIndex=b["BlockIndex"], BlockToken=b["BlockToken"]
        )["BlockData"].read()
        for b in listing["Blocks"]
    }


def test_round_trip_sends_exactly_the_data_blocks(clients: Any, make_image: Callable[..., SparseImage]) -> None:
    image = make_image(None)
    ebs = clients.client("ebs", "us-east-1")
    stats = EbsDirectUploader(ebs, workers=4, backoff=FAST).upload(image.path, description="t", tags={"k": "v"})
    blocks = read_back(ebs, stats.snapshot_id)
    assert sorted(blocks) == list(image.data_blocks)
    for index, data in blocks.items():
        assert data == image.block(index), f"block {index} differs"
    assert stats.blocks_sent == len(image.data_blocks)
    assert stats.bytes_sent == len(image.data_blocks) * BLOCK_SIZE
    assert stats.blocks_total == (image.size + BLOCK_SIZE - 1) // BLOCK_SIZE
    assert stats.volume_size_gib == 1
    assert 9 not in blocks  # written zeros are skipped like holes
    snap = clients.client("ec2", "us-east-1").describe_snapshots(SnapshotIds=[stats.snapshot_id])["Snapshots"][0]
    assert snap["State"] == "completed"
    assert {"Key": "k", "Value": "v"} in snap["Tags"]


def test_holes_are_never_read(tmp_path: Path) -> None:
    image = write_image(tmp_path / "sparse.raw", 64 * BLOCK_SIZE, {5 * BLOCK_SIZE + 1: b"x", 40 * BLOCK_SIZE: b"y"})
    fd = os.open(image.path, os.O_RDONLY)
    try:
        candidates = list(data_block_indexes(fd, image.size))
    finally:
        os.close(fd)
    assert set(image.data_blocks) <= set(candidates)
    assert len(candidates) < 16  # the filesystem reports the holes (tmpfs and ext4 both do)


def test_linear_checksum_is_sha256_of_the_block_digests_in_order() -> None:
    digests = {2: hashlib.sha256(b"b").digest(), 0: hashlib.sha256(b"a").digest()}
    expected = base64.b64encode(hashlib.sha256(digests[0] + digests[2]).digest()).decode()
    assert linear_checksum(digests) == expected


def test_volume_size_rounds_up_to_whole_gib() -> None:
    assert volume_size_gib(1) == 1
    assert volume_size_gib(2**30) == 1
    assert volume_size_gib(2**30 + 1) == 2


def test_throttling_and_5xx_are_retried(clients: Any, make_image: Callable[..., SparseImage]) -> None:
    image = make_image(None)
    ebs = clients.client("ebs", "us-east-1")
    failed: set[int] = set()
    lock = threading.Lock()

    def flaky(request: Any, **_: Any) -> Any:
        index = block_index_of(request)
        with lock:
            if index is None or index in failed:
                return None
            failed.add(index)
        if index % 2:
            return json_error(request, 400, "RequestThrottledException", "Rate exceeded")
        return json_error(request, 503, "InternalServerException")

    ebs.meta.events.register("before-send.ebs.PutSnapshotBlock", flaky)
    try:
        stats = EbsDirectUploader(ebs, workers=3, backoff=FAST).upload(image.path, description="t", tags={})
    finally:
        ebs.meta.events.unregister("before-send.ebs.PutSnapshotBlock", flaky)
    assert failed == set(image.data_blocks)
    assert sorted(read_back(ebs, stats.snapshot_id)) == list(image.data_blocks)


def test_errors_of_all_blocks_are_reported_once(clients: Any, make_image: Callable[..., SparseImage]) -> None:
    image = make_image(None)
    ebs = clients.client("ebs", "us-east-1")
    bad = set(image.data_blocks[1:])

    def deny(request: Any, **_: Any) -> Any:
        index = block_index_of(request)
        return json_error(request, 403, "AccessDeniedException", "no") if index in bad else None

    ebs.meta.events.register("before-send.ebs.PutSnapshotBlock", deny)
    try:
        with pytest.raises(UploadFailed) as info:
            EbsDirectUploader(ebs, workers=2, backoff=FAST).upload(image.path, description="t", tags={})
    finally:
        ebs.meta.events.unregister("before-send.ebs.PutSnapshotBlock", deny)
    message = info.value.message
    assert message.startswith(f"failed to put {len(bad)} of ")
    assert info.value.snapshot_id and info.value.snapshot_id in message
    assert f"block {min(bad)}: AccessDeniedException: no" in message
