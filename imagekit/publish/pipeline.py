"""`publish()`: one image to AMIs in the regions asked for, idempotently.

    verify the image's bytes (against the build manifest) -> check (name, combination)
    -> already there? -> reuse a finished snapshot of these bytes or upload them
    -> register -> tag, share -> copy to other regions -> record

Never a record over the bytes: the image is read and hashed first (its block map and the image
id that map gives, `digest`), a manifest that describes other bytes is refused, and each uploader
checks what it reads again against that digest before it completes anything. Everything that
can be left half-made is either cleaned up or named in the error: a failed or interrupted
EBS-direct upload deletes its pending snapshot; an interrupted S3 upload keeps its parts for the
re-run (content-addressed key); an interrupted import keeps its S3 object while the task runs and
the re-run waits for that task; a snapshot that got no image is tagged and reused by the next run.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any

from imagekit.publish import ebs_direct
from imagekit.publish.awserrors import describe
from imagekit.publish.digest import ImageDigest, check_against_manifest, digest_image
from imagekit.publish.facts import DataVolumeFacts, ImageFacts
from imagekit.publish.regions import (
    CopyJob,
    RegionImage,
    Sharing,
    apply_sharing,
    apply_tags,
    copy_to_regions,
    find_image,
    snapshot_ids,
)
from imagekit.publish.register import (
    PV_NOTE,
    RegisterOptions,
    check_combination,
    is_pv,
    register_params,
    resolve_kernel,
)
from imagekit.publish.reuse import (
    ID_TAG,
    MADE_BY_TAG,
    NAME_TAG,
    SnapshotChoice,
    find_finished_snapshot,
    tag_value,
)
from imagekit.publish.uploaders import PROVENANCE, EbsDirect, Uploader, UploadJob
from imagekit.publish.wait import Backoff, image_available, snapshot_completed
from imagekit.util.errors import ImagekitError, UsageError
from imagekit.util.progress import Progress

__all__ = ["ID_TAG", "MADE_BY_TAG", "NAME_TAG", "PublishRequest", "PublishResult", "publish", "to_record"]


@dataclass(frozen=True)
class PublishRequest:
    facts: ImageFacts
    register: RegisterOptions
    region: str
    uploader: Uploader = field(default_factory=EbsDirect)  # how the bytes become a snapshot (UPLOADERS)
    kernel: str | None = "auto"
    copy_to: tuple[str, ...] = ()
    copy_kernels: dict[str, str] = field(default_factory=dict)  # PV: each --copy-to region's PV-GRUB AKI
    sharing: Sharing = field(default_factory=Sharing)
    tags: dict[str, str] = field(default_factory=dict)
    timeout: float = 3600.0
    poll_interval: float = 5.0
    backoff: Backoff = field(default_factory=Backoff)


@dataclass
class PublishResult:
    name: str
    image_id: str  # imagekit/image/blockmap.py: the block map's sha256
    regions: dict[str, RegionImage] = field(default_factory=dict)
    upload: dict[str, Any] | None = None
    snapshot: dict[str, Any] | None = None  # SnapshotChoice.report(): id, reused, made_by, requested
    data_blocks: int = 0
    errors: dict[str, str] = field(default_factory=dict)


def verify_image(facts: ImageFacts, progress: Progress) -> ImageDigest:
    """The image's bytes, checked against what its build manifest says they are."""
    with progress.stage("verify", str(facts.path)) as stage:
        old_manifest = facts.block_map is None and facts.sha256 is not None  # whole-file sha256 only
        digest = digest_image(facts.path, progress, whole_sha256=old_manifest)
        check_against_manifest(digest, facts.block_map, facts.sha256, facts.manifest_path)
        if digest.size != facts.size:
            raise UsageError(f"{facts.path} changed size while publish started ({facts.size} -> {digest.size})")
        stage.set_note(f"image id {digest.image_id[:12]}..., {len(digest.blocks)} data blocks"
                       + (", as the manifest says" if facts.manifest_path else ""))
    return digest


def publish(clients: Any, req: PublishRequest, progress: Progress) -> PublishResult:
    check_combination(req.facts, req.register)
    if is_pv(req.facts):
        progress.info(PV_NOTE)
    digest = verify_image(req.facts, progress)
    result = PublishResult(req.register.name, digest.image_id, data_blocks=len(digest.blocks))
    ec2 = clients.client("ec2", req.region)
    with progress.stage("publish", req.region) as stage:
        existing = find_image(ec2, req.register.name)
        if existing is not None:
            check_existing(existing, req, digest)
            stage.set_note(f"already published: {existing['ImageId']}")
            result.regions[req.region] = publish_existing(ec2, req, existing, result)
        else:
            result.regions[req.region] = publish_here(clients, req, digest, result, progress)
    copy_everywhere(clients, req, result, progress)
    return result


def check_existing(image: dict[str, Any], req: PublishRequest, digest: ImageDigest) -> None:
    """An AMI of this name is only 'already published' if it was registered from these very bytes."""
    tagged = tag_value(image, ID_TAG)
    if tagged == digest.image_id:
        return
    what = f"from an image with id {tagged[:16]}..." if tagged else f"without a {ID_TAG} tag (not by imagekit)"
    raise UsageError(
        f"--name {req.register.name}: AMI {image['ImageId']} in {req.region} has this name and was registered "
        f"{what}, not from {req.facts.path} (image id {digest.image_id[:16]}...)",
        hint="publish the new image under a new --name, or deregister the old AMI first",
    )


def publish_existing(ec2: Any, req: PublishRequest, existing: dict[str, Any], result: PublishResult) -> RegionImage:
    image = image_available(ec2, existing["ImageId"], timeout=req.timeout, interval=req.poll_interval)
    snaps = snapshot_ids(image)
    apply_tags(ec2, [image["ImageId"], *snaps], req.tags)
    apply_sharing(ec2, image["ImageId"], snaps, req.sharing)
    if snaps:
        made_by = made_by_of(ec2, snaps[0])
        result.snapshot = SnapshotChoice(snaps[0], made_by, reused=True).report(req.uploader.method)
    return RegionImage.described(req.region, image, "existing", snaps)


def made_by_of(ec2: Any, snapshot_id: str) -> str:
    try:
        snaps = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
    except Exception:
        return "unknown"
    return (tag_value(snaps[0], MADE_BY_TAG) if snaps else None) or "unknown"


def tags_for(req: PublishRequest, image_id: str) -> dict[str, str]:
    return {**req.tags, ID_TAG: image_id, NAME_TAG: req.register.name}


def publish_here(
    clients: Any, req: PublishRequest, digest: ImageDigest, result: PublishResult, progress: Progress
) -> RegionImage:
    ec2 = clients.client("ec2", req.region)
    kernel = resolve_kernel(ec2, req.region, req.facts, req.kernel)
    choice = snapshot_for(clients, req, digest, result, progress)
    result.snapshot = choice.report(req.uploader.method)
    tags = tags_for(req, digest.image_id)
    data = data_volume_snapshots(clients, req, result, progress)
    snapshots = (choice.snapshot_id, *(snap for _, snap in data))
    opts = RegisterOptions(**{**req.register.__dict__, "kernel_id": kernel})
    params = register_params(req.facts, opts, choice.snapshot_id, ebs_direct.volume_size_gib(req.facts.size), data)
    try:
        image_id = ec2.register_image(**params)["ImageId"]
    except Exception as exc:
        raise ImagekitError(
            f"RegisterImage {req.register.name} in {req.region} failed: {describe(exc)}",
            hint=f"snapshot {choice.snapshot_id} is kept (tagged {ID_TAG}); a re-run registers it without "
            "uploading again",
        ) from exc
    apply_tags(ec2, [image_id], tags)
    apply_sharing(ec2, image_id, snapshots, req.sharing)
    image = image_available(ec2, image_id, timeout=req.timeout, interval=req.poll_interval)
    return RegionImage.described(req.region, image, "registered", snapshots)


def snapshot_for(
    clients: Any, req: PublishRequest, digest: ImageDigest, result: PublishResult, progress: Progress
) -> SnapshotChoice:
    """A completed snapshot of the verified bytes, tagged as imagekit's: reused, or uploaded now."""
    ec2 = clients.client("ec2", req.region)
    choice = find_finished_snapshot(ec2, clients.client("ebs", req.region), digest, req.register.name, progress,
                                    PROVENANCE)
    if choice is not None and choice.made_by != req.uploader.method:
        progress.info(f"snapshot {choice.snapshot_id} was made by {choice.made_by}; it stands in for the "
                      f"{req.uploader.method} upload asked for (same bytes)")
    if choice is None:
        choice = upload(clients, req, digest, result, progress)
    snapshot_completed(ec2, choice.snapshot_id, timeout=req.timeout, interval=req.poll_interval)
    apply_tags(ec2, [choice.snapshot_id], {**tags_for(req, digest.image_id), MADE_BY_TAG: choice.made_by})
    return choice


def data_volume_snapshots(clients: Any, req: PublishRequest, result: PublishResult,
                          progress: Progress) -> list[tuple[DataVolumeFacts, str]]:
    """Each data volume image of the build (seed 000) as a snapshot, reused when an earlier run made it."""
    done = []
    for vol in req.facts.data_volumes:
        facts = replace(req.facts, path=vol.path, size=vol.size, sha256=vol.sha256, block_map=vol.block_map,
                        data_volumes=())
        vreq = replace(req, facts=facts, register=replace(req.register, name=f"{req.register.name} {vol.name}"))
        digest = verify_image(facts, progress)
        root_upload = result.upload
        choice = snapshot_for(clients, vreq, digest, result, progress)
        result.upload = root_upload
        done.append((vol, choice.snapshot_id))
    return done


def upload(
    clients: Any, req: PublishRequest, digest: ImageDigest, result: PublishResult, progress: Progress
) -> SnapshotChoice:
    """The request's uploader (publish/uploaders.py) makes the snapshot; the record keeps its report."""
    job = UploadJob(req.facts, digest, req.region, req.register.name, tags_for(req, digest.image_id),
                    timeout=req.timeout, poll_interval=req.poll_interval, backoff=req.backoff)
    uploaded = req.uploader.upload(clients, job, progress)
    result.upload = uploaded.report
    return uploaded.snapshot


def copy_everywhere(clients: Any, req: PublishRequest, result: PublishResult, progress: Progress) -> None:
    regions = [r for r in req.copy_to if r != req.region]
    if not regions:
        return
    source = result.regions[req.region]
    job = CopyJob(
        source_region=req.region,
        source_image_id=source.image_id,
        name=req.register.name,
        description=req.register.description,
        tags=tags_for(req, result.image_id),
        sharing=req.sharing,
        timeout=req.timeout,
        interval=req.poll_interval,
        kernels=req.copy_kernels,
    )
    with progress.stage("copy", ", ".join(regions)):
        done, errors = copy_to_regions(clients, job, regions, progress)
    result.regions.update(done)
    result.errors.update(errors)


def verified_how(facts: ImageFacts) -> str:
    if facts.block_map is not None:
        return "against the manifest's block map"
    if facts.sha256 is not None:
        return "against the manifest's sha256"
    return "block map computed (no manifest)"


def to_record(req: PublishRequest, result: PublishResult) -> dict[str, Any]:
    facts = req.facts
    return {
        "name": result.name,
        "published_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "image": {
            "path": str(facts.path),
            "size": facts.size,
            "allocated": facts.allocated,
            "id": result.image_id,
            "data_blocks": result.data_blocks,
            "verified": verified_how(facts),
        },
        "manifest": (
            {"path": str(facts.manifest_path), "sha256": facts.manifest_sha256} if facts.manifest_path else None
        ),
        "recipe": facts.recipe,
        "arch": facts.arch,
        "layout": facts.layout.value,
        "virtualization": facts.virtualization.value,
        "method": req.uploader.method,
        "public": req.sharing.public,
        "shared_with": list(req.sharing.accounts),
        "tags": req.tags,
        "regions": {r.region: r.record() for r in result.regions.values()},
        "upload": result.upload,
        "snapshot": result.snapshot,
        "errors": result.errors,
    }
