"""RegisterImage parameters for PV-GRUB and HVM images, and the checks EC2 would make.

PV: `paravirtual`, the PV-GRUB AKI for the region, arch and layout, never a ramdisk, root
`/dev/sda1` for a partitionless image (EC2 attaches it as a partition) and `/dev/sda` for a
partitioned one, instance store `ephemeral0` on `/dev/sdb`. PV AMIs run only on
previous-generation instance types (m1, m2, m3, c1, c3, t1 ...).
HVM: root `/dev/xvda`, ENA and SR-IOV, the boot mode of the layout (legacy-bios, uefi, uefi-preferred),
IMDSv2 required unless declined, TPM (UEFI only) when asked.
Architecture and virtualization type are always passed: EC2 defaults to i386 and paravirtual.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from imagekit.publish.facts import ARCHES, BootMode, DataVolumeFacts, ImageFacts, Virtualization
from imagekit.recipe.layouts import PartitionTable, aki_for_table
from imagekit.util.errors import UsageError

NAME_RE = re.compile(r"^[A-Za-z0-9()\[\] ./\-'@_]{3,128}$")
PV_NOTE = "PV AMIs run only on previous-generation instance types (m1, m2, m3, c1, c3, t1, ...)"


@dataclass(frozen=True)
class RegisterOptions:
    name: str
    description: str = ""
    kernel_id: str | None = None  # PV: an AKI id, or None until resolved ("auto")
    ramdisk_id: str | None = None
    ena: bool | None = None  # None: on for HVM, off for PV
    sriov: bool | None = None
    boot_mode: BootMode | None = None
    imds_v2: bool | None = None  # None: required (ImdsSupport v2.0) for HVM, not set for PV
    tpm: bool = False
    volume_size_gib: int | None = None
    volume_type: str | None = None  # None: gp2 for PV (oldest instance types), gp3 for HVM


def check_name(name: str) -> None:
    """EC2's AMI name rules, checked before anything is uploaded."""
    if not NAME_RE.match(name):
        raise UsageError(
            f"--name {name!r}: an AMI name is 3-128 characters of letters, digits, spaces and ( ) [ ] . / - ' @ _"
        )


def is_pv(facts: ImageFacts) -> bool:
    return facts.virtualization is Virtualization.PARAVIRTUAL


def check_combination(facts: ImageFacts, opts: RegisterOptions) -> None:
    """Refuse what EC2 would reject, before anything is sent."""
    check_name(opts.name)
    if facts.arch not in ARCHES:
        raise UsageError(f"architecture {facts.arch!r} is not one of {', '.join(ARCHES)}")
    if is_pv(facts):
        check_pv(facts, opts)
    else:
        check_hvm(facts, opts)
    if opts.volume_size_gib is not None and opts.volume_size_gib * 2**30 < facts.size:
        raise UsageError(f"--volume-size {opts.volume_size_gib} GiB is smaller than the image ({facts.size} bytes)")


def check_pv(facts: ImageFacts, opts: RegisterOptions) -> None:
    refused = {
        "--ena": opts.ena,
        "--sriov": opts.sriov,
        "--tpm": opts.tpm,
        "--boot-mode": opts.boot_mode is not None,
    }
    for option, given in refused.items():
        if given:
            raise UsageError(f"{option} is for HVM images; this image is paravirtual (PV-GRUB)")
    if opts.ramdisk_id:
        raise UsageError("--ramdisk-id: a PV-GRUB AKI takes no ramdisk (ARI); the initrd is named in menu.lst")
    if facts.arch == "arm64":
        raise UsageError("arm64 images cannot be paravirtual: register them as HVM")
    if aki_for_table(facts.layout.spec.table) is None:  # no PV-GRUB reads this disk label
        raise UsageError(f"layout {facts.layout}: PV-GRUB reads MBR partition tables only, not GPT")
    if opts.kernel_id is not None and not opts.kernel_id.startswith("aki-"):
        raise UsageError(f"--kernel-id {opts.kernel_id!r}: a PV-GRUB kernel id starts with aki-")


def check_hvm(facts: ImageFacts, opts: RegisterOptions) -> None:
    if opts.kernel_id:
        raise UsageError("--kernel-id is for paravirtual images; HVM images boot their own bootloader")
    if opts.ramdisk_id:
        raise UsageError("--ramdisk-id is for paravirtual images")
    if facts.layout.spec.pv:
        raise UsageError(f"layout {facts.layout} is a PV-GRUB layout; an HVM image needs mbr-bios or gpt-*")
    mode = boot_mode(facts, opts)
    if opts.tpm and mode is not BootMode.UEFI:
        raise UsageError(f"--tpm needs --boot-mode uefi (this image boots {mode})")
    if mode is not BootMode.LEGACY_BIOS and not facts.layout.spec.esp:
        raise UsageError(f"--boot-mode {mode}: an {facts.layout} image has no EFI system partition")
    if facts.arch == "arm64" and mode is BootMode.LEGACY_BIOS:
        raise UsageError("arm64 images boot with UEFI only")


def boot_mode(facts: ImageFacts, opts: RegisterOptions) -> BootMode:
    if opts.boot_mode is not None:
        return opts.boot_mode
    if facts.boot_mode is not None:
        return facts.boot_mode
    # no boot mode recorded (no manifest): the layout's when it is UEFI only, else legacy BIOS (which
    # gpt-hybrid also boots)
    layout_mode = facts.layout.spec.boot_mode
    return BootMode.UEFI if layout_mode is BootMode.UEFI else BootMode.LEGACY_BIOS


def root_device(facts: ImageFacts) -> str:
    if not is_pv(facts):
        return "/dev/xvda"
    return "/dev/sda" if facts.layout.spec.partitioned else "/dev/sda1"


def register_params(facts: ImageFacts, opts: RegisterOptions, snapshot_id: str, volume_gib: int,
                    data_snapshots: Sequence[tuple[DataVolumeFacts, str]] = ()) -> dict[str, Any]:
    """The exact RegisterImage request for this image (check_combination first); data volumes mapped last."""
    pv = is_pv(facts)
    root = root_device(facts)
    ebs = {
        "SnapshotId": snapshot_id,
        "VolumeSize": opts.volume_size_gib or volume_gib,
        "VolumeType": opts.volume_type or ("gp2" if pv else "gp3"),
        "DeleteOnTermination": True,
    }
    params: dict[str, Any] = {
        "Name": opts.name,
        "Architecture": facts.arch,
        "VirtualizationType": facts.virtualization.value,
        "RootDeviceName": root,
        "BlockDeviceMappings": [{"DeviceName": root, "Ebs": ebs}],
    }
    if opts.description:
        params["Description"] = opts.description
    if pv:
        if not opts.kernel_id:
            raise UsageError("a paravirtual image needs a PV-GRUB kernel: pass --kernel-id auto or an aki- id")
        params["KernelId"] = opts.kernel_id
        params["BlockDeviceMappings"].append({"DeviceName": "/dev/sdb", "VirtualName": "ephemeral0"})
        params["BlockDeviceMappings"] += data_mappings(data_snapshots, str(ebs["VolumeType"]))
        return params
    params["EnaSupport"] = opts.ena is not False
    if opts.sriov is not False:
        params["SriovNetSupport"] = "simple"
    params["BootMode"] = boot_mode(facts, opts).value
    params["BlockDeviceMappings"] += data_mappings(data_snapshots, str(ebs["VolumeType"]))
    if opts.imds_v2 is not False:
        params["ImdsSupport"] = "v2.0"
    if opts.tpm:
        params["TpmSupport"] = "v2.0"
    return params


def data_mappings(data_snapshots: Sequence[tuple[DataVolumeFacts, str]], volume_type: str) -> list[dict[str, Any]]:
    """One EBS mapping per data volume (seed 000): its snapshot on its device, DeleteOnTermination as built."""
    return [
        {"DeviceName": vol.device,
         "Ebs": {"SnapshotId": snap, "VolumeSize": max(1, -(-vol.size // 2**30)), "VolumeType": volume_type,
                 "DeleteOnTermination": vol.delete_on_termination}}
        for vol, snap in data_snapshots
    ]


def pvgrub_image_name(arch: str, version: str = "1.05") -> str:
    return f"pv-grub-hd0_{version}-{arch}.gz"


def resolve_kernel(ec2: Any, region: str, facts: ImageFacts, requested: str | None) -> str | None:
    """The AKI for a PV image: given, or ("auto") looked up by name, then from imagekit.pvgrub.aki's tables."""
    if not is_pv(facts):
        return None
    if requested and requested != "auto":
        return requested
    found = lookup_pvgrub(ec2, facts.arch)
    if found:
        return found
    from imagekit.pvgrub.aki import AkiNotFound, find_aki

    try:
        table = PartitionTable.MBR if facts.layout.spec.partitioned else None  # the AKI for a disk like this
        return str(find_aki(region, facts.arch, str(aki_for_table(table))).id)
    except AkiNotFound as exc:
        raise UsageError(
            f"no PV-GRUB AKI known for {region} {facts.arch} {facts.layout}: {exc}",
            hint="pass --kernel-id aki-... for this region",
        ) from exc


def lookup_pvgrub(ec2: Any, arch: str) -> str | None:
    """The current hd0 PV-GRUB AKI by name (DescribeImages, owner amazon); None when not found."""
    try:
        images = ec2.describe_images(
            Owners=["amazon"], Filters=[{"Name": "name", "Values": [pvgrub_image_name(arch)]}]
        )["Images"]
    except Exception:
        return None
    kernels = sorted(images, key=lambda i: i.get("CreationDate", ""))
    return str(kernels[-1]["ImageId"]) if kernels else None
