"""What an earlier run left that may stand in for an upload, and how far each thing is trusted.

A snapshot is found by its `imagekit:image-id` tag (imagekit/image/blockmap.py), but a tag is only a record anyone with
ec2:CreateTags can write, on any snapshot. A tagged snapshot is reused only when everything else
that can be checked without reading it back agrees:

- it is `completed` (a pending one is an interrupted upload; an error state is final) and ours
  (OwnerIds self);
- `imagekit:made-by` names one of imagekit's methods, and the snapshot's description, which is set
  when a snapshot is created and cannot be changed later, is the one that method gives
  (`imagekit <name>` from StartSnapshot, `Created by AWS-VMImport service for import-snap-...`: each
  uploader's `Provenance`);
- its volume size is the image's, rounded up to GiB;
- its block list (ListSnapshotBlocks, which lists the blocks written) is exactly the image's non-zero
  blocks for an EBS-direct snapshot, and holds all of them for an imported one (EC2 may write more);
- a spot check: up to SPOT_BLOCKS of those blocks (the first, the last, and some the image id
  picks) are read back and hashed here, and must equal the verified block map.

An import task is found by its tags too, and resumed only when it reads this image's
content-addressed S3 key and is still running or finished with a snapshot that exists.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from imagekit.publish.awserrors import describe
from imagekit.publish.digest import ImageDigest
from imagekit.publish.ebs_direct import volume_size_gib
from imagekit.util.progress import Progress

ID_TAG = "imagekit:image-id"  # the block map's sha256 (imagekit/image/blockmap.py)
NAME_TAG = "imagekit:name"
MADE_BY_TAG = "imagekit:made-by"
EBS_DIRECT = "ebs-direct"
SPOT_BLOCKS = 4


@dataclass(frozen=True)
class Provenance:
    """How a publish method's snapshots look, so that a later publish can tell one it may reuse: each uploader
    states its own (publish/uploaders.py: PROVENANCE, keyed by the snapshot's made-by tag)."""

    description: str  # what its snapshots' Description starts with
    exact_blocks: bool  # its snapshot holds exactly the image's data blocks (EBS direct skips zeros; an import
    # may write some zero blocks too)


@dataclass(frozen=True)
class SnapshotChoice:
    """The snapshot that holds the image in a region, and where it came from."""

    snapshot_id: str
    made_by: str  # ebs-direct | import-snapshot | unknown
    reused: bool

    def report(self, requested: str) -> dict[str, Any]:
        return {"id": self.snapshot_id, "reused": self.reused, "made_by": self.made_by, "requested": requested}


def tag_value(resource: dict[str, Any], key: str) -> str | None:
    return next((str(t.get("Value")) for t in resource.get("Tags", []) if t.get("Key") == key), None)


def tagged_snapshots(ec2: Any, image_id: str) -> list[dict[str, Any]]:
    found = ec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": f"tag:{ID_TAG}", "Values": [image_id]}])
    return list(found["Snapshots"])


def find_finished_snapshot(
    ec2: Any, ebs: Any, digest: ImageDigest, name: str, progress: Progress, trusted: Mapping[str, Provenance]
) -> SnapshotChoice | None:
    """A completed snapshot of this very image that imagekit made, whatever AMI name it was uploaded for.

    Keyed on the image id: an interrupted run's snapshot is reused, and so is the snapshot of an
    identical (reproducible) rebuild published before under another name. Pending snapshots an
    interrupted EBS-direct upload of this image left are deleted (the re-run uploads afresh).
    """
    snaps = tagged_snapshots(ec2, digest.image_id)
    delete_abandoned(ec2, [s for s in snaps if s.get("State") == "pending"], progress)
    done = sorted((s for s in snaps if s.get("State") == "completed"), key=lambda s: tag_value(s, NAME_TAG) != name)
    for snap in done:
        reason = distrust(ebs, snap, digest, trusted)
        if reason:
            progress.warn(f"not reusing snapshot {snap['SnapshotId']}, tagged {ID_TAG} of this image: {reason}")
            continue
        made_by = str(tag_value(snap, MADE_BY_TAG))
        progress.info(f"reusing snapshot {snap['SnapshotId']} ({made_by}): it holds this very image "
                      f"(image id {digest.image_id[:12]}..., {len(digest.blocks)} data blocks)")
        return SnapshotChoice(str(snap["SnapshotId"]), made_by, reused=True)
    return None


def distrust(ebs: Any, snap: dict[str, Any], digest: ImageDigest, trusted: Mapping[str, Provenance]) -> str | None:
    """Why this tagged snapshot cannot stand for the image (None: it can); `trusted`: each publish method's
    provenance, by its made-by tag."""
    made_by = tag_value(snap, MADE_BY_TAG)
    if made_by is None or made_by not in trusted:
        return f"it has no {MADE_BY_TAG} tag naming {' or '.join(trusted)}: imagekit did not make it"
    provenance = trusted[made_by]
    if not str(snap.get("Description", "")).startswith(provenance.description):
        return f"its description {snap.get('Description', '')!r} is not the one a {made_by} upload gives"
    want = volume_size_gib(digest.size)
    if snap.get("VolumeSize") != want:
        return f"it is {snap.get('VolumeSize')} GiB, the image needs {want} GiB"
    if snap.get("Encrypted"):
        return "it is encrypted: imagekit uploads unencrypted snapshots"
    return blocks_mismatch(ebs, str(snap["SnapshotId"]), digest, exact=provenance.exact_blocks)


def blocks_mismatch(ebs: Any, snapshot_id: str, digest: ImageDigest, *, exact: bool) -> str | None:
    """Why the snapshot's blocks are not the image's (None: the listing and the spot check agree)."""
    try:
        listed = dict(snapshot_blocks(ebs, snapshot_id))
    except Exception as exc:
        return f"could not list its blocks ({describe(exc)})"
    missing = sorted(set(digest.blocks) - set(listed))
    extra = sorted(set(listed) - set(digest.blocks)) if exact else []
    if missing or extra:
        return f"its blocks are not the image's non-zero blocks (extra {extra[:3]}, missing {missing[:3]})"
    for index in spot_indexes(digest):
        try:
            got = ebs.get_snapshot_block(SnapshotId=snapshot_id, BlockIndex=index, BlockToken=listed[index])
            data = got["BlockData"].read()
        except Exception as exc:
            return f"could not read block {index} back ({describe(exc)})"
        if hashlib.sha256(data).digest() != digest.blocks[index]:
            return f"block {index} read back is not the image's block {index}"
    return None


def spot_indexes(digest: ImageDigest) -> list[int]:
    """The first and last data blocks and a few the image id picks: the same ones on every run."""
    indexes = sorted(digest.blocks)
    if len(indexes) <= SPOT_BLOCKS:
        return indexes
    seed = int(digest.image_id[:16], 16)
    picks = {indexes[0], indexes[-1]}
    step = 0
    while len(picks) < SPOT_BLOCKS:
        picks.add(indexes[(seed >> (8 * step)) % len(indexes)])
        step += 1
        if step > 8:
            break
    return sorted(picks)


def snapshot_blocks(ebs: Any, snapshot_id: str) -> Iterator[tuple[int, str]]:
    """(index, block token) of every block written to the snapshot."""
    kwargs: dict[str, Any] = {"SnapshotId": snapshot_id}
    while True:
        page = ebs.list_snapshot_blocks(**kwargs)
        for block in page.get("Blocks", []):
            yield int(block["BlockIndex"]), str(block["BlockToken"])
        if not page.get("NextToken"):
            return
        kwargs["NextToken"] = page["NextToken"]


def delete_abandoned(ec2: Any, pending: list[dict[str, Any]], progress: Progress) -> None:
    """Pending EBS-direct snapshots of this image: an interrupted upload's; they never complete by themselves."""
    for snap in pending:
        if tag_value(snap, MADE_BY_TAG) != EBS_DIRECT or not str(snap.get("Description", "")).startswith("imagekit "):
            progress.warn(f"snapshot {snap['SnapshotId']} (pending) is tagged {ID_TAG} of this image but "
                          "imagekit did not make it: left alone")
            continue
        try:
            ec2.delete_snapshot(SnapshotId=snap["SnapshotId"])
        except Exception as exc:
            progress.warn(f"snapshot {snap['SnapshotId']} (pending) is left from an interrupted upload of this image "
                          f"and could not be deleted ({describe(exc)}): delete it with "
                          f"`aws ec2 delete-snapshot --snapshot-id {snap['SnapshotId']}`")
            continue
        progress.warn(f"deleted snapshot {snap['SnapshotId']} (pending), left by an interrupted upload of this image")


def import_tasks(ec2: Any) -> Iterator[dict[str, Any]]:
    """Every import snapshot task EC2 lists (active, or ended in the last 7 days)."""
    kwargs: dict[str, Any] = {}
    while True:
        page = ec2.describe_import_snapshot_tasks(**kwargs)
        yield from page.get("ImportSnapshotTasks", [])
        if not page.get("NextToken"):
            return
        kwargs["NextToken"] = page["NextToken"]


def find_import_task(ec2: Any, image_id: str, bucket: str, key: str) -> str | None:
    """A running or finished import of this image's S3 object (an interrupted run's), to wait for."""
    for task in import_tasks(ec2):
        detail = task.get("SnapshotTaskDetail", {})
        source = detail.get("UserBucket", {})
        if tag_value(task, ID_TAG) != image_id or (source.get("S3Bucket"), source.get("S3Key")) != (bucket, key):
            continue
        if detail.get("Status") == "active":
            return str(task["ImportTaskId"])
        if detail.get("Status") == "completed" and snapshot_exists(ec2, str(detail.get("SnapshotId", ""))):
            return str(task["ImportTaskId"])
    return None


def snapshot_exists(ec2: Any, snapshot_id: str) -> bool:
    if not snapshot_id:
        return False
    try:
        snaps = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
    except Exception:
        return False
    return bool(snaps) and snaps[0].get("State") == "completed"
