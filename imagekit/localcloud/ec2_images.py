"""RegisterImage and CopyImage that keep what they are given.

moto's RegisterImage keeps the name and description and invents a root snapshot; EC2 keeps the
architecture, virtualization type, kernel, ramdisk, root device, block device mappings, ENA,
SR-IOV, boot mode, IMDS and TPM settings. These handlers do what EC2 does, including the checks
EC2 makes on the request (duplicate name, unknown snapshot, ENA or SR-IOV on a PV image), and
CopyImage copies the snapshots (and their EBS-direct blocks) into the destination region, gives a
PV copy the destination region's own PV-GRUB AKI (same name, regional id), and reports `pending`
for a moment, as EC2 does.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

_installed = False
_lock = threading.Lock()


def copy_seconds() -> float:
    return float(os.environ.get("IMAGEKIT_LOCALCLOUD_COPY_SECONDS", "1.0"))


def _kept_ami_class() -> type:
    from moto.ec2.models.amis import Ami

    class KeptAmi(Ami):
        """An Ami whose block device mappings are what RegisterImage was given."""

        block_device_mappings: list[dict[str, Any]] = []  # noqa: RUF012 (shadows Ami's property)
        ready_at = 0.0

        @property
        def state(self) -> str:
            return self._state if time.monotonic() >= self.ready_at else "pending"

        @state.setter
        def state(self, value: str) -> None:
            self._state = value

    return KeptAmi


def _fail(code: str, message: str) -> Exception:
    from moto.ec2.exceptions import EC2ClientError

    return EC2ClientError(code, message)


def _new_ami(backend: Any, name: str, description: str, attrs: dict[str, Any], bdms: list[dict[str, Any]]) -> Any:
    from moto.ec2.utils import random_ami_id

    ami_id = random_ami_id()
    ami = _kept_ami_class()(
        backend,
        ami_id,
        name=name,
        description=description,
        virtualization_type=attrs["virtualization_type"],
        architecture=attrs["architecture"],
        root_device_name=attrs["root_device_name"],
        root_device_type="ebs",
        boot_mode=attrs.get("boot_mode"),
    )
    # Ami() invents a volume and a snapshot for itself: drop them, keep the real mappings.
    backend.snapshots.pop(ami.ebs_snapshot.id, None)
    for key, value in attrs.items():
        setattr(ami, key, value)
    ami.block_device_mappings = bdms
    for bdm in bdms:
        snap = backend.snapshots.get(bdm.get("Ebs", {}).get("SnapshotId", ""))
        if snap is not None:
            snap.from_ami = ami_id
            ami.ebs_snapshot = snap
    backend.amis[ami_id] = ami
    return ami


def _check_register(backend: Any, name: str, attrs: dict[str, Any], bdms: list[dict[str, Any]]) -> None:
    if any(a.name == name and a.owner_id == backend.account_id for a in backend.amis.values()):
        raise _fail("InvalidAMIName.Duplicate", f"AMI name {name} is already in use by AMI")
    for bdm in bdms:
        snap_id = bdm.get("Ebs", {}).get("SnapshotId")
        if snap_id and snap_id not in backend.snapshots:
            raise _fail("InvalidSnapshot.NotFound", f"The snapshot '{snap_id}' does not exist.")
    if attrs["virtualization_type"] == "paravirtual":
        if attrs.get("ena_support"):
            raise _fail("InvalidParameterCombination", "Enhanced networking (ENA) is not supported for PV AMIs")
        if attrs.get("sriov_net_support"):
            raise _fail("InvalidParameterCombination", "SR-IOV is not supported for PV AMIs")
    if attrs.get("tpm_support") and attrs.get("boot_mode") != "uefi":
        raise _fail("InvalidParameterCombination", "TPM support requires the uefi boot mode")


def register_image(self: Any) -> Any:
    from moto.core.responses import ActionResult

    name = self._get_param("Name")
    attrs = {
        "architecture": self._get_param("Architecture", "i386"),
        "virtualization_type": self._get_param("VirtualizationType", "paravirtual"),
        "kernel_id": self._get_param("KernelId"),
        "ramdisk_id": self._get_param("RamdiskId"),
        "root_device_name": self._get_param("RootDeviceName", "/dev/sda1"),
        "ena_support": self._get_param("EnaSupport"),
        "sriov_net_support": self._get_param("SriovNetSupport"),
        "boot_mode": self._get_param("BootMode"),
        "imds_support": self._get_param("ImdsSupport"),
        "tpm_support": self._get_param("TpmSupport"),
    }
    bdms = self._get_param("BlockDeviceMappings", [])
    self.error_on_dryrun()
    with _lock:
        _check_register(self.ec2_backend, name, attrs, bdms)
        ami = _new_ami(self.ec2_backend, name, self._get_param("Description", ""), attrs, bdms)
    for spec in self._get_param("TagSpecifications", []):
        if spec.get("ResourceType") == "image":
            for tag in spec.get("Tags", []):
                ami.add_tag(tag["Key"], tag["Value"])
    return ActionResult({"ImageId": ami.id})


def _copy_snapshot(account: str, source_region: str, target: Any, snapshot_id: str) -> str:
    from moto.ebs.models import EBSSnapshot, ebs_backends

    copy = target.copy_snapshot(snapshot_id, source_region, f"Copied for CopyImage from {snapshot_id}", None)
    source_blocks = ebs_backends[account][source_region].snapshots.get(snapshot_id)
    if source_blocks is not None:
        copied = EBSSnapshot(account_id=account, snapshot=copy)
        copied.status = "completed"
        copied.blocks = dict(source_blocks.blocks)
        ebs_backends[account][target.region_name].snapshots[copy.id] = copied
    return str(copy.id)


def destination_image(account: str, source_region: str, target: Any, image_id: str | None) -> str | None:
    """The destination region's own copy of a source AMI's kernel (AKI) or ramdisk (ARI), found by name.

    AKI ids are regional: aki-5c21674b is pv-grub-hd0_1.05-x86_64.gz in us-east-1 only, eu-west-1's is
    aki-dc9ed9af. CopyImage gives the copy the destination's image of the same name (AWS user guide,
    UserProvidedKernels.md: copying to a Region that lacks the source's PV-GRUB version leaves an AMI that
    does not boot; CopyingAMIs.md: a PV AMI cannot be copied to a Region without PV). Here a kernel with
    no namesake in the destination fails the copy; the error code is local-cloud's choice.
    """
    from moto.ec2.models import ec2_backends

    if not image_id:
        return None
    source_image = ec2_backends[account][source_region].amis.get(image_id)
    name = getattr(source_image, "name", None)
    kind = getattr(source_image, "image_type", None)
    same = [a for a in target.amis.values() if name and a.name == name and a.image_type == kind]
    if not same:
        raise _fail(
            "InvalidParameterValue",
            f"the source image's kernel/ramdisk {image_id} ({name or 'unknown'}) of {source_region} has no "
            f"counterpart in {target.region_name}: a paravirtual AMI cannot be copied there",
        )
    return str(same[0].id)


def copy_image(self: Any) -> Any:
    from moto.core.responses import ActionResult
    from moto.ec2.models import ec2_backends

    source_region = self._get_param("SourceRegion")
    source_id = self._get_param("SourceImageId")
    token = self._get_param("ClientToken")
    self.error_on_dryrun()
    backend = self.ec2_backend
    with _lock:
        tokens: dict[str, str] = backend.__dict__.setdefault("_imagekit_copy_tokens", {})
        if token and token in tokens:
            return ActionResult({"ImageId": tokens[token]})
        source = ec2_backends[self.current_account][source_region].describe_images(ami_ids=[source_id])[0]
        bdms = []
        for bdm in getattr(source, "block_device_mappings", []):
            bdm = {**bdm}
            if "Ebs" in bdm and bdm["Ebs"].get("SnapshotId"):
                new_snap = _copy_snapshot(self.current_account, source_region, backend, bdm["Ebs"]["SnapshotId"])
                bdm["Ebs"] = {**bdm["Ebs"], "SnapshotId": new_snap}
            bdms.append(bdm)
        keys = ("architecture", "virtualization_type", "root_device_name", "boot_mode")
        attrs = {k: getattr(source, k, None) for k in keys}
        for k in ("ena_support", "sriov_net_support", "imds_support", "tpm_support"):
            attrs[k] = getattr(source, k, None)
        attrs["kernel_id"] = destination_image(self.current_account, source_region, backend,
                                               getattr(source, "kernel_id", None))
        attrs["ramdisk_id"] = destination_image(self.current_account, source_region, backend,
                                                getattr(source, "ramdisk_id", None))
        name = str(self._get_param("Name") or source.name)
        ami = _new_ami(backend, name, str(self._get_param("Description") or source.description or ""), attrs, bdms)
        ami.ready_at = time.monotonic() + copy_seconds()
        if token:
            tokens[token] = ami.id
    return ActionResult({"ImageId": ami.id})


def install() -> None:
    global _installed
    if _installed:
        return
    from moto.ec2.responses import EC2Response

    EC2Response.register_image = register_image  # type: ignore[method-assign]
    EC2Response.copy_image = copy_image  # type: ignore[method-assign]
    _installed = True
