"""S3 multipart upload (and its resume) and ImportSnapshot against the local cloud."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from imagekit.publish import import_snapshot as imp
from imagekit.publish.wait import Backoff
from imagekit.util.errors import UsageError
from imagekit.util.progress import Progress
from tests.publish.conftest import SparseImage, xml_error

FAST = Backoff(attempts=2, base=0.01, cap=0.02)
PART = 5 * 2**20


@pytest.fixture
def bucket(clients: Any) -> str:
    name = f"imagekit-test-{uuid.uuid4().hex[:8]}"
    clients.client("s3", "us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture
def vmimport(clients: Any) -> None:
    iam = clients.client("iam", "us-east-1")
    with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
        iam.create_role(RoleName="vmimport", AssumeRolePolicyDocument='{"Version": "2012-10-17", "Statement": []}')


def test_multipart_upload_resumes_without_resending_parts(
    clients: Any, bucket: str, make_image: Callable[..., SparseImage]
) -> None:
    image = make_image(None)  # 24 MiB + 4 KiB: five 5 MiB parts
    s3 = clients.client("s3", "us-east-1")
    sha = imp.image_id_of(image.path)
    where = imp.S3Location(bucket, imp.object_key("imports", sha))

    def fail_part_3(request: Any, **_: Any) -> Any:
        return xml_error(request, 403, "AccessDenied") if "partNumber=3" in request.url else None

    s3.meta.events.register("before-send.s3.UploadPart", fail_part_3)
    try:
        with pytest.raises(Exception, match="AccessDenied"):
            imp.upload_object(s3, image.path, where, image_id=sha, part_size=PART, backoff=FAST)
    finally:
        s3.meta.events.unregister("before-send.s3.UploadPart", fail_part_3)
    upload_id = imp.find_upload(s3, where)
    assert upload_id is not None
    assert sorted(imp.parts_present(s3, where, upload_id)) == [1, 2]

    done = imp.upload_object(s3, image.path, where, image_id=sha, part_size=PART, backoff=FAST)
    assert (done.parts_reused, done.parts_sent) == (2, 3)
    body = s3.get_object(Bucket=bucket, Key=where.key)["Body"].read()
    assert body == image.path.read_bytes()

    again = imp.upload_object(s3, image.path, where, image_id=sha, part_size=PART, backoff=FAST)
    assert (again.parts_sent, again.bytes_sent) == (0, 0)  # the finished object is recognised


def test_import_turns_the_object_into_a_snapshot(
    clients: Any, bucket: str, vmimport: None, make_image: Callable[..., SparseImage]
) -> None:
    image = make_image(None)
    s3, ec2, ebs = (clients.client(s, "us-east-1") for s in ("s3", "ec2", "ebs"))
    sha = imp.image_id_of(image.path)
    where = imp.S3Location(bucket, imp.object_key("imports", sha))
    imp.upload_object(s3, image.path, where, image_id=sha, part_size=PART)
    task = imp.start_import(ec2, where, description="t", role_name="vmimport", client_token=sha[:32], tags={})
    assert imp.start_import(ec2, where, description="t", role_name="vmimport", client_token=sha[:32], tags={}) == task
    snapshot = imp.wait_import(ec2, task, timeout=30, interval=0.2)
    listing = ebs.list_snapshot_blocks(SnapshotId=snapshot)["Blocks"]
    assert [b["BlockIndex"] for b in listing] == list(image.data_blocks)
    for b in listing:
        data = ebs.get_snapshot_block(SnapshotId=snapshot, BlockIndex=b["BlockIndex"], BlockToken=b["BlockToken"])
        assert data["BlockData"].read() == image.block(b["BlockIndex"])


def test_a_bad_image_ends_deleted_with_ec2s_message(clients: Any, bucket: str, vmimport: None) -> None:
    s3, ec2 = clients.client("s3", "us-east-1"), clients.client("ec2", "us-east-1")
    s3.put_object(Bucket=bucket, Key="not-a-vhd", Body=b"\1" * 4096)
    task = ec2.import_snapshot(
        DiskContainer={"Format": "VHD", "UserBucket": {"S3Bucket": bucket, "S3Key": "not-a-vhd"}}
    )["ImportTaskId"]
    first = ec2.describe_import_snapshot_tasks(ImportTaskIds=[task])["ImportSnapshotTasks"][0]
    assert first["SnapshotTaskDetail"]["Status"] == "active"
    with pytest.raises(imp.ImportFailed, match=r"ClientError: Disk validation failed \[Unsupported VHD Footer\]"):
        imp.wait_import(ec2, task, timeout=30, interval=0.2)


def test_a_missing_vmimport_role_is_explained(clients: Any) -> None:
    iam = clients.client("iam", "us-east-1")
    with pytest.raises(UsageError) as info:
        imp.check_role(iam, "no-such-role-" + uuid.uuid4().hex[:6], Progress())
    assert "does not exist" in info.value.message
    assert info.value.hint and "vmie.amazonaws.com" in info.value.hint


def test_the_bucket_must_be_in_the_import_region(clients: Any) -> None:
    s3 = clients.client("s3", "eu-west-1")
    name = f"imagekit-test-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    with pytest.raises(UsageError, match="is in eu-west-1, but the import runs in us-east-1"):
        imp.check_bucket_region(s3, name, "us-east-1")


def test_part_size_fits_10000_parts() -> None:
    assert imp.part_size_for(10 * 2**20, 1) == 5 * 2**20
    assert imp.part_size_for(100 * 2**30, 64 * 2**20) * 10000 >= 100 * 2**30


def test_a_repeated_client_token_returns_the_same_task_without_wedging_the_server(
    local_cloud: str, clients: Any, bucket: str, vmimport: None, make_image: Callable[..., SparseImage]
) -> None:
    """Issue 13 item 6: the second ImportSnapshot with a token took the server's lock twice and hung."""
    import boto3
    from botocore.config import Config

    image = make_image(None)
    s3, ec2 = clients.client("s3", "us-east-1"), clients.client("ec2", "us-east-1")
    sha = imp.image_id_of(image.path)
    where = imp.S3Location(bucket, imp.object_key("imports", sha))
    imp.upload_object(s3, image.path, where, image_id=sha, part_size=PART)
    token = uuid.uuid4().hex
    task = imp.start_import(ec2, where, description="t", role_name="vmimport", client_token=token, tags={})
    snapshot = imp.wait_import(ec2, task, timeout=30, interval=0.2)  # finished: the path that deadlocked
    impatient = boto3.client(
        "ec2", region_name="us-east-1", endpoint_url=local_cloud,
        config=Config(read_timeout=10, connect_timeout=5, retries={"total_max_attempts": 1}),
    )
    for _ in range(2):
        again = imp.start_import(impatient, where, description="t", role_name="vmimport", client_token=token, tags={})
        assert again == task
    described = impatient.describe_import_snapshot_tasks(ImportTaskIds=[task])["ImportSnapshotTasks"]
    detail = described[0]["SnapshotTaskDetail"]
    assert (detail["Status"], detail["SnapshotId"]) == ("completed", snapshot)
