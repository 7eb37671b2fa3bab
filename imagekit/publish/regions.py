"""Copy a registered AMI to other regions (server-side, in parallel), then tag and share it there.

CopyImage copies neither tags nor launch permissions, so both are applied again in each region,
on the image and on its snapshots. A region that already has an image of that name owned by
the account is left as it is (its id is reported), which makes a re-run finish the job.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from imagekit.publish.awserrors import describe
from imagekit.publish.reuse import ID_TAG
from imagekit.publish.wait import image_available
from imagekit.util.errors import ImagekitError
from imagekit.util.progress import Progress


@dataclass(frozen=True)
class Sharing:
    public: bool = False
    accounts: tuple[str, ...] = ()

    @property
    def any(self) -> bool:
        return self.public or bool(self.accounts)


@dataclass(frozen=True)
class RegionImage:
    """One region's AMI as EC2 describes it once available: what the publish record keeps per region."""

    region: str
    image_id: str
    snapshot_ids: tuple[str, ...]
    how: str  # "registered", "copied", "existing"
    kernel_id: str | None = None  # PV: that region's PV-GRUB AKI (CopyImage picks the destination's own)
    root_device_name: str | None = None
    block_device_mappings: tuple[dict[str, Any], ...] = ()
    boot_mode: str | None = None  # HVM: legacy-bios | uefi | uefi-preferred; None when EC2 reports none

    @classmethod
    def described(cls, region: str, image: dict[str, Any], how: str,
                  snapshots: tuple[str, ...] | None = None) -> RegionImage:
        return cls(
            region=region,
            image_id=str(image["ImageId"]),
            snapshot_ids=snapshot_ids(image) if snapshots is None else snapshots,
            how=how,
            kernel_id=image.get("KernelId"),
            root_device_name=image.get("RootDeviceName"),
            block_device_mappings=tuple(image.get("BlockDeviceMappings", [])),
            boot_mode=image.get("BootMode"),
        )

    def record(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "snapshot_ids": list(self.snapshot_ids),
            "how": self.how,
            "kernel_id": self.kernel_id,
            "root_device_name": self.root_device_name,
            "block_device_mappings": [dict(m) for m in self.block_device_mappings],
            "boot_mode": self.boot_mode,
        }


def find_image(ec2: Any, name: str) -> dict[str, Any] | None:
    """The account's own image of that name in the client's region, if any."""
    images = ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [name]}])["Images"]
    images = [i for i in images if i.get("Name") == name and i.get("State") not in {"deregistered", "failed"}]
    return dict(images[0]) if images else None


def snapshot_ids(image: dict[str, Any]) -> tuple[str, ...]:
    return tuple(
        m["Ebs"]["SnapshotId"] for m in image.get("BlockDeviceMappings", []) if m.get("Ebs", {}).get("SnapshotId")
    )


def apply_tags(ec2: Any, resources: list[str], tags: dict[str, str]) -> None:
    if tags and resources:
        ec2.create_tags(Resources=resources, Tags=[{"Key": k, "Value": v} for k, v in sorted(tags.items())])


def apply_sharing(ec2: Any, image_id: str, snapshots: tuple[str, ...], sharing: Sharing) -> None:
    """Launch permissions on the image, createVolumePermission on its snapshots."""
    if not sharing.any:
        return
    perms: list[dict[str, str]] = [{"Group": "all"}] if sharing.public else []
    perms += [{"UserId": a} for a in sharing.accounts]
    ec2.modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": perms})
    for snap in snapshots:
        kwargs: dict[str, Any] = {"SnapshotId": snap, "Attribute": "createVolumePermission", "OperationType": "add"}
        if sharing.public:
            ec2.modify_snapshot_attribute(**kwargs, GroupNames=["all"])
        if sharing.accounts:
            ec2.modify_snapshot_attribute(**kwargs, UserIds=list(sharing.accounts))


@dataclass(frozen=True)
class CopyJob:
    source_region: str
    source_image_id: str
    name: str
    description: str
    tags: dict[str, str]
    sharing: Sharing
    timeout: float
    interval: float
    kernels: dict[str, str] = field(default_factory=dict)  # PV: the AKI each destination must end up with


def copy_one(clients: Any, job: CopyJob, region: str) -> RegionImage:
    ec2 = clients.client("ec2", region)
    existing = find_image(ec2, job.name)
    how = "existing"
    if existing is None:
        token = hashlib.sha256(f"{job.source_image_id}/{region}".encode()).hexdigest()[:64]
        params: dict[str, Any] = {
            "SourceImageId": job.source_image_id,
            "SourceRegion": job.source_region,
            "Name": job.name,
            "ClientToken": token,
        }
        if job.description:
            params["Description"] = job.description
        image_id = ec2.copy_image(**params)["ImageId"]
        how = "copied"
    else:
        check_same_bytes(existing, job, region)
        image_id = existing["ImageId"]
    image = image_available(ec2, image_id, timeout=job.timeout, interval=job.interval)
    snaps = snapshot_ids(image) or snapshot_ids(existing or {})
    check_kernel(image, job, region)
    apply_tags(ec2, [image_id, *snaps], job.tags)
    apply_sharing(ec2, image_id, snaps, job.sharing)
    return RegionImage.described(region, image, how, snaps)


def check_kernel(image: dict[str, Any], job: CopyJob, region: str) -> None:
    """A PV copy must boot the destination's PV-GRUB AKI: another region's kernel id does not exist there."""
    want = job.kernels.get(region)
    have = image.get("KernelId")
    if want is None or have == want:
        return
    raise ImagekitError(
        f"AMI {image['ImageId']} in {region} (copied from {job.source_image_id}) has KernelId {have or 'none'}, "
        f"not {region}'s PV-GRUB AKI {want}: instances of it would not boot",
        hint=f"deregister {image['ImageId']} and re-run; or register the snapshot in {region} with --kernel-id {want}",
    )


def check_same_bytes(existing: dict[str, Any], job: CopyJob, region: str) -> None:
    """An AMI of the name in `region` is this image's copy only if it is tagged with the same image id;
    otherwise tagging it would make its record lie."""
    want = job.tags.get(ID_TAG)
    have = next((t.get("Value") for t in existing.get("Tags", []) if t.get("Key") == ID_TAG), None)
    if want is None or have == want:
        return
    raise ImagekitError(
        f"AMI {existing['ImageId']} in {region} is named {job.name} but was not registered from this image "
        f"({ID_TAG} {have or 'missing'}): not copied, not tagged",
        hint="publish under a new --name, or deregister that AMI",
    )


def copy_to_regions(
    clients: Any, job: CopyJob, regions: list[str], progress: Progress, workers: int = 8
) -> tuple[dict[str, RegionImage], dict[str, str]]:
    """Copy in parallel; returns the regions done and the errors of the others (region -> message)."""
    done: dict[str, RegionImage] = {}
    errors: dict[str, str] = {}
    if not regions:
        return done, errors
    with ThreadPoolExecutor(max_workers=min(workers, len(regions)), thread_name_prefix="copy") as pool:
        futures = {region: pool.submit(copy_one, clients, job, region) for region in regions}
        for region, future in futures.items():
            try:
                done[region] = future.result()
                progress.info(f"{region}: {done[region].image_id} ({done[region].how})")
            except ImagekitError as exc:
                errors[region] = exc.message
            except Exception as exc:
                errors[region] = describe(exc)
    return done, errors
