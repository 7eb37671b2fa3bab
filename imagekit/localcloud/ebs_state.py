"""EBS direct snapshots that are `pending` in EC2 until CompleteSnapshot, as on AWS.

moto marks the EC2 snapshot `completed` the moment StartSnapshot creates it, so an interrupted
upload would look finished. Here it stays `pending` until CompleteSnapshot.
"""

from __future__ import annotations

from typing import Any

_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    from moto.ebs.models import EBSBackend

    start, complete = EBSBackend.start_snapshot, EBSBackend.complete_snapshot

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

    EBSBackend.start_snapshot = start_snapshot  # type: ignore[method-assign]
    EBSBackend.complete_snapshot = complete_snapshot  # type: ignore[method-assign]
    _installed = True
