"""RegisterImage for an arm64 (Graviton) image (issue 18 item 6): Architecture arm64, BootMode uefi, ENA,
SR-IOV, IMDSv2, root /dev/xvda; asserted exactly as sent to the local cloud (moto over HTTP) and as it keeps it."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from imagekit.publish.facts import image_facts
from imagekit.publish.pipeline import PublishRequest, publish
from imagekit.publish.register import RegisterOptions, check_combination
from imagekit.recipe.model import BootMode, Layout, Virtualization
from imagekit.util.errors import UsageError
from imagekit.util.progress import Progress
from tests.publish.conftest import BLOCK, Recorder, write_image

ARM64_MANIFEST = {"name": "t", "arch": "arm64", "layout": "gpt-uefi", "virtualization": "hvm", "boot_mode": "uefi"}


def arm64_image(tmp_path: Path) -> Path:
    writes = {0: uuid.uuid4().bytes * 64, 1080: b"\x53\xef", 3 * BLOCK: b"arm64" * 100}
    return write_image(tmp_path / "arm64.img", 24 * 2**20, writes, ARM64_MANIFEST).path


def test_arm64_register_request_is_exact(tmp_path: Path, recorded_clients: Any, recorder: Recorder,
                                         unique_name: str) -> None:
    req = PublishRequest(facts=image_facts(arm64_image(tmp_path)), register=RegisterOptions(name=unique_name),
                         region="us-east-1", kernel=None, poll_interval=0.2)
    result = publish(recorded_clients, req, Progress())
    snapshot = result.regions["us-east-1"].snapshot_ids[0]
    assert recorder.of("RegisterImage") == [
        {
            "Name": unique_name,
            "Architecture": "arm64",
            "VirtualizationType": "hvm",
            "RootDeviceName": "/dev/xvda",
            "BlockDeviceMappings": [
                {
                    "DeviceName": "/dev/xvda",
                    "Ebs": {"SnapshotId": snapshot, "VolumeSize": 1, "VolumeType": "gp3", "DeleteOnTermination": True},
                }
            ],
            "EnaSupport": True,
            "SriovNetSupport": "simple",
            "BootMode": "uefi",
            "ImdsSupport": "v2.0",
        }
    ]
    assert not [p for p in recorder.of("DescribeImages") if p.get("Owners") == ["amazon"]]  # no PV-GRUB AKI
    ec2 = recorded_clients.client("ec2", "us-east-1")
    kept = ec2.describe_images(ImageIds=[result.regions["us-east-1"].image_id])["Images"][0]
    assert (kept["Architecture"], kept["BootMode"], kept["EnaSupport"], kept.get("ImdsSupport")) == (
        "arm64", "uefi", True, "v2.0")


def test_arm64_legacy_bios_is_refused_before_any_upload(tmp_path: Path) -> None:
    facts = image_facts(arm64_image(tmp_path))
    with pytest.raises(UsageError, match="arm64 images boot with UEFI only"):
        check_combination(facts, RegisterOptions(name="abc", boot_mode=BootMode.LEGACY_BIOS))
    with pytest.raises(UsageError, match="arm64 images cannot be paravirtual"):
        check_combination(replace(facts, virtualization=Virtualization.PARAVIRTUAL, layout=Layout.HD0),
                          RegisterOptions(name="abc", kernel_id="aki-1"))
