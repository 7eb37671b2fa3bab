"""How an image's bytes become a snapshot: one `Uploader` protocol, one table (hatch's publisher plugins).

Each publish method is an object holding its own settings (`EbsDirect(workers=16)`,
`ImportSnapshot(bucket=...)`) with `upload(clients, job, progress) -> Uploaded`: a completed-or-completing
snapshot of the verified bytes, tagged as imagekit's, and what the publish record keeps of the upload.
`UPLOADERS` maps each method's name to the function that makes it from the CLI's options: `imagekit
publish --method` offers its keys and the pipeline runs whichever the request carries.

Adding a method: docs/architecture.md, "Add a publish method".
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from imagekit.publish import ebs_direct
from imagekit.publish import import_snapshot as imp
from imagekit.publish.awserrors import describe
from imagekit.publish.digest import ImageDigest
from imagekit.publish.facts import ImageFacts
from imagekit.publish.reuse import MADE_BY_TAG, Provenance, SnapshotChoice, find_import_task
from imagekit.publish.wait import Backoff, Interrupted, WaitTimeout
from imagekit.util.errors import ImagekitError, UsageError
from imagekit.util.progress import Progress


@dataclass(frozen=True)
class UploadJob:
    """What every uploader is given: the verified image, where it goes, and how long waits may take."""

    facts: ImageFacts
    digest: ImageDigest
    region: str
    name: str  # the AMI's name (descriptions, the import's client token)
    tags: dict[str, str]  # the snapshot's tags (imagekit's image id and name among them)
    timeout: float = 3600.0
    poll_interval: float = 5.0
    backoff: Backoff = field(default_factory=Backoff)


@dataclass(frozen=True)
class Uploaded:
    snapshot: SnapshotChoice
    report: dict[str, Any]  # the publish record's "upload": the method and its figures


class Uploader(Protocol):
    @property
    def method(self) -> str: ...  # the --method name, also the snapshot's made-by tag

    def upload(self, clients: Any, job: UploadJob, progress: Progress) -> Uploaded: ...


# --- EBS direct --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EbsDirect:
    """StartSnapshot, PutSnapshotBlock of each data block, CompleteSnapshot (publish/ebs_direct.py)."""

    method: ClassVar[str] = "ebs-direct"
    provenance: ClassVar[Provenance] = Provenance("imagekit ", exact_blocks=True)  # StartSnapshot's description
    workers: int = 16

    @classmethod
    def from_options(cls, opts: Mapping[str, Any]) -> EbsDirect:
        return cls(workers=opts.get("workers") or 16)

    def upload(self, clients: Any, job: UploadJob, progress: Progress) -> Uploaded:
        uploader = ebs_direct.EbsDirectUploader(
            clients.client("ebs", job.region), workers=self.workers, backoff=job.backoff, progress=progress
        )
        tags = {**job.tags, MADE_BY_TAG: self.method}
        with progress.stage("upload", f"{job.facts.size} bytes by EBS direct") as stage:
            try:
                stats = uploader.upload(
                    job.facts.path, description=f"imagekit {job.name}", tags=tags, expected=job.digest.blocks,
                    expected_size=job.digest.size,
                )
            except ebs_direct.UploadInterrupted as exc:
                raise Interrupted(
                    exc.message + "; " + discard_snapshot(clients, job.region, exc.snapshot_id),
                    hint="re-run the same command to upload again",
                ) from exc
            except ebs_direct.UploadFailed as exc:
                raise ImagekitError(exc.message + "; " + discard_snapshot(clients, job.region, exc.snapshot_id)) \
                    from exc
            stage.set_note(
                f"{stats.bytes_sent} bytes in {stats.blocks_sent} blocks, {stats.blocks_skipped} zero blocks "
                f"skipped, {stats.rate / 2**20:.1f} MiB/s"
            )
        return Uploaded(SnapshotChoice(stats.snapshot_id, self.method, reused=False),
                        {"method": self.method, **stats.__dict__})


def discard_snapshot(clients: Any, region: str, snapshot_id: str | None) -> str:
    if snapshot_id is None:
        return "no snapshot was started"
    try:
        clients.client("ec2", region).delete_snapshot(SnapshotId=snapshot_id)
    except Exception as exc:
        return (f"could not delete the incomplete snapshot {snapshot_id} ({describe(exc)}): delete it yourself, "
                "or let the re-run delete it")
    return f"deleted the incomplete snapshot {snapshot_id}"


# --- S3 + ImportSnapshot -------------------------------------------------------------------------

S3_HINT = ("the parts already sent stay in S3 (an unfinished multipart upload); a re-run sends only the rest, "
           "or drop them with `aws s3api abort-multipart-upload`")


@dataclass(frozen=True)
class ImportSnapshot:
    """The image to S3 (multipart, content-addressed key), then ImportSnapshot (publish/import_snapshot.py)."""

    method: ClassVar[str] = "import-snapshot"
    provenance: ClassVar[Provenance] = Provenance("Created by AWS-VMImport service for import-snap-",
                                                  exact_blocks=False)  # EC2 may write zero blocks too
    bucket: str
    s3_prefix: str = "imagekit-import"
    keep_s3_object: bool = False
    role_name: str = "vmimport"

    @classmethod
    def from_options(cls, opts: Mapping[str, Any]) -> ImportSnapshot:
        if not opts.get("bucket"):
            raise UsageError("--method import-snapshot needs --bucket (an S3 bucket in --region)")
        return cls(bucket=opts["bucket"], s3_prefix=opts.get("s3_prefix") or "imagekit-import",
                   keep_s3_object=bool(opts.get("keep_s3_object")), role_name=opts.get("role_name") or "vmimport")

    def upload(self, clients: Any, job: UploadJob, progress: Progress) -> Uploaded:
        image_id = job.digest.image_id
        s3 = clients.client("s3", job.region)
        ec2 = clients.client("ec2", job.region)
        where = imp.S3Location(self.bucket, imp.object_key(self.s3_prefix, image_id))
        imp.check_role(clients.client("iam", job.region), self.role_name, progress)
        imp.check_bucket_region(s3, self.bucket, job.region)
        task = find_import_task(ec2, image_id, where.bucket, where.key)
        if task is not None:
            progress.info(f"import task {task} of this image, left by an interrupted run, is resumed: nothing is "
                          "uploaded")
            report = {"method": self.method, "s3": where.url, "import_task": task, "resumed": True,
                      "parts_sent": 0, "bytes_sent": 0}
        else:
            sent = self.upload_to_s3(s3, job, where, progress)
            try:
                task = self.start_import(ec2, job, where)
            except imp.ImportFailed:
                if not self.keep_s3_object:
                    remove_object(s3, where, progress)
                raise
            report = {"method": self.method, "s3": where.url, "import_task": task, "resumed": False, **sent}
        snapshot = self.wait_for_import(ec2, s3, job, task, where, progress)
        return Uploaded(SnapshotChoice(snapshot, self.method, reused=False), report)

    def upload_to_s3(self, s3: Any, job: UploadJob, where: imp.S3Location, progress: Progress) -> dict[str, Any]:
        with progress.stage("upload", f"to {where.url}") as stage:
            try:
                obj = imp.upload_object(s3, job.facts.path, where, image_id=job.digest.image_id, progress=progress,
                                        backoff=job.backoff)
            except KeyboardInterrupt:
                raise Interrupted(f"interrupted while uploading {job.facts.path} to {where.url}", hint=S3_HINT) \
                    from None
            except imp.ImageChanged:
                raise
            except Exception as exc:
                raise ImagekitError(f"upload to {where.url} failed: {describe(exc)}", hint=S3_HINT) from exc
            stage.set_note(f"{obj.parts_sent} parts sent, {obj.parts_reused} already there")
        return {k: v for k, v in obj.__dict__.items() if k != "location"}

    def start_import(self, ec2: Any, job: UploadJob, where: imp.S3Location) -> str:
        image_id = job.digest.image_id
        token = hashlib.sha256(f"{job.name}/{image_id}/{job.region}/{where.url}".encode()).hexdigest()[:64]
        description = f"imagekit {job.name}"
        try:
            task = imp.start_import(
                ec2, where, description=description, role_name=self.role_name, client_token=token, tags=job.tags
            )
            if task_finished_badly(ec2, task):  # the token names a failed task of an earlier run: start afresh
                token = f"{token[:48]}-{int(dt.datetime.now().timestamp())}"
                task = imp.start_import(
                    ec2, where, description=description, role_name=self.role_name, client_token=token, tags=job.tags
                )
        except KeyboardInterrupt:
            raise Interrupted(
                f"interrupted while starting the import of {where.url}; the object is kept",
                hint="re-run the same command: it finds the import task if one started, or starts it",
            ) from None
        return task

    def wait_for_import(self, ec2: Any, s3: Any, job: UploadJob, task: str, where: imp.S3Location,
                        progress: Progress) -> str:
        """Wait for the task; the S3 object is removed once the task has ended, never while it runs."""
        try:
            with progress.stage("import", f"{task} from {where.url}"):
                snapshot = imp.wait_import(ec2, task, timeout=job.timeout, interval=job.poll_interval,
                                           progress=progress)
        except KeyboardInterrupt:
            raise Interrupted(
                f"interrupted: import task {task} is still running; re-run to resume",
                hint=f"{where.url} is kept while the task reads it; the re-run waits for {task} instead of "
                "uploading again, and removes the object when the task ends",
            ) from None
        except WaitTimeout:
            raise  # the task may still finish: the object stays for it (the hint says how to resume)
        except imp.ImportFailed:
            if not self.keep_s3_object:
                remove_object(s3, where, progress)
            raise
        if not self.keep_s3_object:
            remove_object(s3, where, progress)
        return snapshot


def task_finished_badly(ec2: Any, task: str) -> bool:
    tasks = ec2.describe_import_snapshot_tasks(ImportTaskIds=[task])["ImportSnapshotTasks"]
    return bool(tasks) and tasks[0].get("SnapshotTaskDetail", {}).get("Status") in {"deleted", "deleting"}


def remove_object(s3: Any, where: imp.S3Location, progress: Progress) -> None:
    try:
        imp.delete_object(s3, where)
    except Exception as exc:
        progress.warn(f"could not remove the temporary object {where.url} ({describe(exc)}): remove it yourself")


# --- the table ------------------------------------------------------------------------------------

UPLOADERS: dict[str, Callable[[Mapping[str, Any]], Uploader]] = {
    EbsDirect.method: EbsDirect.from_options,
    ImportSnapshot.method: ImportSnapshot.from_options,
}
# what each method's snapshots look like, by their made-by tag: a later publish reuses only these
PROVENANCE: dict[str, Provenance] = {
    EbsDirect.method: EbsDirect.provenance,
    ImportSnapshot.method: ImportSnapshot.provenance,
}
DEFAULT_METHOD = EbsDirect.method


def make_uploader(method: str, opts: Mapping[str, Any]) -> Uploader:
    """The uploader named `method`, its settings from `opts` (the CLI's options)."""
    try:
        make = UPLOADERS[method]
    except KeyError:
        raise UsageError(f"--method: {method!r} is not one of {', '.join(UPLOADERS)}") from None
    return make(opts)
