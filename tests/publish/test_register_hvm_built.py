"""RegisterImage for HVM images that `imagekit build` made (issue 7): the boot mode follows the layout,
ENA and SR-IOV are on, IMDSv2 is required by default, the root is /dev/xvda."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from imagekit.publish.facts import image_facts
from imagekit.publish.pipeline import PublishRequest, publish
from imagekit.publish.register import RegisterOptions
from imagekit.util.progress import Progress
from tests.publish.conftest import Recorder
from tests.util import run_imagekit

ESP_33M = '[filesystems.esp]\nsize = "33M"\n'


@pytest.mark.parametrize(("layout", "extra", "mode"), [("mbr-bios", "", "legacy-bios"),
                                                       ("gpt-uefi", ESP_33M, "uefi"),
                                                       ("gpt-hybrid", ESP_33M, "uefi-preferred")])
def test_built_hvm_image_register_request(small_recipe: Callable[..., Path], tmp_path: Path, recorded_clients: Any,
                                          recorder: Recorder, unique_name: str, layout: str, extra: str,
                                          mode: str) -> None:
    image = tmp_path / f"{layout}.img"
    proc = run_imagekit("build", small_recipe(layout=layout, size="128M", extra=extra), "-o", image, "--no-lint")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / f"{layout}.img.manifest.json").read_text())
    assert (manifest["virtualization"], manifest["boot_mode"]) == ("hvm", mode)
    req = PublishRequest(facts=image_facts(image), register=RegisterOptions(name=unique_name), region="us-east-1",
                         kernel=None, poll_interval=0.2)
    result = publish(recorded_clients, req, Progress())
    snapshot = result.regions["us-east-1"].snapshot_ids[0]
    assert recorder.of("RegisterImage") == [
        {
            "Name": unique_name,
            "Architecture": "x86_64",
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
            "BootMode": mode,
            "ImdsSupport": "v2.0",
        }
    ]
    ec2 = recorded_clients.client("ec2", "us-east-1")
    kept = ec2.describe_images(ImageIds=[result.regions["us-east-1"].image_id])["Images"][0]
    assert (kept["VirtualizationType"], kept["BootMode"], kept["EnaSupport"]) == ("hvm", mode, True)
    assert kept.get("ImdsSupport") == "v2.0"


def test_imds_v2_can_be_declined(make_image: Callable[..., Any], recorded_clients: Any, recorder: Recorder,
                                 unique_name: str) -> None:
    image = make_image("hvm")
    req = PublishRequest(facts=image_facts(image.path), register=RegisterOptions(name=unique_name, imds_v2=False),
                         region="us-east-1", kernel=None, poll_interval=0.2)
    publish(recorded_clients, req, Progress())
    assert "ImdsSupport" not in recorder.of("RegisterImage")[0]
