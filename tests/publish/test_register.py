"""RegisterImage: the exact requests for PV and HVM (botocore hooks), and the combinations refused."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from imagekit.publish.facts import BootMode, ImageFacts, Layout, Virtualization, image_facts
from imagekit.publish.pipeline import PublishRequest, publish
from imagekit.publish.register import RegisterOptions, check_combination, check_name
from imagekit.util.errors import UsageError
from imagekit.util.progress import Progress
from tests.publish.conftest import Recorder, SparseImage

FACTS = ImageFacts(
    path=Path("/nonexistent.raw"),
    size=2**30,
    allocated=0,
    sha256="0" * 64,
    arch="x86_64",
    layout=Layout.HD0,
    virtualization=Virtualization.PARAVIRTUAL,
    boot_mode=None,
    manifest_path=None,
    manifest_sha256=None,
    recipe=None,
)
HVM = replace(FACTS, layout=Layout.GPT_UEFI, virtualization=Virtualization.HVM, boot_mode=BootMode.UEFI)


def test_pv_register_request_is_exact(
    recorded_clients: Any, recorder: Recorder, make_image: Callable[..., SparseImage], unique_name: str
) -> None:
    image = make_image("pv")
    req = PublishRequest(
        facts=image_facts(image.path),
        register=RegisterOptions(name=unique_name, description="PV test"),
        region="us-east-1",
        poll_interval=0.2,
    )
    result = publish(recorded_clients, req, Progress())
    snapshot = result.regions["us-east-1"].snapshot_ids[0]
    assert recorder.of("RegisterImage") == [
        {
            "Name": unique_name,
            "Description": "PV test",
            "Architecture": "x86_64",
            "VirtualizationType": "paravirtual",
            "KernelId": "aki-5c21674b",  # pv-grub-hd0_1.05-x86_64.gz in us-east-1, found by name
            "RootDeviceName": "/dev/sda1",
            "BlockDeviceMappings": [
                {
                    "DeviceName": "/dev/sda1",
                    "Ebs": {"SnapshotId": snapshot, "VolumeSize": 1, "VolumeType": "gp2", "DeleteOnTermination": True},
                },
                {"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"},
            ],
        }
    ]
    assert {"Owners": ["amazon"], "Filters": [{"Name": "name", "Values": ["pv-grub-hd0_1.05-x86_64.gz"]}]} in (
        recorder.of("DescribeImages")
    )
    ec2 = recorded_clients.client("ec2", "us-east-1")
    kept = ec2.describe_images(ImageIds=[result.regions["us-east-1"].image_id])["Images"][0]
    assert kept["KernelId"] == "aki-5c21674b"
    assert kept["VirtualizationType"] == "paravirtual"
    assert kept["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"] == snapshot
    assert "RamdiskId" not in kept


def test_hvm_register_request_is_exact(
    recorded_clients: Any, recorder: Recorder, make_image: Callable[..., SparseImage], unique_name: str
) -> None:
    image = make_image("hvm")
    req = PublishRequest(
        facts=image_facts(image.path),
        register=RegisterOptions(name=unique_name, imds_v2=True, tpm=True),
        region="us-east-1",
        kernel=None,
        poll_interval=0.2,
    )
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
            "BootMode": "uefi",
            "ImdsSupport": "v2.0",
            "TpmSupport": "v2.0",
        }
    ]
    assert not [p for p in recorder.of("DescribeImages") if p.get("Owners") == ["amazon"]]  # no AKI for HVM
    ec2 = recorded_clients.client("ec2", "us-east-1")
    kept = ec2.describe_images(ImageIds=[result.regions["us-east-1"].image_id])["Images"][0]
    assert (kept["EnaSupport"], kept["BootMode"], kept["TpmSupport"]) == (True, "uefi", "v2.0")


def test_partitioned_pv_image_roots_on_sda() -> None:
    from imagekit.publish.register import register_params

    facts = replace(FACTS, layout=Layout.HD00)
    params = register_params(facts, RegisterOptions(name="abc", kernel_id="aki-1"), "snap-1", 1)
    assert params["RootDeviceName"] == "/dev/sda"
    assert params["BlockDeviceMappings"][0]["DeviceName"] == "/dev/sda"
    assert "RamdiskId" not in params


@pytest.mark.parametrize(
    ("facts", "opts", "message"),
    [
        (FACTS, RegisterOptions(name="abc", ena=True), "--ena is for HVM images"),
        (FACTS, RegisterOptions(name="abc", sriov=True), "--sriov is for HVM images"),
        (FACTS, RegisterOptions(name="abc", ramdisk_id="ari-1"), "takes no ramdisk"),
        (FACTS, RegisterOptions(name="abc", boot_mode=BootMode.UEFI), "--boot-mode is for HVM"),
        (replace(FACTS, layout=Layout.GPT_UEFI), RegisterOptions(name="abc"), "MBR partition tables only"),
        (replace(FACTS, arch="arm64"), RegisterOptions(name="abc"), "cannot be paravirtual"),
        (FACTS, RegisterOptions(name="abc", kernel_id="ami-1"), "starts with aki-"),
        (HVM, RegisterOptions(name="abc", kernel_id="aki-1"), "--kernel-id is for paravirtual"),
        (
            replace(HVM, boot_mode=BootMode.LEGACY_BIOS, layout=Layout.GPT_HYBRID),
            RegisterOptions(name="abc", tpm=True),
            "--tpm needs --boot-mode uefi",
        ),
        (HVM, RegisterOptions(name="abc", tpm=True, boot_mode=BootMode.UEFI_PREFERRED), "--tpm needs"),
        (
            replace(HVM, layout=Layout.MBR_BIOS, boot_mode=None),
            RegisterOptions(name="abc", boot_mode=BootMode.UEFI),
            "no EFI system partition",
        ),
        (replace(HVM, layout=Layout.HD0), RegisterOptions(name="abc"), "is a PV-GRUB layout"),
        (replace(FACTS, arch="sparc"), RegisterOptions(name="abc"), "is not one of"),
        (FACTS, RegisterOptions(name="abc", volume_size_gib=0), "smaller than the image"),
    ],
)
def test_combinations_ec2_rejects_are_refused(facts: ImageFacts, opts: RegisterOptions, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        check_combination(facts, opts)


@pytest.mark.parametrize("name", ["ab", "x" * 129, "bad*name", "tab\tname", "naïve"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(UsageError, match="--name"):
        check_name(name)


def test_good_names_pass() -> None:
    check_name("debian-12-pvgrub-20261122 (hd0) [x86_64] ./@_'")
