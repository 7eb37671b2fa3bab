"""What a publish checks before it lints, reads or uploads anything: the regions and the credentials.

1. Every region (--region, each --copy-to) is one EC2 has, by botocore's endpoint data: offline,
   the same list the AWS CLI's endpoint resolution uses, so `mars-1` or `eu-west-9` is exit 2 at once
   (also with --dry-run). The seeds' AKI tables are not the list: they name PV-GRUB regions of 2010-2016
   and would refuse HVM publishes to every newer region.
2. The credentials work: one STS GetCallerIdentity in the home region (local-cloud answers it too).
3. A PV image's --kernel-id, when given, exists in --region (DescribeImages by id).
4. A PV image can be copied only where PV-GRUB is: each --copy-to region's hd0 PV-GRUB AKI, looked up
   by name (DescribeImages, owner amazon), else imagekit's tables; a region with neither is refused.
   CopyImage itself gives the copy that region's AKI; the pipeline checks the copy has it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from imagekit.publish.awsconfig import check_region
from imagekit.publish.register import is_pv, lookup_pvgrub
from imagekit.util.errors import UsageError
from imagekit.util.progress import Progress


@dataclass(frozen=True)
class Identity:
    account: str
    arn: str


@dataclass(frozen=True)
class Checked:
    identity: Identity | None
    copy_kernels: dict[str, str] = field(default_factory=dict)


def check_regions(region: str, copy_to: tuple[str, ...]) -> None:
    check_region("--region", region)
    for target in copy_to:
        check_region("--copy-to", target)


def check_credentials(clients: Any, region: str) -> Identity:
    """STS GetCallerIdentity: the cheapest call that proves the credentials (no permission needed)."""
    answer = clients.client("sts", region).get_caller_identity()
    return Identity(str(answer.get("Account", "")), str(answer.get("Arn", "")))


def pvgrub_in(clients: Any, region: str, arch: str) -> str | None:
    """The region's hd0 PV-GRUB 1.05 AKI: by name in the region, else imagekit's tables, else None."""
    from imagekit.pvgrub.aki import AkiNotFound, find_aki

    found = lookup_pvgrub(clients.client("ec2", region), arch)
    if found:
        return found
    try:
        return find_aki(region, arch, "hd0").id
    except AkiNotFound:
        return None


def check_kernel_id(clients: Any, req: Any) -> None:
    """PV with --kernel-id aki-...: the kernel exists in --region (InvalidAMIID.NotFound otherwise)."""
    if not is_pv(req.facts) or req.kernel in (None, "auto"):
        return
    clients.client("ec2", req.region).describe_images(ImageIds=[req.kernel])


def copy_kernels(clients: Any, req: Any) -> dict[str, str]:
    """PV: each destination's PV-GRUB AKI (with --kernel-id auto); a region without one is refused."""
    if not is_pv(req.facts) or req.kernel not in (None, "auto"):
        return {}
    kernels: dict[str, str] = {}
    for target in (r for r in req.copy_to if r != req.region):
        aki = pvgrub_in(clients, target, req.facts.arch)
        if aki is None:
            raise UsageError(
                f"--copy-to {target}: no PV-GRUB AKI for {req.facts.arch} in {target} (DescribeImages found "
                "none and imagekit's tables have none): a paravirtual AMI cannot be copied there",
                hint="leave that region out, or publish an HVM image there",
            )
        kernels[target] = aki
    return kernels


def preflight(clients: Any, req: Any, progress: Progress) -> tuple[Any, Checked]:
    """Check regions, credentials and PV kernels; returns the request with the copy kernels filled in."""
    check_regions(req.region, req.copy_to)
    with progress.stage("aws", f"credentials and regions ({req.region})") as stage:
        identity = check_credentials(clients, req.region)
        stage.set_note(f"account {identity.account}, {identity.arn}")
        check_kernel_id(clients, req)
        kernels = copy_kernels(clients, req)
    return replace(req, copy_kernels=kernels), Checked(identity, kernels)
