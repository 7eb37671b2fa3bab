"""Upload a raw image straight into an EBS snapshot with the EBS direct APIs.

After coldsnap's upload.rs: the uploader takes its client, reads the image in blocks of exactly
524288 bytes (whatever BlockSize the service reports), skips all-zero blocks (holes are found
with SEEK_DATA/SEEK_HOLE and never read), sends the others from a bounded pool of workers with
a base64 SHA-256 each, retries throttling and 5xx with backoff, gathers the errors of every
block and fails once with a summary, and completes the snapshot with the LINEAR checksum.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagekit.image.blockmap import BLOCK_SIZE, ZERO_BLOCK, block_count, data_block_indexes, linear_checksum
from imagekit.publish.awserrors import describe, error_code, is_transient
from imagekit.publish.wait import Backoff, Interrupted, retry
from imagekit.util.errors import ImagekitError
from imagekit.util.progress import Bar, Progress

GIB = 2**30
MAX_ERRORS = 32  # stop sending once this many blocks have failed for good


class UploadFailed(ImagekitError):
    """Blocks could not be sent; `snapshot_id` is the pending snapshot left to clean up."""

    def __init__(self, message: str, snapshot_id: str | None) -> None:
        super().__init__(message)
        self.snapshot_id = snapshot_id


class ImageChanged(UploadFailed):
    """A block read for the upload is not the block that was verified: the snapshot is not completed."""


class UploadInterrupted(UploadFailed):
    """Ctrl-C (SIGINT) during the upload; the pending snapshot is named for cleanup."""

    exit_code = Interrupted.exit_code


@dataclass(frozen=True)
class UploadStats:
    snapshot_id: str
    image_size: int
    volume_size_gib: int
    blocks_total: int
    blocks_sent: int
    blocks_skipped: int
    bytes_sent: int
    seconds: float
    checksum: str

    @property
    def rate(self) -> float:
        """Bytes of image covered per second."""
        return self.image_size / self.seconds if self.seconds > 0 else 0.0


def volume_size_gib(image_size: int) -> int:
    return max(1, math.ceil(image_size / GIB))


def read_block(fd: int, index: int, size: int) -> bytes:
    """Block `index`, padded with zeros to BLOCK_SIZE at the end of the image."""
    data = os.pread(fd, BLOCK_SIZE, index * BLOCK_SIZE)
    if len(data) < BLOCK_SIZE and index * BLOCK_SIZE + len(data) < size:
        raise ImagekitError(f"short read at block {index}: the image changed while uploading")
    return data.ljust(BLOCK_SIZE, b"\0")


def is_block_retryable(exc: BaseException) -> bool:
    # "snapshot does not exist" right after StartSnapshot is transient on EBS.
    return is_transient(exc) or error_code(exc) == "ResourceNotFoundException"


@dataclass
class _Tally:
    sent: int = 0
    skipped: int = 0
    bytes_sent: int = 0
    changed: dict[int, str] = field(default_factory=dict)  # block index -> how it differs from `expected`


@dataclass(frozen=True)
class _Sending:
    """One upload in flight: the image (fd, size), the snapshot it fills, its bar, the verified block map
    every block must match (None: none), and what happened so far (the digests sent, errors, the tally)."""

    fd: int
    size: int
    snapshot_id: str
    bar: Bar
    expected: dict[int, bytes] | None
    digests: dict[int, bytes]
    errors: dict[int, str]
    tally: _Tally


class EbsDirectUploader:
    """Uploads one image per `upload()` call through the `ebs` client it is given."""

    def __init__(
        self,
        ebs: Any,
        *,
        workers: int = 16,
        backoff: Backoff = Backoff(),  # noqa: B008 (frozen)
        progress: Progress | None = None,
        snapshot_timeout_minutes: int = 60,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.ebs = ebs
        self.workers = workers
        self.backoff = backoff
        self.progress = progress or Progress()
        self.snapshot_timeout_minutes = snapshot_timeout_minutes
        self._lock = threading.Lock()

    def upload(
        self,
        path: Path,
        *,
        description: str,
        tags: dict[str, str],
        client_token: str | None = None,
        expected: dict[int, bytes] | None = None,
        expected_size: int | None = None,
    ) -> UploadStats:
        """Upload `path`; with `expected` (a verified block map, index -> raw SHA-256), every block read is
        checked against it and the snapshot is completed only if exactly those blocks were sent."""
        start = time.monotonic()
        size = path.stat().st_size
        if expected_size is not None and size != expected_size:
            raise ImageChanged(f"{path} changed after it was verified: {size} bytes, not {expected_size}", None)
        volume = volume_size_gib(size)
        snapshot_id = self.start_snapshot(volume, description, tags, client_token)
        digests: dict[int, bytes] = {}
        errors: dict[int, str] = {}
        tally = _Tally()
        try:
            with ExitStack() as stack:
                fd = os.open(path, os.O_RDONLY)
                stack.callback(os.close, fd)
                bar = stack.enter_context(self.progress.bar(f"upload {snapshot_id}", total=size))
                self.send_blocks(_Sending(fd, size, snapshot_id, bar, expected, digests, errors, tally))
        except KeyboardInterrupt:
            raise UploadInterrupted(f"interrupted while uploading {path} into snapshot {snapshot_id}",
                                    snapshot_id) from None
        check_sent(path, snapshot_id, expected, digests, tally, errors)
        if errors:
            raise UploadFailed(summarize_errors(snapshot_id, errors, block_count(size)), snapshot_id)
        checksum = linear_checksum(digests)
        self.complete_snapshot(snapshot_id, tally.sent, checksum)
        return UploadStats(
            snapshot_id=snapshot_id,
            image_size=size,
            volume_size_gib=volume,
            blocks_total=block_count(size),
            blocks_sent=tally.sent,
            blocks_skipped=block_count(size) - tally.sent,
            bytes_sent=tally.bytes_sent,
            seconds=time.monotonic() - start,
            checksum=checksum,
        )

    def start_snapshot(self, volume_gib: int, description: str, tags: dict[str, str], token: str | None) -> str:
        params: dict[str, Any] = {
            "VolumeSize": volume_gib,
            "Description": description,
            "Timeout": self.snapshot_timeout_minutes,
            "Tags": [{"Key": k, "Value": v} for k, v in sorted(tags.items())],
        }
        if token:
            params["ClientToken"] = token
        try:
            response = retry(lambda: self.ebs.start_snapshot(**params), retryable=is_transient, backoff=self.backoff)
        except Exception as exc:
            raise ImagekitError(f"failed to start an EBS snapshot of {volume_gib} GiB: {describe(exc)}") from exc
        return str(response["SnapshotId"])

    def send_blocks(self, job: _Sending) -> None:
        slots = threading.BoundedSemaphore(self.workers * 2)
        covered = 0
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="ebs-put")
        try:
            for index in data_block_indexes(job.fd, job.size):
                if len(job.errors) >= MAX_ERRORS or job.tally.changed:
                    break
                hole = index * BLOCK_SIZE - covered
                if hole > 0:
                    job.bar.advance(hole)
                covered = min(job.size, (index + 1) * BLOCK_SIZE)
                slots.acquire()
                future: Future[None] = pool.submit(self.send_block, job, index)
                future.add_done_callback(lambda _f: slots.release())
        except BaseException:  # Ctrl-C: drop the queued blocks, let the running ones end
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        if covered < job.size and not job.errors:
            job.bar.advance(job.size - covered)

    def send_block(self, job: _Sending, index: int) -> None:
        fd, size, snapshot_id, expected, tally = job.fd, job.size, job.snapshot_id, job.expected, job.tally
        try:
            data = read_block(fd, index, size)
            digest = None if data == ZERO_BLOCK else hashlib.sha256(data).digest()
            if expected is not None and digest != expected.get(index):
                with self._lock:
                    tally.changed[index] = block_change(digest, expected.get(index))
                return
            if digest is None:
                return
            checksum = base64.b64encode(digest).decode()
            retry(
                lambda: self.ebs.put_snapshot_block(
                    SnapshotId=snapshot_id,
                    BlockIndex=index,
                    BlockData=data,
                    DataLength=BLOCK_SIZE,
                    Checksum=checksum,
                    ChecksumAlgorithm="SHA256",
                ),
                retryable=is_block_retryable,
                backoff=self.backoff,
            )
            with self._lock:
                job.digests[index] = digest
                tally.sent += 1
                tally.bytes_sent += BLOCK_SIZE
        except Exception as exc:
            with self._lock:
                job.errors[index] = describe(exc)
        finally:
            job.bar.advance(min(BLOCK_SIZE, size - index * BLOCK_SIZE))

    def complete_snapshot(self, snapshot_id: str, changed: int, checksum: str) -> None:
        params: dict[str, Any] = {"SnapshotId": snapshot_id, "ChangedBlocksCount": changed}
        if changed:
            params |= {"Checksum": checksum, "ChecksumAlgorithm": "SHA256", "ChecksumAggregationMethod": "LINEAR"}
        try:
            response = retry(lambda: self.ebs.complete_snapshot(**params), retryable=is_transient, backoff=self.backoff)
        except Exception as exc:
            raise UploadFailed(f"failed to complete snapshot {snapshot_id}: {describe(exc)}", snapshot_id) from exc
        if response.get("Status") == "error":
            raise UploadFailed(f"snapshot {snapshot_id} ended in state error after CompleteSnapshot", snapshot_id)


def block_change(got: bytes | None, want: bytes | None) -> str:
    if want is None:
        return "holds data where the verified image had zeros"
    if got is None:
        return "is zeros where the verified image had data"
    return "differs from the verified image"


def check_sent(path: Path, snapshot_id: str, expected: dict[int, bytes] | None, digests: dict[int, bytes],
               tally: _Tally, errors: dict[int, str]) -> None:
    """The blocks sent must be exactly the verified block map; otherwise the image changed under the upload."""
    if expected is None:
        return
    changed = dict(tally.changed)
    if not changed and not errors:
        changed = {i: "was never read: it is a hole in the image now" for i in set(expected) - set(digests)}
    if not changed:
        return
    index = min(changed)
    more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
    raise ImageChanged(
        f"{path} changed after it was verified: block {index} {changed[index]}{more}; "
        f"snapshot {snapshot_id} is not completed",
        snapshot_id,
    )


def summarize_errors(snapshot_id: str, errors: dict[int, str], total: int) -> str:
    shown = [f"block {i}: {errors[i]}" for i in sorted(errors)[:3]]
    more = f"; and {len(errors) - 3} more" if len(errors) > 3 else ""
    stopped = f" (stopped after {MAX_ERRORS} failures)" if len(errors) >= MAX_ERRORS else ""
    return (
        f"failed to put {len(errors)} of {total} blocks of snapshot {snapshot_id}{stopped}: " + "; ".join(shown) + more
    )
