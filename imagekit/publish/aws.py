"""boto3 clients for publishing, made the usual boto3 ways, and a dry-run stand-in.

Profile, region and endpoint are what `imagekit.publish.awsconfig.resolve` chose (options, then AWS_REGION,
AWS_DEFAULT_REGION, AWS_PROFILE, the profile; endpoints also AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_EC2, ...),
so the same command reaches AWS or `imagekit local-cloud`. A failing call remembers which call it was
(`NamedClient`), so the CLI's one-line error names the operation and the object.
With --dry-run, `DryRunClients` hands out clients that record every call instead of sending it:
describe calls find nothing, and creating calls answer with placeholder ids like `<snapshot-id>`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from imagekit.publish.awsconfig import UNSET, AwsConfig, Setting
from imagekit.publish.awserrors import AwsCall, note_call


class ClientFactory(Protocol):
    def client(self, service: str, region: str) -> Any: ...


class NamedClient:
    """A boto3 client whose failing calls remember which call they were (for the one-line error).

    Everything else (meta, exceptions, paginators) is the client's own; exceptions keep their types.
    """

    def __init__(self, client: Any, service: str, region: str) -> None:
        self._client, self._service, self._region = client, service, region

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        operation = self._client.meta.method_to_api_mapping.get(name)
        if operation is None:
            return attr

        def call(**params: Any) -> Any:
            try:
                return attr(**params)
            except Exception as exc:
                note_call(exc, AwsCall(self._service, self._region, operation, params))
                raise

        return call


@dataclass
class AwsClients:
    """Real clients, one per (service, region), shared across threads (boto3 clients are thread-safe).

    `profile` and `endpoint_url` are what `imagekit.publish.awsconfig.resolve` chose (None: botocore's own).
    """

    profile: str | None = None
    endpoint_url: str | None = None
    max_pool: int = 32
    hooks: list[Callable[[Any], None]] = field(default_factory=list)
    _session: Any = None
    _cache: dict[tuple[str, str], Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_config(cls, config: AwsConfig, max_pool: int = 32) -> AwsClients:
        return cls(profile=config.profile.value, endpoint_url=config.endpoint_override, max_pool=max_pool)

    def session(self) -> Any:
        if self._session is None:
            self._session = AwsConfig(region=UNSET, profile=Setting(self.profile, "--profile")).session()
        return self._session

    def client(self, service: str, region: str) -> Any:
        from botocore.config import Config

        with self._lock:
            key = (service, region)
            if key not in self._cache:
                # EBS block puts retry themselves (imagekit.publish.wait); everything else uses standard mode.
                attempts = 1 if service == "ebs" else 5
                config = Config(
                    max_pool_connections=self.max_pool,
                    retries={"mode": "standard", "total_max_attempts": attempts},
                    connect_timeout=10,
                    read_timeout=60,
                )
                kwargs: dict[str, Any] = {"region_name": region, "config": config}
                if self.endpoint_url:
                    kwargs["endpoint_url"] = self.endpoint_url
                client = self.session().client(service, **kwargs)
                for hook in self.hooks:
                    hook(client)
                self._cache[key] = NamedClient(client, service, region)
            return self._cache[key]


PLACEHOLDERS = {
    "start_snapshot": {"SnapshotId": "<snapshot-id>", "BlockSize": 524288},
    "complete_snapshot": {"Status": "completed"},
    "put_snapshot_block": {},
    "import_snapshot": {"ImportTaskId": "<import-task-id>"},
    "describe_import_snapshot_tasks": {
        "ImportSnapshotTasks": [{"SnapshotTaskDetail": {"Status": "completed", "SnapshotId": "<snapshot-id>"}}]
    },
    "register_image": {"ImageId": "<image-id>"},
    "copy_image": {"ImageId": "<image-id:{region}>"},
    "create_multipart_upload": {"UploadId": "<upload-id>"},
    "list_multipart_uploads": {"Uploads": []},
    "list_parts": {"Parts": []},
    "get_bucket_location": {"LocationConstraint": "{region}"},
    "get_role": {"Role": {}},
    "get_caller_identity": {"Account": "<account-id>", "Arn": "<caller-arn>", "UserId": "<user-id>"},
}


def _describe_images(params: dict[str, Any]) -> dict[str, Any]:
    """By id: the image is available; by name or owner: nothing is there yet."""
    ids = params.get("ImageIds") or []
    mapping = [{"DeviceName": "<root>", "Ebs": {"SnapshotId": "<snapshot-id>"}}]
    return {"Images": [{"ImageId": i, "State": "available", "BlockDeviceMappings": mapping} for i in ids]}


def _describe_snapshots(params: dict[str, Any]) -> dict[str, Any]:
    ids = params.get("SnapshotIds") or []
    return {"Snapshots": [{"SnapshotId": i, "State": "completed"} for i in ids]}


ANSWERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "describe_images": _describe_images,
    "describe_snapshots": _describe_snapshots,
}


@dataclass(frozen=True)
class RecordedCall:
    service: str
    region: str
    operation: str
    params: dict[str, Any]


class DryRunClient:
    def __init__(self, service: str, region: str, log: list[RecordedCall], lock: threading.Lock) -> None:
        self.service, self.region, self._log, self._lock = service, region, log, lock

    def __getattr__(self, operation: str) -> Callable[..., dict[str, Any]]:
        if operation.startswith("_"):
            raise AttributeError(operation)

        def call(**params: Any) -> dict[str, Any]:
            if "BlockData" in params:
                params = {**params, "BlockData": f"<{len(params['BlockData'])} bytes>"}
            if "Body" in params:
                params = {**params, "Body": f"<{len(params['Body'])} bytes>"}
            with self._lock:
                self._log.append(RecordedCall(self.service, self.region, operation, params))
            if operation == "head_object":
                from botocore.exceptions import ClientError

                raise ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject")
            if operation in ANSWERS:
                return ANSWERS[operation](params)
            return _fill(PLACEHOLDERS.get(operation, {}), self.region)

        return call


def _fill(value: Any, region: str) -> Any:
    if isinstance(value, str):
        return value.replace("{region}", region)
    if isinstance(value, dict):
        return {k: _fill(v, region) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, region) for v in value]
    return value


@dataclass
class DryRunClients:
    calls: list[RecordedCall] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, service: str, region: str) -> DryRunClient:
        return DryRunClient(service, region, self.calls, self._lock)


def render_calls(calls: list[RecordedCall]) -> list[str]:
    """One line per call; consecutive block puts folded into one line listing their indexes."""
    lines: list[str] = []
    i = 0
    while i < len(calls):
        call = calls[i]
        if call.operation == "put_snapshot_block":
            run = [call]
            while i + 1 < len(calls) and calls[i + 1].operation == "put_snapshot_block":
                i += 1
                run.append(calls[i])
            indexes = sorted(c.params["BlockIndex"] for c in run)
            lines.append(
                f"{call.service}.{call.operation}[{call.region}] x{len(run)} "
                f"SnapshotId={call.params['SnapshotId']} BlockIndex={ranges(indexes)} "
                "DataLength=524288 ChecksumAlgorithm=SHA256"
            )
        else:
            args = " ".join(f"{k}={v!r}" for k, v in call.params.items())
            lines.append(f"{call.service}.{call.operation}[{call.region}] {args}".rstrip())
        i += 1
    return lines


def calls_json(calls: list[RecordedCall]) -> list[dict[str, Any]]:
    """The calls as JSON objects; consecutive block puts folded into one (`count`, `BlockIndex` ranges),
    bytes given by their length."""
    out: list[dict[str, Any]] = []
    for call in calls:
        last = out[-1] if out else None
        if (call.operation == "put_snapshot_block" and last is not None and last["operation"] == call.operation
                and last["params"]["SnapshotId"] == call.params["SnapshotId"]):
            last["count"] += 1
            last["_indexes"].append(call.params["BlockIndex"])
            continue
        params = {k: f"<{len(v)} bytes>" if isinstance(v, bytes | bytearray) else v for k, v in call.params.items()}
        entry: dict[str, Any] = {"service": call.service, "region": call.region, "operation": call.operation,
                                 "params": params}
        if call.operation == "put_snapshot_block":
            entry |= {"count": 1, "_indexes": [call.params["BlockIndex"]]}
        out.append(entry)
    for entry in out:
        if "_indexes" in entry:
            entry["params"] = {"SnapshotId": entry["params"]["SnapshotId"],
                               "BlockIndex": ranges(sorted(entry.pop("_indexes")))}
    return out


def ranges(numbers: list[int]) -> str:
    out: list[str] = []
    for n in numbers:
        if out and out[-1].split("-")[-1] == str(n - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ",".join(out)
