"""Issue 13 item 6: `imagekit publish` interrupted with SIGINT at a known point, then run again.

Real subprocesses against a local cloud of their own (a long ImportSnapshot), so the interrupt
lands where a person's Ctrl-C would: while the import task runs, or while blocks are being put.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from imagekit.publish.aws import AwsClients
from imagekit.publish.pipeline import ID_TAG
from tests.publish.conftest import (
    BLOCK,
    FAKE_ENV,
    HVM_MANIFEST,
    SparseImage,
    serve_local_cloud,
    stamp_manifest,
    write_image,
)

IMPORT_SECONDS = 6


@pytest.fixture(scope="module")
def slow_cloud() -> Iterator[str]:
    """A local cloud whose import tasks take IMPORT_SECONDS, long enough to interrupt one."""
    env = {**os.environ, **FAKE_ENV}
    with serve_local_cloud(env, "--import-seconds", str(IMPORT_SECONDS)) as url:
        yield url


def start_publish(image: SparseImage, name: str, endpoint: str, *extra: str) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "imagekit", "publish", str(image.path), "--name", name, "--endpoint-url", endpoint,
            "--poll-interval", "0.2", "--no-lint", *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_publish(image: SparseImage, name: str, endpoint: str, *extra: str) -> subprocess.CompletedProcess[str]:
    proc = start_publish(image, name, endpoint, *extra, "--json")
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def wait_for(probe: Callable[[], Any], what: str, proc: subprocess.Popen[str], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            pytest.fail(f"publish ended (status {proc.returncode}) before {what}: {err}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"gave up waiting for {what}")


def interrupt(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


@pytest.mark.slow  # an interrupt while a 6 s import runs, then the re-run's wait: the EBS-direct one stays fast
def test_an_interrupted_import_is_resumed_not_uploaded_again(slow_cloud: str, tmp_path: Path) -> None:
    clients = AwsClients(endpoint_url=slow_cloud)
    s3, ec2, iam = (clients.client(s, "us-east-1") for s in ("s3", "ec2", "iam"))
    bucket = f"imagekit-test-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
        iam.create_role(RoleName="vmimport", AssumeRolePolicyDocument="{}")
    image = write_image(tmp_path / "img.raw", 24 * 2**20, {0: os.urandom(BLOCK), 7 * BLOCK: b"tail"}, HVM_MANIFEST)
    sha = stamp_manifest(image)
    name = f"imagekit-test-{uuid.uuid4().hex[:10]}"
    extra = ("--method", "import-snapshot", "--bucket", bucket)

    def tasks() -> list[dict[str, Any]]:
        found = ec2.describe_import_snapshot_tasks()["ImportSnapshotTasks"]
        return [t for t in found if {"Key": ID_TAG, "Value": sha} in t.get("Tags", [])]

    proc = start_publish(image, name, slow_cloud, *extra)
    task_id = wait_for(tasks, "the import task", proc)[0]["ImportTaskId"]
    status, err = interrupt(proc)
    assert status == 130, err
    # The task exists on the server before the client has its ImportSnapshot answer; a SIGINT in between
    # (a loaded machine) is the "while starting" case: the object is kept and the re-run finds the task.
    assert (f"error: interrupted: import task {task_id} is still running; re-run to resume" in err
            or ("error: interrupted while starting the import of" in err and "the object is kept" in err)), err
    assert "Traceback" not in err
    assert tasks()[0]["SnapshotTaskDetail"]["Status"] == "active"
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 1  # kept: the running task reads it

    again = run_publish(image, name, slow_cloud, *extra)
    assert again.returncode == 0, again.stderr
    record = json.loads(again.stdout)
    assert record["upload"]["import_task"] == task_id and record["upload"]["resumed"] is True
    assert record["upload"]["parts_sent"] == 0
    assert [t["ImportTaskId"] for t in tasks()] == [task_id]  # one import task in all
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0  # removed once the task ended
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    image_id = record["regions"]["us-east-1"]["image_id"]
    registered = ec2.describe_images(ImageIds=[image_id])["Images"][0]
    snapshot = registered["BlockDeviceMappings"][0]["Ebs"]["SnapshotId"]
    assert record["snapshot"] == {"id": snapshot, "reused": False, "made_by": "import-snapshot",
                                  "requested": "import-snapshot"}


def test_an_interrupted_ebs_direct_upload_names_and_deletes_its_snapshot(slow_cloud: str, tmp_path: Path) -> None:
    """Many non-zero blocks and one worker: the upload lasts long enough to be interrupted mid-way."""
    clients = AwsClients(endpoint_url=slow_cloud)
    ec2 = clients.client("ec2", "us-east-1")
    blocks = 256
    noise = os.urandom(BLOCK)
    writes = {i * BLOCK: i.to_bytes(4, "big") + noise[4:] for i in range(blocks)}
    image = write_image(tmp_path / "big.raw", (blocks + 8) * BLOCK, writes, HVM_MANIFEST)
    sha = stamp_manifest(image)
    name = f"imagekit-test-{uuid.uuid4().hex[:10]}"

    def snapshots(state: str | None = None) -> list[dict[str, Any]]:
        found = ec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": f"tag:{ID_TAG}", "Values": [sha]}])
        return [s for s in found["Snapshots"] if state is None or s["State"] == state]

    proc = start_publish(image, name, slow_cloud, "--workers", "1")
    pending = wait_for(lambda: snapshots("pending"), "the pending snapshot", proc)[0]["SnapshotId"]
    time.sleep(0.3)  # some blocks are in
    status, err = interrupt(proc)
    assert status == 130, err
    assert f"into snapshot {pending}; deleted the incomplete snapshot {pending}" in err
    assert "Traceback" not in err
    assert snapshots() == []

    again = run_publish(image, name, slow_cloud, "--workers", "4")
    assert again.returncode == 0, again.stderr
    record = json.loads(again.stdout)
    assert record["upload"]["blocks_sent"] == blocks
    [done] = snapshots()
    assert done["State"] == "completed" and done["SnapshotId"] == record["snapshot"]["id"] != pending


@pytest.mark.slow  # waits out an import: ~9 s (the fast loop: README, Tests)
def test_an_import_wait_that_times_out_keeps_the_object_for_the_rerun(slow_cloud: str, tmp_path: Path) -> None:
    from imagekit.publish.facts import image_facts
    from imagekit.publish.pipeline import PublishRequest, publish
    from imagekit.publish.register import RegisterOptions
    from imagekit.publish.uploaders import ImportSnapshot
    from imagekit.publish.wait import WaitTimeout
    from imagekit.util.progress import Progress

    clients = AwsClients(endpoint_url=slow_cloud)
    s3, iam = clients.client("s3", "us-east-1"), clients.client("iam", "us-east-1")
    bucket = f"imagekit-test-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
        iam.create_role(RoleName="vmimport", AssumeRolePolicyDocument="{}")
    image = write_image(tmp_path / "img.raw", 8 * 2**20, {0: os.urandom(BLOCK)}, HVM_MANIFEST)
    stamp_manifest(image)
    req = PublishRequest(facts=image_facts(image.path), register=RegisterOptions(name=f"imagekit-test-{uuid.uuid4()}"),
                         region="us-east-1", uploader=ImportSnapshot(bucket=bucket), kernel=None,
                         timeout=1, poll_interval=0.2)
    with pytest.raises(WaitTimeout) as info:
        publish(clients, req, Progress())
    assert info.value.hint and "a re-run resumes it" in info.value.hint
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 1  # the running task still reads it

    done = publish(clients, PublishRequest(**{**req.__dict__, "timeout": 60}), Progress())
    assert done.upload is not None and done.upload["resumed"] is True and done.upload["parts_sent"] == 0
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
