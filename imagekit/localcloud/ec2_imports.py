"""ImportSnapshot and DescribeImportSnapshotTasks, as EC2 runs them.

A task reads the S3 object, checks it is the declared format, and moves through `active`
(StatusMessage `pending`, `validating`, `converting`, with Progress) to `completed` with a
SnapshotId whose EBS-direct blocks read back equal to the disk; or, for a bad object, to
`deleted` with EC2's `ClientError: ...` StatusMessage. Time is compressed to
IMAGEKIT_LOCALCLOUD_IMPORT_SECONDS (default 3). The `vmimport` role (or RoleName) must exist,
as on EC2.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from imagekit.localcloud.diskformat import DiskValidationError, disk_bytes, size_gib

EBS_BLOCK = 524288
_lock = threading.Lock()
_installed = False
_ids = itertools.count(0x1000)


def import_seconds() -> float:
    return float(os.environ.get("IMAGEKIT_LOCALCLOUD_IMPORT_SECONDS", "3"))


@dataclass
class ImportTask:
    task_id: str
    account: str
    region: str
    description: str
    container: dict[str, Any]
    started: float
    duration: float
    tags: list[dict[str, str]]
    failure: str | None = None
    disk: bytes | None = None
    snapshot_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def fraction(self) -> float:
        if self.duration <= 0:
            return 1.0
        return min(1.0, (time.monotonic() - self.started) / self.duration)


def _tasks(backend: Any) -> dict[str, ImportTask]:
    return backend.__dict__.setdefault("_imagekit_import_tasks", {})


def _fail(code: str, message: str) -> Exception:
    from moto.ec2.exceptions import EC2ClientError

    return EC2ClientError(code, message)


def _check_role(account: str, role_name: str) -> None:
    from moto.iam.models import iam_backends

    try:
        iam_backends[account]["aws"].get_role(role_name)
    except Exception as exc:
        raise _fail(
            "InvalidParameter",
            f"The service role {role_name} provided does not exist or does not have sufficient permissions",
        ) from exc


def _read_object(account: str, bucket: str, key: str) -> bytes:
    from moto.s3.models import s3_backends

    try:
        obj = s3_backends[account]["aws"].get_object(bucket, key)
    except Exception:
        obj = None
    if obj is None:
        raise DiskValidationError("We do not have access to the given resource. Reason 404 Not Found")
    return bytes(obj.value)


def finish(task: ImportTask, ec2: Any) -> None:
    """End the conversion (once, under _lock): as on EC2, the object is read while the task runs, so an
    object deleted before the end fails the task instead of producing a snapshot."""
    if task.snapshot_id is not None or task.failure is not None:
        return
    bucket = task.container.get("UserBucket", {})
    try:
        _read_object(task.account, bucket["S3Bucket"], bucket["S3Key"])
    except DiskValidationError as exc:
        task.failure = str(exc).replace("Disk validation failed", "Failed to read the disk")
        task.disk = None
        return
    _materialize(task, ec2)


def _materialize(task: ImportTask, ec2: Any) -> None:
    """Turn the checked disk into an EC2 snapshot with EBS-direct blocks (once)."""
    from moto.ebs.models import EBSSnapshot, ebs_backends

    assert task.disk is not None
    volume = ec2.create_volume(size=size_gib(len(task.disk)), zone_name=f"{task.region}a")
    description = f"Created by AWS-VMImport service for {task.task_id}"
    snapshot = ec2.create_snapshot(volume_id=volume.id, description=description)
    blocks = EBSSnapshot(account_id=task.account, snapshot=snapshot)
    blocks.status = "completed"
    zero = bytes(EBS_BLOCK)
    for index in range(0, (len(task.disk) + EBS_BLOCK - 1) // EBS_BLOCK):
        chunk = task.disk[index * EBS_BLOCK : (index + 1) * EBS_BLOCK].ljust(EBS_BLOCK, b"\0")
        if chunk == zero:
            continue
        digest = base64.b64encode(hashlib.sha256(chunk).digest()).decode()
        blocks.put_block(index, chunk, digest, "SHA256", EBS_BLOCK)
    ebs_backends[task.account][task.region].snapshots[snapshot.id] = blocks
    task.snapshot_id = snapshot.id
    task.disk = None


def _detail(task: ImportTask, ec2: Any) -> dict[str, Any]:
    frac = task.fraction()
    container = task.container
    detail: dict[str, Any] = {
        "Description": task.description,
        "Format": container.get("Format", "RAW").upper(),
        "UserBucket": container.get("UserBucket", {}),
        "DiskImageSize": float(task.extra.get("size", 0)),
    }
    if task.failure is not None and frac >= 0.3:
        return {**detail, "Status": "deleted", "StatusMessage": task.failure}
    if frac >= 1.0:
        with _lock:
            finish(task, ec2)
        if task.failure is not None:
            return {**detail, "Status": "deleted", "StatusMessage": task.failure}
        return {**detail, "Status": "completed", "SnapshotId": task.snapshot_id}
    message = "pending" if frac < 0.1 else "validating" if frac < 0.3 else "converting"
    return {**detail, "Status": "active", "StatusMessage": message, "Progress": str(int(frac * 100))}


def import_snapshot(self: Any) -> Any:
    from moto.core.responses import ActionResult

    container = self._get_param("DiskContainer", {}) or {}
    role = self._get_param("RoleName") or "vmimport"
    token = self._get_param("ClientToken")
    self.error_on_dryrun()
    bucket = container.get("UserBucket", {})
    if not bucket.get("S3Bucket") or not bucket.get("S3Key"):
        raise _fail("InvalidParameter", "DiskContainer.UserBucket.S3Bucket and S3Key are required")
    _check_role(self.current_account, role)
    with _lock:  # find or create under the lock; describe outside it (_detail takes the lock itself)
        task = _task_for_token(self.ec2_backend, token) or _new_task(self, container, bucket, token)
    return ActionResult(_task_result(task, self.ec2_backend))


def _task_for_token(backend: Any, token: str | None) -> ImportTask | None:
    """The task an earlier ImportSnapshot with this ClientToken started (EC2's idempotency)."""
    if not token:
        return None
    return next((t for t in _tasks(backend).values() if t.extra.get("token") == token), None)


def _new_task(self: Any, container: dict[str, Any], bucket: dict[str, str], token: str | None) -> ImportTask:
    task = ImportTask(
        task_id=f"import-snap-{next(_ids):017x}",
        account=self.current_account,
        region=self.region,
        description=self._get_param("Description", ""),
        container=container,
        started=time.monotonic(),
        duration=import_seconds(),
        tags=[t for s in self._get_param("TagSpecifications", []) for t in s.get("Tags", [])],
        extra={"token": token},
    )
    try:
        data = _read_object(self.current_account, bucket["S3Bucket"], bucket["S3Key"])
        task.extra["size"] = len(data)
        task.disk = disk_bytes(data, container.get("Format", "RAW"))
    except DiskValidationError as exc:
        task.failure = str(exc)
    _tasks(self.ec2_backend)[task.task_id] = task
    return task


def _task_result(task: ImportTask, ec2: Any) -> dict[str, Any]:
    return {
        "ImportTaskId": task.task_id,
        "Description": task.description,
        "SnapshotTaskDetail": _detail(task, ec2),
        "Tags": task.tags,
    }


def describe_import_snapshot_tasks(self: Any) -> Any:
    from moto.core.responses import ActionResult

    ids = self._get_param("ImportTaskIds", []) or []
    tasks = _tasks(self.ec2_backend)
    unknown = [i for i in ids if i not in tasks]
    if unknown:
        raise _fail("InvalidConversionTaskId.Malformed", f"The import task ID '{unknown[0]}' is malformed")
    chosen = [tasks[i] for i in ids] if ids else list(tasks.values())
    return ActionResult({"ImportSnapshotTasks": [_task_result(t, self.ec2_backend) for t in chosen]})


def install() -> None:
    global _installed
    if _installed:
        return
    from moto.ec2.responses import EC2Response

    EC2Response.import_snapshot = import_snapshot  # type: ignore[attr-defined]
    EC2Response.describe_import_snapshot_tasks = describe_import_snapshot_tasks  # type: ignore[attr-defined]
    _installed = True
