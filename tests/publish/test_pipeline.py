"""The whole publish against the local cloud: idempotence, copies, sharing, recovery after failures."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest

from imagekit.publish.facts import image_facts
from imagekit.publish.pipeline import ID_TAG, PublishRequest, publish
from imagekit.publish.regions import Sharing
from imagekit.publish.register import RegisterOptions
from imagekit.publish.uploaders import ImportSnapshot
from imagekit.publish.wait import Backoff
from imagekit.util.errors import ImagekitError
from imagekit.util.progress import Progress
from tests.publish.conftest import Recorder, SparseImage, block_index_of, json_error

UPLOAD_CALLS = {"StartSnapshot", "PutSnapshotBlock", "CompleteSnapshot", "RegisterImage", "CopyImage"}


def request(image: SparseImage, name: str, **kw: Any) -> PublishRequest:
    return PublishRequest(
        facts=image_facts(image.path),
        register=RegisterOptions(name=name),
        region="us-east-1",
        poll_interval=0.1,
        backoff=Backoff(attempts=2, base=0.01, cap=0.02),
        **kw,
    )


def test_republish_uploads_nothing_and_copies_are_tagged_and_shared(
    recorded_clients: Any, recorder: Recorder, make_image: Callable[..., SparseImage], unique_name: str
) -> None:
    image = make_image("pv")
    req = request(
        image,
        unique_name,
        copy_to=("eu-west-1",),
        sharing=Sharing(public=True, accounts=("111122223333",)),
        tags={"team": "images"},
    )
    first = publish(recorded_clients, req, Progress())
    assert recorder.names() >= UPLOAD_CALLS
    assert {r.how for r in first.regions.values()} == {"registered", "copied"}

    eu = recorded_clients.client("ec2", "eu-west-1")
    copy = first.regions["eu-west-1"]
    described = eu.describe_images(ImageIds=[copy.image_id])["Images"][0]
    tags = {t["Key"]: t["Value"] for t in described["Tags"]}
    assert tags["team"] == "images" and tags[ID_TAG] == first.image_id
    assert described["KernelId"] == "aki-dc9ed9af"  # the copy boots eu-west-1's own PV-GRUB AKI
    perms = eu.describe_image_attribute(ImageId=copy.image_id, Attribute="launchPermission")["LaunchPermissions"]
    assert {"Group": "all"} in perms and {"UserId": "111122223333"} in perms
    snap = eu.describe_snapshots(SnapshotIds=list(copy.snapshot_ids))["Snapshots"][0]
    assert {"Key": "team", "Value": "images"} in snap["Tags"]
    volume_perms = eu.describe_snapshot_attribute(SnapshotId=copy.snapshot_ids[0], Attribute="createVolumePermission")
    assert {"Group": "all"} in volume_perms["CreateVolumePermissions"]

    recorder.calls.clear()
    second = publish(recorded_clients, req, Progress())
    assert not (UPLOAD_CALLS & recorder.names()), "a re-publish must not upload, register or copy"
    assert {r: x.image_id for r, x in second.regions.items()} == {r: x.image_id for r, x in first.regions.items()}
    assert {r.how for r in second.regions.values()} == {"existing"}


def test_identical_rebuild_under_a_new_name_uploads_nothing(
    recorded_clients: Any, recorder: Recorder, make_image: Callable[..., SparseImage], unique_name: str
) -> None:
    """Publishing keys on the image id: the same bytes under a new AMI name reuse the snapshot."""
    image = make_image("pv")
    first = publish(recorded_clients, request(image, unique_name), Progress())
    recorder.calls.clear()
    second = publish(recorded_clients, request(image, unique_name + "-again"), Progress())
    names = recorder.names()
    assert not ({"StartSnapshot", "PutSnapshotBlock", "CompleteSnapshot"} & names), names
    assert "RegisterImage" in names  # a new name is a new AMI, from the snapshot already there
    assert second.regions["us-east-1"].snapshot_ids == first.regions["us-east-1"].snapshot_ids
    assert second.regions["us-east-1"].image_id != first.regions["us-east-1"].image_id


def test_failed_upload_leaves_no_snapshot_behind(
    clients: Any, make_image: Callable[..., SparseImage], unique_name: str
) -> None:
    image = make_image("pv")
    ebs = clients.client("ebs", "us-east-1")
    last = image.data_blocks[-1]

    def deny_last(request: Any, **_: Any) -> Any:
        return json_error(request, 403, "AccessDeniedException") if block_index_of(request) == last else None

    ebs.meta.events.register("before-send.ebs.PutSnapshotBlock", deny_last)
    try:
        with pytest.raises(ImagekitError) as info:
            publish(clients, request(image, unique_name), Progress())
    finally:
        ebs.meta.events.unregister("before-send.ebs.PutSnapshotBlock", deny_last)
    assert f"failed to put 1 of {(image.size + 524287) // 524288} blocks" in info.value.message
    assert "deleted the incomplete snapshot snap-" in info.value.message
    ec2 = clients.client("ec2", "us-east-1")
    left = ec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": "tag:imagekit:name", "Values": [unique_name]}])
    assert left["Snapshots"] == []

    done = publish(clients, request(image, unique_name), Progress())  # the re-run finishes the job
    assert done.regions["us-east-1"].how == "registered"


def test_rerun_after_a_failed_register_reuses_the_snapshot(
    recorded_clients: Any, recorder: Recorder, make_image: Callable[..., SparseImage], unique_name: str
) -> None:
    image = make_image("pv")
    ec2 = recorded_clients.client("ec2", "us-east-1")

    def refuse(request: Any, **_: Any) -> Any:
        from tests.publish.conftest import ec2_error

        return ec2_error(request, 400, "InvalidAMIName.Malformed", "injected")

    ec2.meta.events.register("before-send.ec2.RegisterImage", refuse)
    try:
        with pytest.raises(ImagekitError) as info:
            publish(recorded_clients, request(image, unique_name), Progress())
    finally:
        ec2.meta.events.unregister("before-send.ec2.RegisterImage", refuse)
    assert info.value.hint and "a re-run registers it without uploading again" in info.value.hint
    assert "InvalidAMIName.Malformed" in info.value.message  # the code as EC2 sends it, not "Unknown"
    snapshot = recorder.of("CompleteSnapshot")[0]["SnapshotId"]

    recorder.calls.clear()
    done = publish(recorded_clients, request(image, unique_name), Progress())
    assert "StartSnapshot" not in recorder.names()
    assert done.regions["us-east-1"].snapshot_ids == (snapshot,)


def test_import_snapshot_method_removes_its_s3_object(
    clients: Any, make_image: Callable[..., SparseImage], unique_name: str
) -> None:
    import uuid

    image = make_image("hvm")
    s3 = clients.client("s3", "us-east-1")
    bucket = f"imagekit-test-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    iam = clients.client("iam", "us-east-1")
    with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
        iam.create_role(RoleName="vmimport", AssumeRolePolicyDocument="{}")
    req = request(image, unique_name, uploader=ImportSnapshot(bucket=bucket), kernel=None)
    result = publish(clients, req, Progress())
    assert result.regions["us-east-1"].how == "registered"
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    ebs = clients.client("ebs", "us-east-1")
    listed = ebs.list_snapshot_blocks(SnapshotId=result.regions["us-east-1"].snapshot_ids[0])["Blocks"]
    assert [b["BlockIndex"] for b in listed] == list(image.data_blocks)
