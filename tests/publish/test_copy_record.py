"""A PV publish copied to other regions: each copy boots its own region's PV-GRUB AKI, and the record says so."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from click.testing import CliRunner

from imagekit.cli import cli
from tests.publish.conftest import SparseImage

AKI_X86_64 = {"us-east-1": "aki-5c21674b", "eu-west-1": "aki-dc9ed9af", "us-west-2": "aki-70cb0e10"}


def test_pv_copies_record_each_regions_kernel(
    local_cloud: str, make_image: Callable[..., SparseImage], unique_name: str, clients: Any
) -> None:
    image = make_image("pv")
    result = CliRunner().invoke(cli, [
        "publish", str(image.path), "--name", unique_name, "--endpoint-url", local_cloud, "--poll-interval", "0.1",
        "--no-lint", "--copy-to", "eu-west-1,us-west-2", "--json",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["errors"] == {}
    assert set(record["regions"]) == set(AKI_X86_64)
    for region, entry in record["regions"].items():
        described = clients.client("ec2", region).describe_images(ImageIds=[entry["image_id"]])["Images"][0]
        assert entry["kernel_id"] == described["KernelId"] == AKI_X86_64[region], region
        assert entry["root_device_name"] == "/dev/sda1"
        assert entry["boot_mode"] is None  # PV: EC2 reports none
        root, ephemeral = entry["block_device_mappings"]
        assert root["DeviceName"] == "/dev/sda1" and root["Ebs"]["SnapshotId"] == entry["snapshot_ids"][0]
        assert ephemeral == {"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"}
    assert len({e["snapshot_ids"][0] for e in record["regions"].values()}) == 3  # each region its own snapshot


def test_hvm_record_keeps_the_boot_mode(
    local_cloud: str, make_image: Callable[..., SparseImage], unique_name: str
) -> None:
    image = make_image("hvm")
    result = CliRunner().invoke(cli, [
        "publish", str(image.path), "--name", unique_name, "--endpoint-url", local_cloud, "--poll-interval", "0.1",
        "--no-lint", "--copy-to", "eu-west-3", "--json",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    regions = json.loads(result.stdout)["regions"]
    assert {r: (e["boot_mode"], e["kernel_id"], e["root_device_name"]) for r, e in regions.items()} == {
        "us-east-1": ("uefi", None, "/dev/xvda"), "eu-west-3": ("uefi", None, "/dev/xvda")}
