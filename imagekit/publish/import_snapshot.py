"""Turn a raw image into a snapshot through S3 and ImportSnapshot.

The object goes up as a resumable multipart upload (a re-run lists the parts already there and
sends only the missing ones), then ImportSnapshot reads it with the `vmimport` service role, and
a bounded poll reads the task's Status (a SnapshotId appears only at the end; failed imports end
in `deleted` with the reason in StatusMessage, which boto3's waiter does not notice).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagekit.image.blockmap import StreamMap, block_map_of
from imagekit.publish.awserrors import describe, error_code, is_transient
from imagekit.publish.wait import Backoff, poll, retry
from imagekit.util.errors import ImagekitError, UsageError
from imagekit.util.progress import Progress

MIB = 2**20
ID_METADATA = "imagekit-image-id"  # S3 object metadata: the image id (imagekit/image/blockmap.py)
MIN_PART = 5 * MIB
MAX_PARTS = 10000

VMIMPORT_HINT = (
    "ImportSnapshot reads the S3 object as the IAM service role 'vmimport' (or --role-name): create it "
    "with a trust policy for vmie.amazonaws.com and s3:GetBucketLocation/GetObject/ListBucket on the "
    "bucket, see https://docs.aws.amazon.com/vm-import/latest/userguide/required-permissions.html "
    "(or use --method ebs-direct, which needs no role)"
)


class ImportFailed(ImagekitError):
    pass


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class UploadedObject:
    location: S3Location
    size: int
    parts_sent: int
    parts_reused: int
    bytes_sent: int


def part_size_for(size: int, preferred: int) -> int:
    """At least 5 MiB, and large enough that the object fits in 10000 parts."""
    return max(MIN_PART, preferred, math.ceil(size / MAX_PARTS / MIB) * MIB)


def check_role(iam: Any, role_name: str, progress: Progress) -> None:
    """Fail early, with the explanation, when the vmimport role is missing."""
    try:
        iam.get_role(RoleName=role_name)
    except Exception as exc:
        if error_code(exc) == "NoSuchEntity":
            raise UsageError(
                f"the IAM role {role_name!r} that ImportSnapshot needs does not exist", hint=VMIMPORT_HINT
            ) from exc
        progress.warn(f"could not check the IAM role {role_name!r} ({describe(exc)}); trying the import anyway")


def check_bucket_region(s3: Any, bucket: str, region: str) -> None:
    """The bucket must be in the import region (EC2 cannot read it otherwise)."""
    try:
        where = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") or "us-east-1"
    except Exception as exc:
        raise UsageError(f"--bucket {bucket}: {describe(exc)}") from exc
    if where != region:
        raise UsageError(f"--bucket {bucket} is in {where}, but the import runs in {region}: use a bucket there")


def find_upload(s3: Any, where: S3Location) -> str | None:
    """The id of an unfinished multipart upload of this key (from an interrupted run)."""
    response = s3.list_multipart_uploads(Bucket=where.bucket, Prefix=where.key)
    uploads = [u for u in response.get("Uploads", []) if u["Key"] == where.key]
    return str(uploads[-1]["UploadId"]) if uploads else None


def parts_present(s3: Any, where: S3Location, upload_id: str) -> dict[int, dict[str, Any]]:
    parts: dict[int, dict[str, Any]] = {}
    kwargs: dict[str, Any] = {"Bucket": where.bucket, "Key": where.key, "UploadId": upload_id}
    while True:
        response = s3.list_parts(**kwargs)
        for part in response.get("Parts", []):
            parts[int(part["PartNumber"])] = part
        if not response.get("IsTruncated"):
            return parts
        kwargs["PartNumberMarker"] = response["NextPartNumberMarker"]


def object_complete(s3: Any, where: S3Location, path: Path, size: int, image_id: str, part: int) -> bool:
    """The object is there and holds these bytes: its size, and the ETag S3 computed itself (the MD5 of the
    parts' MD5s), not only the image-id metadata an earlier run wrote, which is a record like any other."""
    try:
        head = s3.head_object(Bucket=where.bucket, Key=where.key)
    except Exception as exc:
        if error_code(exc) in {"404", "NoSuchKey", "NotFound"}:
            return False
        raise
    if int(head["ContentLength"]) != size or head.get("Metadata", {}).get(ID_METADATA) != image_id:
        return False
    etag, read_id = multipart_etag(path, part)
    check_read(path, read_id, image_id)
    return str(head.get("ETag", "")).strip('"') == etag


def multipart_etag(path: Path, part: int) -> tuple[str, str]:
    """The ETag S3 gives a multipart upload of `path` in parts of `part` bytes, and the image id of what was read."""
    md5s = bytearray()
    read = StreamMap()
    count = 0
    with open(path, "rb") as fh:
        while data := fh.read(part):
            md5s += hashlib.md5(data, usedforsecurity=False).digest()
            read.update(data)
            count += 1
    return f"{hashlib.md5(bytes(md5s), usedforsecurity=False).hexdigest()}-{max(1, count)}", read.finish().image_id


class ImageChanged(ImagekitError):
    """The bytes read for the upload are not the bytes that were verified."""


def check_read(path: Path, read_id: str, image_id: str) -> None:
    if read_id != image_id:
        raise ImageChanged(
            f"{path} changed after it was verified: the bytes read for the S3 upload have image id "
            f"{read_id[:16]}..., the verified image {image_id[:16]}...; the object is not completed",
            hint="re-run the publish once the image is no longer being written",
        )


def upload_object(  # noqa: PLR0913 - part_size, progress, backoff: keyword-only tunables with defaults
    s3: Any,
    path: Path,
    where: S3Location,
    *,
    image_id: str,
    part_size: int = 64 * MIB,
    progress: Progress | None = None,
    backoff: Backoff = Backoff(),  # noqa: B008 (frozen)
) -> UploadedObject:
    """Multipart-upload `path` to `where`, reusing the parts an earlier run left there.

    `image_id` is the verified image's (imagekit/image/blockmap.py): the bytes read for the parts must
    give it, or the upload is aborted before it completes (the image changed under it).
    """
    progress = progress or Progress()
    size = path.stat().st_size
    part = part_size_for(size, part_size)
    if object_complete(s3, where, path, size, image_id, part):
        return UploadedObject(where, size, 0, 0, 0)
    upload_id = find_upload(s3, where)
    present = parts_present(s3, where, upload_id) if upload_id else {}
    if upload_id is None:
        upload_id = s3.create_multipart_upload(Bucket=where.bucket, Key=where.key,
                                               Metadata={ID_METADATA: image_id})["UploadId"]
    done: list[dict[str, Any]] = []
    sent = reused = bytes_sent = 0
    read = StreamMap()
    with open(path, "rb") as fh, progress.bar(f"upload {where.url}", total=size) as bar:
        for number in range(1, max(1, math.ceil(size / part)) + 1):
            data = fh.read(part)
            read.update(data)
            etag = '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'
            have = present.get(number)
            if have is not None and have.get("ETag") == etag and int(have.get("Size", -1)) == len(data):
                reused += 1
            else:
                send_part(s3, where, upload_id, number, data, backoff)
                sent += 1
                bytes_sent += len(data)
            done.append({"PartNumber": number, "ETag": etag})
            bar.advance(len(data))
        read.update(fh.read())  # anything appended since: a longer file is a changed one
    read_id = read.finish().image_id
    if read_id != image_id:
        s3.abort_multipart_upload(Bucket=where.bucket, Key=where.key, UploadId=upload_id)
        check_read(path, read_id, image_id)
    s3.complete_multipart_upload(
        Bucket=where.bucket, Key=where.key, UploadId=upload_id, MultipartUpload={"Parts": done}
    )
    return UploadedObject(where, size, sent, reused, bytes_sent)


def send_part(s3: Any, where: S3Location, upload_id: str, number: int, data: bytes, backoff: Backoff) -> None:
    def call() -> Any:
        return s3.upload_part(Bucket=where.bucket, Key=where.key, UploadId=upload_id, PartNumber=number, Body=data)

    retry(call, retryable=is_transient, backoff=backoff)


def start_import(
    ec2: Any,
    where: S3Location,
    *,
    description: str,
    role_name: str,
    client_token: str,
    tags: dict[str, str],
) -> str:
    params: dict[str, Any] = {
        "Description": description,
        "DiskContainer": {
            "Description": description,
            "Format": "RAW",
            "UserBucket": {"S3Bucket": where.bucket, "S3Key": where.key},
        },
        "ClientToken": client_token,
        "TagSpecifications": [
            {"ResourceType": "import-snapshot-task", "Tags": [{"Key": k, "Value": v} for k, v in sorted(tags.items())]}
        ],
    }
    if role_name != "vmimport":
        params["RoleName"] = role_name
    try:
        return str(ec2.import_snapshot(**params)["ImportTaskId"])
    except Exception as exc:
        if "role" in describe(exc) and error_code(exc) in {"InvalidParameter", "InvalidParameterValue"}:
            raise ImportFailed(f"ImportSnapshot of {where.url} refused: {describe(exc)}", hint=VMIMPORT_HINT) from exc
        raise ImportFailed(f"ImportSnapshot of {where.url} failed: {describe(exc)}") from exc


def wait_import(ec2: Any, task_id: str, *, timeout: float, interval: float, progress: Progress | None = None) -> str:
    """Poll the task's Status until `completed` (returns the snapshot id); `deleted` is final."""
    progress = progress or Progress()
    with progress.bar(f"import {task_id}", total=100, unit="%") as bar:

        def probe() -> str | None:
            tasks = ec2.describe_import_snapshot_tasks(ImportTaskIds=[task_id])["ImportSnapshotTasks"]
            if not tasks:
                raise ImportFailed(f"import task {task_id} disappeared")
            detail = tasks[0].get("SnapshotTaskDetail", {})
            status = detail.get("Status", "")
            if status == "completed":
                bar.update(100)
                return str(detail["SnapshotId"])
            if status in {"deleted", "deleting"}:
                raise ImportFailed(f"import task {task_id} failed: {detail.get('StatusMessage', 'no reason given')}")
            bar.update(int(detail.get("Progress") or 0))
            return None

        return poll(
            probe,
            what=f"import task {task_id}",
            timeout=timeout,
            interval=interval,
            hint=f"the task may still finish: a re-run resumes it (aws ec2 describe-import-snapshot-tasks "
            f"--import-task-ids {task_id})",
        )


def delete_object(s3: Any, where: S3Location) -> None:
    s3.delete_object(Bucket=where.bucket, Key=where.key)


def object_key(prefix: str, image_id: str) -> str:
    """Content-addressed (the image id), so an interrupted run finds its own parts again."""
    return f"{prefix.strip('/')}/{image_id}.raw".lstrip("/")


def image_id_of(path: Path) -> str:
    return block_map_of(path).image_id
