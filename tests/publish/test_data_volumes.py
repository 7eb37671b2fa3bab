"""Data volumes (seed 000) through publish: each volume image of the build manifest becomes a snapshot
mapped on its device with its DeleteOnTermination, against the local cloud; a re-run reuses them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from imagekit.manifest import sha256_file
from imagekit.publish.facts import image_facts
from imagekit.publish.pipeline import PublishRequest, publish
from imagekit.publish.register import RegisterOptions
from imagekit.util.errors import UsageError
from imagekit.util.progress import Progress
from tests.publish.conftest import Recorder, SparseImage, write_image


def add_volume(image: SparseImage, name: str, device: str, keep: bool) -> Path:
    """A small volume image beside `image`, listed in its manifest as `imagekit build` lists it."""
    vol = write_image(image.path.with_name(f"{image.path.name}.{name}.img"), 3 * 2**20, {1024: name.encode() * 100})
    manifest = image.path.with_name(image.path.name + ".manifest.json")
    data = json.loads(manifest.read_text())
    data.setdefault("data_volumes", []).append({
        "name": name, "mountpoint": f"/srv/{name}", "label": name, "type": "ext4", "size": vol.size,
        "device": device, "image": vol.path.name, "delete_on_termination": not keep, "services": [],
        "sha256": sha256_file(vol.path),
    })
    manifest.write_text(json.dumps(data))
    return vol.path


def test_data_volumes_are_snapshotted_and_mapped(
    recorded_clients: Any, recorder: Recorder, make_image: Callable[..., SparseImage], unique_name: str
) -> None:
    image = make_image("pv")
    add_volume(image, "pgdata", "/dev/sdh", keep=True)
    add_volume(image, "scratch", "/dev/sdi", keep=False)
    req = PublishRequest(facts=image_facts(image.path), register=RegisterOptions(name=unique_name),
                         region="us-east-1", poll_interval=0.1)
    result = publish(recorded_clients, req, Progress())
    root, pgdata, scratch = result.regions["us-east-1"].snapshot_ids
    mappings = recorder.of("RegisterImage")[0]["BlockDeviceMappings"]
    assert mappings == [
        {"DeviceName": "/dev/sda1",
         "Ebs": {"SnapshotId": root, "VolumeSize": 1, "VolumeType": "gp2", "DeleteOnTermination": True}},
        {"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"},
        {"DeviceName": "/dev/sdh",
         "Ebs": {"SnapshotId": pgdata, "VolumeSize": 1, "VolumeType": "gp2", "DeleteOnTermination": False}},
        {"DeviceName": "/dev/sdi",
         "Ebs": {"SnapshotId": scratch, "VolumeSize": 1, "VolumeType": "gp2", "DeleteOnTermination": True}},
    ]
    assert len(recorder.of("StartSnapshot")) == 3
    ec2 = recorded_clients.client("ec2", "us-east-1")
    kept = ec2.describe_images(ImageIds=[result.regions["us-east-1"].image_id])["Images"][0]
    assert [m["DeviceName"] for m in kept["BlockDeviceMappings"]] == ["/dev/sda1", "/dev/sdb", "/dev/sdh", "/dev/sdi"]
    snap = ec2.describe_snapshots(SnapshotIds=[pgdata])["Snapshots"][0]
    assert {"Key": "imagekit:name", "Value": f"{unique_name} pgdata"} in snap["Tags"]

    again = publish(recorded_clients, req, Progress())  # already published: nothing uploaded
    assert again.regions["us-east-1"].how == "existing"
    assert len(recorder.of("StartSnapshot")) == 3


def test_missing_volume_image_is_refused_before_upload(make_image: Callable[..., SparseImage]) -> None:
    image = make_image("pv")
    add_volume(image, "pgdata", "/dev/sdh", keep=True).unlink()
    with pytest.raises(UsageError, match=r"data_volumes\.0\.image: .*img\.raw\.pgdata\.img is missing"):
        image_facts(image.path)
