"""Issue 13 item 2: publish verifies the bytes it reuses or uploads, never the manifest alone."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from imagekit.cli import cli
from imagekit.image.blockmap import BlockMap
from imagekit.publish.facts import image_facts
from imagekit.publish.pipeline import ID_TAG, MADE_BY_TAG, PublishRequest, publish
from imagekit.publish.register import RegisterOptions
from imagekit.publish.uploaders import ImportSnapshot
from imagekit.publish.wait import Backoff
from imagekit.util.errors import ImagekitError
from imagekit.util.progress import Progress
from tests.publish.conftest import BLOCK, Recorder, SparseImage, independent_block_map, stamp_manifest


def overwrite_block(path: Path, index: int, fill: bytes = b"\x5a") -> None:
    with open(path, "r+b") as fh:
        fh.seek(index * BLOCK)
        fh.write(fill * 4096)


def request(image: SparseImage, name: str, region: str = "us-east-1", **kw: Any) -> PublishRequest:
    return PublishRequest(
        facts=image_facts(image.path),
        register=RegisterOptions(name=name),
        region=region,
        poll_interval=0.1,
        backoff=Backoff(attempts=2, base=0.01, cap=0.02),
        **kw,
    )


def images_named(ec2: Any, name: str) -> list[dict[str, Any]]:
    return list(ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [name]}])["Images"])


def snapshots_tagged(ec2: Any, sha: str) -> list[dict[str, Any]]:
    found = ec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": f"tag:{ID_TAG}", "Values": [sha]}])
    return list(found["Snapshots"])


def cli_args(image: SparseImage, name: str, local_cloud: str, *extra: str) -> list[str]:
    return ["publish", str(image.path), "--name", name, "--endpoint-url", local_cloud, "--poll-interval", "0.1",
            "--no-lint", *extra]


def cli_publish(image: SparseImage, name: str, local_cloud: str, *extra: str) -> Any:
    return CliRunner().invoke(cli, cli_args(image, name, local_cloud, *extra), catch_exceptions=False)


def imagekit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imagekit", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("record", ["block_map", "sha256"])  # a build's manifest, and one from before block maps
def test_a_changed_image_beside_its_old_manifest_is_refused_naming_both(
    local_cloud: str, clients: Any, make_image: Callable[..., SparseImage], unique_name: str, record: str
) -> None:
    image = make_image("pv")
    old_sha = stamp_manifest(image, record)
    first = cli_publish(image, unique_name, local_cloud)
    assert first.exit_code == 0, first.output
    ec2 = clients.client("ec2", "us-east-1")
    snapshots_before = {s["SnapshotId"] for s in snapshots_tagged(ec2, old_sha)}

    overwrite_block(image.path, 3)  # the image changes; its manifest still says old_sha
    again = imagekit(*cli_args(image, unique_name + "-2", local_cloud))
    assert again.returncode == 2, again.stderr
    manifest = f"{image.path}.manifest.json"
    error, hint = again.stderr.strip().splitlines()[-2:]
    assert error.startswith(f"error: {image.path} is not the image its build manifest {manifest} describes")
    assert hint.startswith("hint: rebuild the image") and f"delete the stale {manifest}" in hint
    assert "Traceback" not in again.stderr
    assert images_named(ec2, unique_name + "-2") == []  # nothing registered from the old snapshot
    assert {s["SnapshotId"] for s in snapshots_tagged(ec2, old_sha)} == snapshots_before
    new_id = BlockMap(image.size, independent_block_map(image.path)).image_id
    assert snapshots_tagged(ec2, new_id) == []  # nor anything uploaded


def test_an_image_changed_between_verify_and_upload_is_not_completed(
    clients: Any, make_image: Callable[..., SparseImage], unique_name: str
) -> None:
    image = make_image("pv")
    sha = stamp_manifest(image)
    ebs, ec2 = clients.client("ebs", "us-east-1"), clients.client("ec2", "us-east-1")

    def change_image(**_: Any) -> None:  # after verification, before the first block is read
        overwrite_block(image.path, 3)

    ebs.meta.events.register("before-call.ebs.StartSnapshot", change_image)
    try:
        with pytest.raises(ImagekitError) as info:
            publish(clients, request(image, unique_name), Progress())
    finally:
        ebs.meta.events.unregister("before-call.ebs.StartSnapshot", change_image)
    message = info.value.message
    assert f"{image.path} changed after it was verified: block 3 differs from the verified image" in message
    assert "is not completed; deleted the incomplete snapshot snap-" in message
    assert snapshots_tagged(ec2, sha) == []  # neither completed nor left tagged as this image
    assert images_named(ec2, unique_name) == []


def test_an_image_changed_during_the_s3_upload_is_not_imported(
    clients: Any, make_image: Callable[..., SparseImage], unique_name: str
) -> None:
    image = make_image("hvm")
    stamp_manifest(image)
    s3, ec2 = clients.client("s3", "us-east-1"), clients.client("ec2", "us-east-1")
    bucket = f"imagekit-test-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    iam = clients.client("iam", "us-east-1")
    with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
        iam.create_role(RoleName="vmimport", AssumeRolePolicyDocument="{}")

    def change_image(**_: Any) -> None:
        overwrite_block(image.path, 40)

    s3.meta.events.register("before-call.s3.CreateMultipartUpload", change_image)
    try:
        with pytest.raises(ImagekitError, match="changed after it was verified: the bytes read for the S3 upload"):
            publish(clients, request(image, unique_name, uploader=ImportSnapshot(bucket=bucket), kernel=None),
                    Progress())
    finally:
        s3.meta.events.unregister("before-call.s3.CreateMultipartUpload", change_image)
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert images_named(ec2, unique_name) == []


def test_a_reused_snapshot_standing_in_for_the_method_is_reported(
    local_cloud: str, recorded_clients: Any, recorder: Recorder, make_image: Callable[..., SparseImage],
    unique_name: str
) -> None:
    image = make_image("hvm")
    stamp_manifest(image)
    first = cli_publish(image, unique_name, local_cloud, "--json")
    assert first.exit_code == 0, first.output
    made = json.loads(first.stdout)["snapshot"]
    assert made == {"id": made["id"], "reused": False, "made_by": "ebs-direct", "requested": "ebs-direct"}

    bucket = f"imagekit-test-{uuid.uuid4().hex[:8]}"
    recorded_clients.client("s3", "us-east-1").create_bucket(Bucket=bucket)
    iam = recorded_clients.client("iam", "us-east-1")
    with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
        iam.create_role(RoleName="vmimport", AssumeRolePolicyDocument="{}")
    extra = ("--method", "import-snapshot", "--bucket", bucket)
    again = cli_publish(image, unique_name + "-import", local_cloud, *extra, "--json")
    assert again.exit_code == 0, again.output
    expected = {"id": made["id"], "reused": True, "made_by": "ebs-direct", "requested": "import-snapshot"}
    assert json.loads(again.stdout)["snapshot"] == expected
    saved = json.loads(image.path.with_name(image.path.name + ".publish.json").read_text())
    assert saved["snapshot"] == expected
    ec2 = recorded_clients.client("ec2", "us-east-1")
    assert recorded_clients.client("s3", "us-east-1").list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    described = images_named(ec2, unique_name + "-import")[0]
    assert described["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"] == made["id"]

    human = cli_publish(image, unique_name + "-human", local_cloud, *extra)
    assert human.exit_code == 0, human.output
    assert f"snapshot {made['id']}: reused, made by ebs-direct, standing in for the import-snapshot upload" in (
        human.stderr
    )
    assert human.stdout.startswith("us-east-1\tami-")


def test_a_tag_alone_does_not_make_a_snapshot_reusable(
    recorded_clients: Any, recorder: Recorder, make_image: Callable[..., SparseImage], unique_name: str
) -> None:
    """A completed snapshot tagged with the image id that imagekit did not make is not reused."""
    image = make_image("pv")
    sha = stamp_manifest(image)
    ebs, ec2 = recorded_clients.client("ebs", "us-east-1"), recorded_clients.client("ec2", "us-east-1")
    impostor = ebs.start_snapshot(VolumeSize=1, Description="someone else's")["SnapshotId"]
    ebs.complete_snapshot(SnapshotId=impostor, ChangedBlocksCount=0)
    ec2.create_tags(Resources=[impostor], Tags=[{"Key": ID_TAG, "Value": sha}, {"Key": MADE_BY_TAG,
                                                                              "Value": "ebs-direct"}])
    recorder.calls.clear()
    result = publish(recorded_clients, request(image, unique_name), Progress())
    assert result.snapshot is not None and result.snapshot["id"] != impostor
    assert result.snapshot["reused"] is False
    assert len(recorder.of("PutSnapshotBlock")) == len(image.data_blocks)


def test_an_ami_of_the_name_from_other_bytes_is_not_already_published(
    clients: Any, make_image: Callable[..., SparseImage], unique_name: str
) -> None:
    first = make_image("pv", name="a.raw")
    publish(clients, request(first, unique_name), Progress())
    other = make_image("pv", name="b.raw")
    with pytest.raises(ImagekitError) as info:
        publish(clients, request(other, unique_name), Progress())
    assert info.value.exit_code == 2
    assert f"--name {unique_name}: AMI ami-" in info.value.message and "registered from an image with id" in (
        info.value.message
    )


def test_a_pending_snapshot_a_killed_upload_left_is_deleted_by_the_rerun(
    clients: Any, make_image: Callable[..., SparseImage], unique_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGKILL leaves no chance to clean up: the re-run deletes the pending snapshot, naming it, and uploads."""
    image = make_image("pv")
    sha = stamp_manifest(image)
    ebs, ec2 = clients.client("ebs", "us-east-1"), clients.client("ec2", "us-east-1")
    tags = [{"Key": ID_TAG, "Value": sha}, {"Key": MADE_BY_TAG, "Value": "ebs-direct"}]
    left = ebs.start_snapshot(VolumeSize=1, Description=f"imagekit {unique_name}", Tags=tags)["SnapshotId"]
    result = publish(clients, request(image, unique_name), Progress("plain"))
    assert f"deleted snapshot {left} (pending), left by an interrupted upload of this image" in capsys.readouterr().err
    [done] = snapshots_tagged(ec2, sha)
    assert done["State"] == "completed" and result.snapshot and done["SnapshotId"] == result.snapshot["id"] != left


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"boot_mode": [1]}, "boot_mode: Input should be 'legacy-bios', 'uefi' or 'uefi-preferred'"),
        ({"image": [1]}, "image: Input should be an object"),
        ({"image": {"sha256": 5}}, "image.sha256: Input should be a valid string"),
        ({"image": {"sha256": "xyz"}}, "image.sha256: 'xyz' is not a sha256"),
        ({"image": {"block_map": 5}}, "image.block_map: Input should be an object"),
        ({"image": {"block_map": {"block_size": 4096, "blocks": []}}}, "image.block_map: block_size: 4096 is not"),
        ({"image": {"block_map": {"block_size": 524288, "blocks": [[0, "eA=="]]}}},
         "image.block_map: blocks.0: 'eA==' is not a base64 SHA-256"),
        ({"image": {"block_map": {"block_size": 524288, "blocks": [[99, "A" * 43 + "="]]}}},
         "image.block_map: blocks.0: index 99 is outside the image (2 blocks)"),
        ({"arch": {"x": 1}}, "arch: Input should be a valid string"),
        ({"data_volumes": 5}, "data_volumes: Input should be a valid array"),
        ({"data_volumes": [1]}, "data_volumes.0: Input should be an object"),
        ({"data_volumes": [{"image": "img.raw"}]}, "data_volumes.0.name: None is not a non-empty string"),
    ],
)
def test_odd_manifests_are_one_line_errors_naming_the_key(
    tmp_path: Path, manifest: dict[str, Any], message: str
) -> None:
    image = tmp_path / "img.raw"
    with open(image, "wb") as fh:
        fh.truncate(1 << 20)  # the smallest disk imagekit takes for one
    base = {"arch": "x86_64", "layout": "hd0", "virtualization": "paravirtual"}
    image.with_name("img.raw.manifest.json").write_text(json.dumps({**base, **manifest}))
    proc = imagekit("publish", str(image), "--name", "good-name", "--dry-run", "--no-lint", "--region", "us-east-1")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {image}.manifest.json: {message}"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_image_id_tag_moved_onto_another_images_snapshot_is_caught_reading_blocks_back(
    recorded_clients: Any, recorder: Recorder, make_image: Callable[..., SparseImage], unique_name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Same block layout, other bytes: the listing agrees, the blocks read back do not."""
    other = make_image("pv", name="other.raw")
    stamp_manifest(other)
    theirs = publish(recorded_clients, request(other, unique_name + "-other"), Progress())
    assert theirs.snapshot is not None
    image = make_image("pv", name="img.raw")
    sha = stamp_manifest(image)
    assert image.data_blocks == other.data_blocks
    ec2 = recorded_clients.client("ec2", "us-east-1")
    ec2.create_tags(Resources=[theirs.snapshot["id"]], Tags=[{"Key": ID_TAG, "Value": sha}])
    recorder.calls.clear()
    mine = publish(recorded_clients, request(image, unique_name), Progress("plain"))
    assert mine.snapshot is not None and mine.snapshot["id"] != theirs.snapshot["id"]
    warned = capsys.readouterr().err
    assert f"not reusing snapshot {theirs.snapshot['id']}" in warned and "read back is not the image's block" in warned
    assert len(recorder.of("PutSnapshotBlock")) == len(image.data_blocks)


def test_a_copy_region_holding_an_ami_of_the_name_from_other_bytes_is_not_retagged(
    clients: Any, make_image: Callable[..., SparseImage], unique_name: str
) -> None:
    other = make_image("pv", name="other.raw")
    theirs = publish(clients, request(other, unique_name, region="eu-west-1"), Progress())
    theirs_id = theirs.regions["eu-west-1"].image_id
    image = make_image("pv", name="img.raw")
    mine = publish(clients, request(image, unique_name, copy_to=("eu-west-1",)), Progress())
    assert "eu-west-1" in mine.errors and f"AMI {theirs_id} in eu-west-1 is named {unique_name}" in (
        mine.errors["eu-west-1"]
    )
    eu = clients.client("ec2", "eu-west-1")
    tags = {t["Key"]: t["Value"] for t in eu.describe_images(ImageIds=[theirs_id])["Images"][0]["Tags"]}
    assert tags[ID_TAG] == theirs.image_id  # not overwritten with this image's id
