"""`imagekit local-cloud` as a service: a port in use is exit 2 at once, SIGTERM stops it, a flag beats its env var."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import boto3

from tests.publish.conftest import FAKE_ENV


def local_cloud(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "imagekit", "local-cloud", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **FAKE_ENV, **(env or {})})


def test_a_port_in_use_is_exit_2_at_once() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = local_cloud("--port", str(port))
        try:
            out, err = proc.communicate(timeout=20)
        finally:
            proc.kill()
    assert proc.returncode == 2, err
    assert out == ""
    assert err.splitlines()[0] == f"error: local-cloud: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert "--port 0" in err and "Traceback" not in err


def test_sigterm_stops_it_and_the_flag_beats_the_environment() -> None:
    proc = local_cloud("--port", "0", "--json", "--import-seconds", "0.5",
                       env={"IMAGEKIT_LOCALCLOUD_IMPORT_SECONDS": "600"})
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["endpoint_url"]
        kw = {"endpoint_url": url, "region_name": "us-east-1", "aws_access_key_id": "k", "aws_secret_access_key": "k"}
        boto3.client("iam", **kw).create_role(RoleName="vmimport", AssumeRolePolicyDocument="{}")
        s3 = boto3.client("s3", **kw)
        s3.create_bucket(Bucket="images")
        s3.put_object(Bucket="images", Key="disk.raw", Body=b"\1" * 4096)
        ec2 = boto3.client("ec2", **kw)
        task = ec2.import_snapshot(DiskContainer={"Format": "RAW", "UserBucket": {"S3Bucket": "images",
                                                                                   "S3Key": "disk.raw"}})
        deadline = time.monotonic() + 10
        status = ""
        while time.monotonic() < deadline and status != "completed":
            time.sleep(0.2)
            tasks = ec2.describe_import_snapshot_tasks(ImportTaskIds=[task["ImportTaskId"]])["ImportSnapshotTasks"]
            status = tasks[0]["SnapshotTaskDetail"]["Status"]
        assert status == "completed"  # 0.5 s (the flag), not 600 s (the environment)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        proc.wait()


def test_help_names_the_environment_variable() -> None:
    proc = subprocess.run([sys.executable, "-m", "imagekit", "local-cloud", "--help"], capture_output=True, text=True)
    assert "env var: IMAGEKIT_LOCALCLOUD_IMPORT_SECONDS" in " ".join(proc.stdout.split())
