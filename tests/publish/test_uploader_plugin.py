"""docs/architecture.md's "Add a publish method", followed in a test: a third method, defined here, reaches
`imagekit publish` through `publish/uploaders.py`'s two tables alone (UPLOADERS: how --method makes it;
PROVENANCE: what its snapshots look like, so a later publish can reuse one), against the local cloud (moto
over HTTP). pipeline.py and reuse.py do not name it."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

from imagekit.publish import ebs_direct
from imagekit.publish.facts import image_facts
from imagekit.publish.pipeline import PublishRequest, publish, to_record
from imagekit.publish.register import RegisterOptions
from imagekit.publish.reuse import MADE_BY_TAG, Provenance, SnapshotChoice, tag_value
from imagekit.publish.uploaders import PROVENANCE, UPLOADERS, Uploaded, UploadJob, make_uploader
from imagekit.util.errors import UsageError
from imagekit.util.progress import Progress
from tests.publish.conftest import BLOCK, write_image

HVM_MANIFEST = {"name": "t", "arch": "x86_64", "layout": "gpt-uefi", "virtualization": "hvm", "boot_mode": "uefi"}


@dataclass(frozen=True)
class OneByOne:
    """EBS direct, one block in flight at a time, under its own name and snapshot description."""

    method: ClassVar[str] = "one-by-one"
    provenance: ClassVar[Provenance] = Provenance("imagekit one-by-one ", exact_blocks=True)

    @classmethod
    def from_options(cls, opts: Mapping[str, Any]) -> OneByOne:
        return cls()

    def upload(self, clients: Any, job: UploadJob, progress: Progress) -> Uploaded:
        uploader = ebs_direct.EbsDirectUploader(clients.client("ebs", job.region), workers=1, backoff=job.backoff)
        stats = uploader.upload(job.facts.path, description=f"imagekit one-by-one {job.name}",
                                tags={**job.tags, MADE_BY_TAG: self.method}, expected=job.digest.blocks,
                                expected_size=job.digest.size)
        return Uploaded(SnapshotChoice(stats.snapshot_id, self.method, reused=False),
                        {"method": self.method, "blocks_sent": stats.blocks_sent})


@pytest.fixture
def plugged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(UPLOADERS, OneByOne.method, OneByOne.from_options)
    monkeypatch.setitem(PROVENANCE, OneByOne.method, OneByOne.provenance)


def request(image: Path, name: str) -> PublishRequest:
    return PublishRequest(facts=image_facts(image), register=RegisterOptions(name=name), region="us-east-1",
                          uploader=make_uploader("one-by-one", {}), kernel=None, poll_interval=0.2)


def test_a_method_added_to_the_table_publishes_and_its_snapshot_is_reused(
        plugged: None, tmp_path: Path, clients: Any, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    writes = {0: uuid.uuid4().bytes * 64, 1080: b"\x53\xef", 5 * BLOCK: b"plugin" * 100}
    image = write_image(tmp_path / "hvm.img", 24 * 2**20, writes, HVM_MANIFEST)
    first = publish(clients, request(image.path, unique_name), Progress())
    region = first.regions["us-east-1"]
    ec2 = clients.client("ec2", "us-east-1")
    [snap] = ec2.describe_snapshots(SnapshotIds=region.snapshot_ids)["Snapshots"]
    assert tag_value(snap, MADE_BY_TAG) == "one-by-one" and snap["Description"].startswith("imagekit one-by-one ")
    record = to_record(request(image.path, unique_name), first)
    assert record["upload"] == {"method": "one-by-one", "blocks_sent": len(image.data_blocks)}
    assert ec2.describe_images(ImageIds=[region.image_id])["Images"][0]["BlockDeviceMappings"][0]["Ebs"][
        "SnapshotId"] == snap["SnapshotId"]

    # the same bytes under another AMI name: its provenance lets the later publish trust and reuse the snapshot
    again = publish(clients, request(image.path, unique_name + "-b"), Progress())
    assert again.snapshot == {"id": snap["SnapshotId"], "reused": True, "made_by": "one-by-one",
                              "requested": "one-by-one"}
    # without its provenance entry the snapshot is not imagekit's: uploaded afresh, never trusted on a tag
    monkeypatch.delitem(PROVENANCE, OneByOne.method)
    third = publish(clients, request(image.path, unique_name + "-c"), Progress())
    assert third.snapshot is not None and third.snapshot["reused"] is False
    assert third.regions["us-east-1"].snapshot_ids != region.snapshot_ids


def test_the_method_table_is_what_method_offers(plugged: None) -> None:
    assert isinstance(make_uploader("one-by-one", {}), OneByOne)
    with pytest.raises(UsageError, match=r"--method: 'two-by-two' is not one of ebs-direct, import-snapshot, "
                                         r"one-by-one"):
        make_uploader("two-by-two", {})
