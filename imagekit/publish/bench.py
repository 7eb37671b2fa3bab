"""Benchmark the EBS-direct uploader against the local cloud (scripts/bench-publish).

For one image: bytes sent vs image size vs allocated size, and the uploader's throughput next
to a bare loop of PutSnapshotBlock calls with the same concurrency over the same blocks.
Targets: bytes sent == the non-zero 512 KiB blocks; uploader >= 80% of the bare loop.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from imagekit.publish.aws import AwsClients
from imagekit.publish.ebs_direct import (
    BLOCK_SIZE,
    ZERO_BLOCK,
    EbsDirectUploader,
    block_count,
    data_block_indexes,
    read_block,
    volume_size_gib,
)
from imagekit.util.run import spawn

MIB = 2**20


@contextmanager
def local_cloud() -> Iterator[str]:
    with spawn([sys.executable, "-m", "imagekit", "local-cloud", "--port", "0", "--json"],
               stdout=subprocess.PIPE) as proc:  # stopped and reaped when the block ends (util/run.py)
        assert proc.stdout is not None
        yield str(json.loads(proc.stdout.readline())["endpoint_url"])


def nonzero_blocks(path: Path) -> list[int]:
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        return [i for i in data_block_indexes(fd, size) if read_block(fd, i, size) != ZERO_BLOCK]
    finally:
        os.close(fd)


def bare_loop(ebs: Any, path: Path, blocks: list[int], workers: int) -> float:
    """StartSnapshot, PutSnapshotBlock for each block from a pool, CompleteSnapshot: nothing else."""
    size = path.stat().st_size
    start = time.monotonic()
    snap = ebs.start_snapshot(VolumeSize=volume_size_gib(size))["SnapshotId"]
    fd = os.open(path, os.O_RDONLY)

    def put(index: int) -> None:
        data = read_block(fd, index, size)
        digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
        ebs.put_snapshot_block(
            SnapshotId=snap,
            BlockIndex=index,
            BlockData=data,
            DataLength=BLOCK_SIZE,
            Checksum=digest,
            ChecksumAlgorithm="SHA256",
        )

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(put, blocks))
    finally:
        os.close(fd)
    ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=len(blocks))
    return time.monotonic() - start


def synthetic_image(directory: Path, size: int, data: int) -> Path:
    path = directory / "bench.raw"
    with open(path, "wb") as fh:
        fh.truncate(size)
        step = size // max(1, data // (4 * MIB))
        for offset in range(0, size - 4 * MIB, step):
            if data <= 0:
                break
            fh.seek(offset)
            fh.write(os.urandom(4 * MIB))
            data -= 4 * MIB
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench-publish", description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", type=Path, help="a built raw image (default: a synthetic sparse one)")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="best of N runs each, alternating")
    args = parser.parse_args(argv)
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # the local cloud takes any credentials
        os.environ.setdefault(key, "bench")
    with tempfile.TemporaryDirectory() as tmp, local_cloud() as endpoint:
        image = args.image or synthetic_image(Path(tmp), 512 * MIB, 128 * MIB)
        size, allocated = image.stat().st_size, image.stat().st_blocks * 512
        blocks = nonzero_blocks(image)
        clients = AwsClients(endpoint_url=endpoint, max_pool=args.workers + 8)
        ebs = clients.client("ebs", "us-east-1")
        bare_best = ours_best = float("inf")
        sent = 0
        for _ in range(args.rounds):
            bare_best = min(bare_best, bare_loop(ebs, image, blocks, args.workers))
            stats = EbsDirectUploader(ebs, workers=args.workers).upload(image, description="bench", tags={})
            ours_best = min(ours_best, stats.seconds)
            sent = stats.bytes_sent
    expected = len(blocks) * BLOCK_SIZE
    ours_rate, bare_rate = expected / ours_best / MIB, expected / bare_best / MIB
    ratio = ours_rate / bare_rate
    print(f"image            {image}")
    print(f"image size       {size:>14,} bytes ({block_count(size)} blocks)")
    print(f"allocated        {allocated:>14,} bytes")
    print(f"non-zero blocks  {expected:>14,} bytes ({len(blocks)} blocks)")
    print(f"bytes sent       {sent:>14,} bytes   {'OK' if sent == expected else 'MISMATCH'}")
    print(f"uploader         {ours_rate:>10.1f} MiB/s of data ({ours_best:.2f}s, {args.workers} workers)")
    print(f"bare loop        {bare_rate:>10.1f} MiB/s of data ({bare_best:.2f}s, {args.workers} workers)")
    print(f"uploader / bare  {ratio:>10.0%}        {'OK' if ratio >= 0.8 else 'BELOW 80%'}")
    return 0 if sent == expected and ratio >= 0.8 else 1


if __name__ == "__main__":
    sys.exit(main())
