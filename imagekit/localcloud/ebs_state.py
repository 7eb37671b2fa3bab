"""EBS direct snapshots that are `pending` in EC2 until CompleteSnapshot, and checked, as on AWS.

moto marks the EC2 snapshot `completed` the moment StartSnapshot creates it, so an interrupted
upload would look finished; here it stays `pending` until CompleteSnapshot. moto also takes
checksums at face value; here, as on AWS, PutSnapshotBlock refuses a block whose SHA-256 is not
its Checksum, and a write to a snapshot that is no longer pending, and CompleteSnapshot refuses a
ChangedBlocksCount or a LINEAR Checksum that is not the blocks received (the snapshot then ends in
`error`, which is final).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

_installed = False


def _refuse(message: str) -> Exception:
    from moto.core.exceptions import JsonRESTError

    return JsonRESTError("ValidationException", message)


def linear_checksum(blocks: dict[Any, Any]) -> str:
    outer = hashlib.sha256()
    for index in sorted(blocks, key=int):
        outer.update(base64.b64decode(blocks[index].checksum))
    return base64.b64encode(outer.digest()).decode()


def check_block(backend: Any, snapshot_id: str, data: bytes, checksum: str | None) -> None:
    snapshot = backend.snapshots.get(snapshot_id)
    if snapshot is not None and snapshot.status != "pending":
        raise _refuse(f"snapshot {snapshot_id} is {snapshot.status}: blocks can be written to pending snapshots only")
    if checksum and base64.b64encode(hashlib.sha256(data).digest()).decode() != checksum:
        raise _refuse("The specified checksum does not match the block data (INVALID_CHECKSUM)")


def check_completion(backend: Any, snapshot_id: str, headers: dict[str, str]) -> None:
    snapshot = backend.snapshots.get(snapshot_id)
    if snapshot is None:
        return
    count = headers.get("x-amz-changedblockscount")
    checksum = headers.get("x-amz-checksum")
    wrong = None
    if count is not None and int(count) != len(snapshot.blocks):
        wrong = f"ChangedBlocksCount {count} but {len(snapshot.blocks)} blocks were written"
    elif checksum and checksum != linear_checksum(snapshot.blocks):
        wrong = "the aggregated Checksum does not match the blocks written (INVALID_CHECKSUM)"
    if wrong is None:
        return
    snapshot.status = "error"
    ec2_snapshot = backend.ec2_backend.snapshots.get(snapshot_id)
    if ec2_snapshot is not None:
        ec2_snapshot.status = "error"
    raise _refuse(f"snapshot {snapshot_id}: {wrong}")


def install() -> None:
    global _installed
    if _installed:
        return
    from moto.ebs.models import EBSBackend
    from moto.ebs.responses import EBSResponse

    start, complete = EBSBackend.start_snapshot, EBSBackend.complete_snapshot
    put_response, complete_response = EBSResponse.put_snapshot_block, EBSResponse.complete_snapshot

    def start_snapshot(self: Any, *args: Any, **kwargs: Any) -> Any:
        snapshot = start(self, *args, **kwargs)
        self.ec2_backend.snapshots[snapshot.snapshot_id].status = "pending"
        return snapshot

    def complete_snapshot(self: Any, snapshot_id: str) -> str:
        status = complete(self, snapshot_id)
        ec2_snapshot = self.ec2_backend.snapshots.get(snapshot_id)
        if ec2_snapshot is not None:
            ec2_snapshot.status = status
        return str(status)

    def put_snapshot_block(self: Any) -> Any:
        headers = {k.lower(): v for k, v in self.headers.items()}
        check_block(self.ebs_backend, self.parsed_url.path.split("/")[-3], bytes(self.body or b""),
                    headers.get("x-amz-checksum"))
        return put_response(self)

    def complete_snapshot_response(self: Any) -> Any:
        headers = {k.lower(): v for k, v in self.headers.items()}
        check_completion(self.ebs_backend, self.parsed_url.path.split("/")[-1], headers)
        return complete_response(self)

    EBSBackend.start_snapshot = start_snapshot  # type: ignore[method-assign]
    EBSBackend.complete_snapshot = complete_snapshot  # type: ignore[method-assign]
    EBSResponse.put_snapshot_block = put_snapshot_block  # type: ignore[method-assign]
    EBSResponse.complete_snapshot = complete_snapshot_response  # type: ignore[method-assign]
    _installed = True
