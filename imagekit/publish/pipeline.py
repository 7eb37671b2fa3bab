"""`publish()`: one image to AMIs in the regions asked for, idempotently.

    check (name, combination) -> already there? -> reuse a finished snapshot or upload one
    -> register -> tag, share -> copy to other regions -> record

Everything that can be left half-made is either cleaned up or named in the error: a failed
EBS-direct upload deletes its pending snapshot; an interrupted S3 upload keeps its parts for
the re-run (content-addressed key) and says so; a snapshot that got no image is tagged with
the image's sha256 and reused by the next run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from imagekit.errors import ImagekitError
from imagekit.progress import Progress
from imagekit.publish import ebs_direct
from imagekit.publish import import_snapshot as imp
from imagekit.publish.awserrors import describe
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
from imagekit.publish.wait import Backoff, image_available, snapshot_completed

SHA_TAG = "imagekit:sha256"
NAME_TAG = "imagekit:name"


class Method(StrEnum):
    EBS_DIRECT = "ebs-direct"
    IMPORT_SNAPSHOT = "import-snapshot"


@dataclass(frozen=True)
class PublishRequest:
    facts: ImageFacts
    register: RegisterOptions
    region: str
    method: Method = Method.EBS_DIRECT
    kernel: str | None = "auto"
    bucket: str | None = None
    s3_prefix: str = "imagekit-import"
    keep_s3_object: bool = False
    role_name: str = "vmimport"
    copy_to: tuple[str, ...] = ()
    sharing: Sharing = field(default_factory=Sharing)
    tags: dict[str, str] = field(default_factory=dict)
    workers: int = 16
    timeout: float = 3600.0
    poll_interval: float = 5.0
    backoff: Backoff = field(default_factory=Backoff)


@dataclass
class PublishResult:
    name: str
    sha256: str
    regions: dict[str, RegionImage] = field(default_factory=dict)
    upload: dict[str, Any] | None = None
    errors: dict[str, str] = field(default_factory=dict)


def image_sha256(facts: ImageFacts) -> str:
    return facts.sha256 or imp.file_sha256(facts.path)


def publish(clients: Any, req: PublishRequest, progress: Progress) -> PublishResult:
    check_combination(req.facts, req.register)
    if is_pv(req.facts):
        progress.info(PV_NOTE)
    sha = image_sha256(req.facts)
    result = PublishResult(req.register.name, sha)
    ec2 = clients.client("ec2", req.region)
    with progress.stage("publish", req.region) as stage:
        existing = find_image(ec2, req.register.name)
        if existing is not None:
            stage.set_note(f"already published: {existing['ImageId']}")
            image = image_available(ec2, existing["ImageId"], timeout=req.timeout, interval=req.poll_interval)
            snaps = snapshot_ids(image)
            apply_tags(ec2, [image["ImageId"], *snaps], req.tags)
            apply_sharing(ec2, image["ImageId"], snaps, req.sharing)
            result.regions[req.region] = RegionImage(req.region, image["ImageId"], snaps, "existing")
        else:
            result.regions[req.region] = publish_here(clients, req, sha, result, progress)
    copy_everywhere(clients, req, result, progress)
    return result


def tags_for(req: PublishRequest, sha: str) -> dict[str, str]:
    return {**req.tags, SHA_TAG: sha, NAME_TAG: req.register.name}


def publish_here(clients: Any, req: PublishRequest, sha: str, result: PublishResult, progress: Progress) -> RegionImage:
    ec2 = clients.client("ec2", req.region)
    kernel = resolve_kernel(ec2, req.region, req.facts, req.kernel)
    snapshot = find_finished_snapshot(ec2, sha, req.register.name, progress)
    if snapshot is None:
        snapshot = upload(clients, req, sha, result, progress)
    snapshot_completed(ec2, snapshot, timeout=req.timeout, interval=req.poll_interval)
    tags = tags_for(req, sha)
    apply_tags(ec2, [snapshot], tags)
    data = data_volume_snapshots(clients, req, result, progress)
    snapshots = (snapshot, *(snap for _, snap in data))
    opts = RegisterOptions(**{**req.register.__dict__, "kernel_id": kernel})
    params = register_params(req.facts, opts, snapshot, ebs_direct.volume_size_gib(req.facts.size), data)
    try:
        image_id = ec2.register_image(**params)["ImageId"]
    except Exception as exc:
        raise ImagekitError(
            f"RegisterImage {req.register.name} in {req.region} failed: {describe(exc)}",
            hint=f"snapshot {snapshot} is kept (tagged {SHA_TAG}); a re-run registers it without uploading again",
        ) from exc
    apply_tags(ec2, [image_id], tags)
    apply_sharing(ec2, image_id, snapshots, req.sharing)
    image_available(ec2, image_id, timeout=req.timeout, interval=req.poll_interval)
    return RegionImage(req.region, image_id, snapshots, "registered")


def data_volume_snapshots(clients: Any, req: PublishRequest, result: PublishResult,
                          progress: Progress) -> list[tuple[DataVolumeFacts, str]]:
    """Each data volume image of the build (seed 000) as a snapshot, reused when an earlier run made it."""
    ec2 = clients.client("ec2", req.region)
    done = []
    for vol in req.facts.data_volumes:
        facts = replace(req.facts, path=vol.path, size=vol.size, sha256=vol.sha256, data_volumes=())
        vreq = replace(req, facts=facts, register=replace(req.register, name=f"{req.register.name} {vol.name}"))
        sha = image_sha256(facts)
        snap = find_finished_snapshot(ec2, sha, vreq.register.name, progress)
        if snap is None:
            root_upload = result.upload
            snap = upload(clients, vreq, sha, result, progress)
            result.upload = root_upload
        snapshot_completed(ec2, snap, timeout=req.timeout, interval=req.poll_interval)
        apply_tags(ec2, [snap], tags_for(vreq, sha))
        done.append((vol, snap))
    return done


def find_finished_snapshot(ec2: Any, sha: str, name: str, progress: Progress) -> str | None:
    """A completed snapshot of this very image (same sha256), whatever AMI name it was uploaded for.

    Keyed on the image's sha256 alone: an interrupted run's snapshot is reused, and so is the snapshot
    of an identical (reproducible) rebuild published before under another name: nothing is uploaded.
    """
    found = ec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": f"tag:{SHA_TAG}", "Values": [sha]}])
    snaps = found["Snapshots"]
    for snap in snaps:
        if snap.get("State") != "completed":
            progress.warn(
                f"snapshot {snap['SnapshotId']} ({snap.get('State')}) is left from an interrupted upload of this "
                f"image: delete it with `aws ec2 delete-snapshot --snapshot-id {snap['SnapshotId']}`"
            )
    done = sorted((s for s in snaps if s.get("State") == "completed"),
                  key=lambda s: not any(t.get("Key") == NAME_TAG and t.get("Value") == name for t in s.get("Tags", [])))
    if done:
        progress.info(f"reusing snapshot {done[0]['SnapshotId']}: it holds this very image (sha256 {sha[:12]}...)")
        return str(done[0]["SnapshotId"])
    return None


def upload(clients: Any, req: PublishRequest, sha: str, result: PublishResult, progress: Progress) -> str:
    if req.method is Method.EBS_DIRECT:
        return upload_ebs_direct(clients, req, sha, result, progress)
    return upload_import(clients, req, sha, result, progress)


def upload_ebs_direct(clients: Any, req: PublishRequest, sha: str, result: PublishResult, progress: Progress) -> str:
    uploader = ebs_direct.EbsDirectUploader(
        clients.client("ebs", req.region), workers=req.workers, backoff=req.backoff, progress=progress
    )
    with progress.stage("upload", f"{req.facts.size} bytes by EBS direct") as stage:
        try:
            stats = uploader.upload(
                req.facts.path, description=f"imagekit {req.register.name}", tags=tags_for(req, sha)
            )
        except ebs_direct.UploadFailed as exc:
            raise ImagekitError(exc.message + "; " + discard_snapshot(clients, req.region, exc.snapshot_id)) from exc
        stage.set_note(
            f"{stats.bytes_sent} bytes in {stats.blocks_sent} blocks, {stats.blocks_skipped} zero blocks skipped, "
            f"{stats.rate / 2**20:.1f} MiB/s"
        )
    result.upload = {"method": req.method.value, **stats.__dict__}
    return stats.snapshot_id


def discard_snapshot(clients: Any, region: str, snapshot_id: str | None) -> str:
    if snapshot_id is None:
        return "no snapshot was started"
    try:
        clients.client("ec2", region).delete_snapshot(SnapshotId=snapshot_id)
    except Exception as exc:
        return f"could not delete the incomplete snapshot {snapshot_id} ({describe(exc)}): delete it yourself"
    return f"deleted the incomplete snapshot {snapshot_id}"


def upload_import(clients: Any, req: PublishRequest, sha: str, result: PublishResult, progress: Progress) -> str:
    if not req.bucket:
        raise ImagekitError("--method import-snapshot needs --bucket")
    s3 = clients.client("s3", req.region)
    ec2 = clients.client("ec2", req.region)
    where = imp.S3Location(req.bucket, imp.object_key(req.s3_prefix, sha))
    imp.check_role(clients.client("iam", req.region), req.role_name, progress)
    imp.check_bucket_region(s3, req.bucket, req.region)
    with progress.stage("upload", f"to {where.url}") as stage:
        try:
            obj = imp.upload_object(s3, req.facts.path, where, sha256=sha, progress=progress, backoff=req.backoff)
        except Exception as exc:
            raise ImagekitError(
                f"upload to {where.url} failed: {describe(exc)}",
                hint="the parts already sent stay in S3 (an unfinished multipart upload); a re-run sends only "
                "the rest, or drop them with `aws s3api abort-multipart-upload`",
            ) from exc
        stage.set_note(f"{obj.parts_sent} parts sent, {obj.parts_reused} already there")
    sent = {k: v for k, v in obj.__dict__.items() if k != "location"}
    result.upload = {"method": req.method.value, "s3": where.url, **sent}
    try:
        with progress.stage("import", where.url):
            snapshot = run_import(ec2, req, sha, where, progress)
    finally:
        if not req.keep_s3_object:
            remove_object(s3, where, progress)
    return snapshot


def run_import(ec2: Any, req: PublishRequest, sha: str, where: imp.S3Location, progress: Progress) -> str:
    token = hashlib.sha256(f"{req.register.name}/{sha}/{req.region}/{where.url}".encode()).hexdigest()[:64]
    description, tags = f"imagekit {req.register.name}", tags_for(req, sha)
    task = imp.start_import(ec2, where, description=description, role_name=req.role_name, client_token=token, tags=tags)
    if task_finished_badly(ec2, task):  # the token names a failed task of an earlier run: start afresh
        token = f"{token[:48]}-{int(dt.datetime.now().timestamp())}"
        task = imp.start_import(
            ec2, where, description=description, role_name=req.role_name, client_token=token, tags=tags
        )
    return imp.wait_import(ec2, task, timeout=req.timeout, interval=req.poll_interval, progress=progress)


def task_finished_badly(ec2: Any, task: str) -> bool:
    tasks = ec2.describe_import_snapshot_tasks(ImportTaskIds=[task])["ImportSnapshotTasks"]
    return bool(tasks) and tasks[0].get("SnapshotTaskDetail", {}).get("Status") in {"deleted", "deleting"}


def remove_object(s3: Any, where: imp.S3Location, progress: Progress) -> None:
    try:
        imp.delete_object(s3, where)
    except Exception as exc:
        progress.warn(f"could not remove the temporary object {where.url} ({describe(exc)}): remove it yourself")


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
        tags=tags_for(req, result.sha256),
        sharing=req.sharing,
        timeout=req.timeout,
        interval=req.poll_interval,
    )
    with progress.stage("copy", ", ".join(regions)):
        done, errors = copy_to_regions(clients, job, regions, progress)
    result.regions.update(done)
    result.errors.update(errors)


def to_record(req: PublishRequest, result: PublishResult) -> dict[str, Any]:
    facts = req.facts
    return {
        "name": result.name,
        "published_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "image": {"path": str(facts.path), "size": facts.size, "allocated": facts.allocated, "sha256": result.sha256},
        "manifest": (
            {"path": str(facts.manifest_path), "sha256": facts.manifest_sha256} if facts.manifest_path else None
        ),
        "recipe": facts.recipe,
        "arch": facts.arch,
        "layout": facts.layout.value,
        "virtualization": facts.virtualization.value,
        "method": req.method.value,
        "public": req.sharing.public,
        "shared_with": list(req.sharing.accounts),
        "tags": req.tags,
        "regions": {
            r.region: {"image_id": r.image_id, "snapshot_ids": list(r.snapshot_ids), "how": r.how}
            for r in result.regions.values()
        },
        "upload": result.upload,
        "errors": result.errors,
    }
