"""The local cloud behaves like EC2 where moto does not: RegisterImage, CopyImage, EBS snapshot state."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from imagekit.localcloud.diskformat import DiskValidationError, disk_bytes, size_gib


def snapshot(clients: Any, region: str = "us-east-1") -> str:
    ebs = clients.client("ebs", region)
    snap = ebs.start_snapshot(VolumeSize=1, Description="t")["SnapshotId"]
    ec2 = clients.client("ec2", region)
    assert ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]["State"] == "pending"
    ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=0)
    assert ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]["State"] == "completed"
    return str(snap)


def register(ec2: Any, snap: str, **extra: Any) -> str:
    params = {
        "Name": f"imagekit-test-{uuid.uuid4().hex[:8]}",
        "Architecture": "x86_64",
        "RootDeviceName": "/dev/xvda",
        "BlockDeviceMappings": [{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snap, "VolumeSize": 2}}],
        **extra,
    }
    return str(ec2.register_image(**params)["ImageId"])


def test_register_keeps_what_it_is_given(clients: Any) -> None:
    ec2 = clients.client("ec2", "us-east-1")
    snap = snapshot(clients)
    image_id = register(
        ec2,
        snap,
        VirtualizationType="hvm",
        EnaSupport=True,
        SriovNetSupport="simple",
        BootMode="uefi-preferred",
        ImdsSupport="v2.0",
    )
    image = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    assert image["BlockDeviceMappings"] == [{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snap, "VolumeSize": 2}}]
    assert (image["VirtualizationType"], image["EnaSupport"], image["SriovNetSupport"]) == ("hvm", True, "simple")
    assert (image["BootMode"], image["ImdsSupport"], image["RootDeviceType"]) == ("uefi-preferred", "v2.0", "ebs")
    with pytest.raises(ClientError, match=r"InvalidSnapshot\.InUse|in use"):
        ec2.delete_snapshot(SnapshotId=snap)


def test_register_defaults_and_refusals_follow_ec2(clients: Any) -> None:
    ec2 = clients.client("ec2", "us-east-1")
    snap = snapshot(clients)
    image = ec2.describe_images(ImageIds=[register(ec2, snap)])["Images"][0]
    assert (image["Architecture"], image["VirtualizationType"]) == ("x86_64", "paravirtual")
    with pytest.raises(ClientError, match="ENA"):
        register(ec2, snap, VirtualizationType="paravirtual", EnaSupport=True)
    with pytest.raises(ClientError, match=r"InvalidSnapshot\.NotFound"):
        register(ec2, "snap-0123456789abcdef0")
    with pytest.raises(ClientError, match=r"InvalidAMIName\.Duplicate"):
        ec2.register_image(Name=image["Name"], Architecture="x86_64", RootDeviceName="/dev/xvda")


def test_copy_is_pending_then_available_with_new_snapshots(clients: Any) -> None:
    ec2 = clients.client("ec2", "us-east-1")
    image_id = register(ec2, snapshot(clients), VirtualizationType="paravirtual", KernelId="aki-5c21674b")
    west = clients.client("ec2", "us-west-2")
    token = uuid.uuid4().hex
    copied = west.copy_image(SourceImageId=image_id, SourceRegion="us-east-1", Name="copy-1", ClientToken=token)
    again = west.copy_image(SourceImageId=image_id, SourceRegion="us-east-1", Name="copy-1", ClientToken=token)
    assert copied["ImageId"] == again["ImageId"]
    first = west.describe_images(ImageIds=[copied["ImageId"]])["Images"][0]
    assert first["State"] == "pending"
    time.sleep(0.6)
    done = west.describe_images(ImageIds=[copied["ImageId"]])["Images"][0]
    assert done["State"] == "available"
    assert done["KernelId"] == "aki-70cb0e10"  # us-west-2's pv-grub-hd0_1.05-x86_64.gz, not us-east-1's id
    new_snap = done["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    assert west.describe_snapshots(SnapshotIds=[new_snap])["Snapshots"]


def test_pv_copy_needs_the_kernel_in_the_destination(clients: Any) -> None:
    """CopyImage gives a PV copy the destination's AKI of the same name; a region with none refuses the copy."""
    ec2 = clients.client("ec2", "us-east-1")
    image_id = register(ec2, snapshot(clients), VirtualizationType="paravirtual", KernelId="aki-04206613",
                        Architecture="i386")
    ireland = clients.client("ec2", "eu-west-1")
    copied = ireland.copy_image(SourceImageId=image_id, SourceRegion="us-east-1", Name=f"copy-{uuid.uuid4().hex}")
    assert ireland.describe_images(ImageIds=[copied["ImageId"]])["Images"][0]["KernelId"] == "aki-1c9fd86f"
    paris = clients.client("ec2", "eu-west-3")  # no PV-GRUB in imagekit's tables, none seeded there
    with pytest.raises(ClientError, match=r"InvalidParameterValue.*aki-04206613.*no counterpart in eu-west-3"):
        paris.copy_image(SourceImageId=image_id, SourceRegion="us-east-1", Name=f"copy-{uuid.uuid4().hex}")


def test_describe_images_takes_kernel_ids(clients: Any) -> None:
    ec2 = clients.client("ec2", "eu-west-1")
    assert ec2.describe_images(ImageIds=["aki-dc9ed9af"])["Images"][0]["Name"] == "pv-grub-hd0_1.05-x86_64.gz"
    with pytest.raises(ClientError, match=r"InvalidAMIID\.NotFound"):
        ec2.describe_images(ImageIds=["aki-5c21674b"])  # us-east-1's id: AKI ids are regional


def test_pvgrub_kernels_are_listed_by_amazon(clients: Any) -> None:
    ec2 = clients.client("ec2", "eu-west-1")
    images = ec2.describe_images(
        Owners=["amazon"], Filters=[{"Name": "name", "Values": ["pv-grub-hd0_1.05-x86_64.gz"]}]
    )["Images"]
    assert [i["ImageId"] for i in images] == ["aki-dc9ed9af"]


def test_disk_formats() -> None:
    assert disk_bytes(b"\1" * 1024, "raw") == b"\1" * 1024
    footer = bytearray(512)
    footer[:8] = b"conectix"
    footer[60:64] = (2).to_bytes(4, "big")
    assert disk_bytes(b"\2" * 1024 + bytes(footer), "VHD") == b"\2" * 1024
    for data, fmt, reason in [
        (b"", "RAW", "Empty disk image"),
        (b"QFI\xfb" + bytes(600), "RAW", "the object is QCOW2, not RAW"),
        (b"\1" * 1024, "VHD", "Unsupported VHD Footer"),
        (b"\1" * 1024, "VMDK", "Invalid VMDK header"),
        (b"\1" * 1024, "OVA", "Unsupported specified file format OVA"),
    ]:
        with pytest.raises(DiskValidationError, match=reason):
            disk_bytes(data, fmt)
    assert size_gib(1) == 1 and size_gib(2**30 + 1) == 2


def test_ebs_direct_checksums_are_checked_as_on_aws(clients: Any) -> None:
    import base64
    import hashlib

    ebs, ec2 = clients.client("ebs", "us-east-1"), clients.client("ec2", "us-east-1")
    snap = ebs.start_snapshot(VolumeSize=1, Description="t")["SnapshotId"]
    block = b"\1" * 524288
    right = base64.b64encode(hashlib.sha256(block).digest()).decode()
    wrong = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    put = {"SnapshotId": snap, "BlockIndex": 0, "BlockData": block, "DataLength": 524288,
           "ChecksumAlgorithm": "SHA256"}
    with pytest.raises(ClientError, match=r"ValidationException.*INVALID_CHECKSUM"):
        ebs.put_snapshot_block(**put, Checksum=wrong)
    ebs.put_snapshot_block(**put, Checksum=right)
    with pytest.raises(ClientError, match="ChangedBlocksCount 2 but 1 blocks"):
        ebs.complete_snapshot(SnapshotId=snap, ChangedBlocksCount=2)
    assert ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]["State"] == "error"  # final

    other = ebs.start_snapshot(VolumeSize=1, Description="t")["SnapshotId"]
    ebs.put_snapshot_block(**{**put, "SnapshotId": other}, Checksum=right)
    with pytest.raises(ClientError, match="aggregated Checksum does not match"):
        ebs.complete_snapshot(SnapshotId=other, ChangedBlocksCount=1, Checksum=wrong, ChecksumAlgorithm="SHA256",
                              ChecksumAggregationMethod="LINEAR")
    good = ebs.start_snapshot(VolumeSize=1, Description="t")["SnapshotId"]
    ebs.put_snapshot_block(**{**put, "SnapshotId": good}, Checksum=right)
    linear = base64.b64encode(hashlib.sha256(base64.b64decode(right)).digest()).decode()
    assert ebs.complete_snapshot(SnapshotId=good, ChangedBlocksCount=1, Checksum=linear, ChecksumAlgorithm="SHA256",
                                 ChecksumAggregationMethod="LINEAR")["Status"] == "completed"
    with pytest.raises(ClientError, match="pending snapshots only"):
        ebs.put_snapshot_block(**{**put, "SnapshotId": good}, Checksum=right)
