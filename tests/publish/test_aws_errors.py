"""AWS trouble through the real CLI: one line naming the operation and the object, a hint, exit 2 or 1.

Regions and credentials are checked before lint or upload. Each case runs `python -m imagekit` against
a real endpoint: local-cloud, local-cloud with IAM enforced, a closed port, or a local HTTP server that
answers every call with EC2's throttling error (the only honest way to outlive botocore's retries here).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest

from tests.publish.conftest import FAKE_ENV, SparseImage, serve_local_cloud


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**env, **FAKE_ENV, "AWS_EC2_METADATA_DISABLED": "true", **extra}


def imagekit(*args: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imagekit", *map(str, args)], capture_output=True, text=True,
                          timeout=180, env=env)


def one_error(proc: subprocess.CompletedProcess[str], code: int) -> str:
    """The single `error:` line (and a `hint:`), no traceback, the exit code; returns the error line."""
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    assert any(line.startswith("hint: ") for line in proc.stderr.splitlines()), proc.stderr
    assert proc.stdout == "", proc.stdout  # no AMI id, no call printed
    return errors[0]


def publish_args(image: SparseImage, name: str, *extra: str) -> list[str | Path]:
    return ["publish", image.path, "--name", name, "--poll-interval", "0.1", *extra]


def test_unknown_regions_are_refused_before_lint(make_image: Callable[..., SparseImage], unique_name: str) -> None:
    image = make_image("pv")  # lint would fail it (exit 1, slowly): exit 2 at once proves nothing ran before
    home = imagekit(*publish_args(image, unique_name, "--region", "mars-1"), env=clean_env())
    assert one_error(home, 2).startswith("error: --region mars-1: not an EC2 region")
    copy = imagekit(*publish_args(image, unique_name, "--copy-to", "eu-west-1,eu-west-9"), env=clean_env())
    assert one_error(copy, 2).startswith("error: --copy-to eu-west-9: not an EC2 region")
    assert "hint: did you mean eu-west-1, eu-west-2 or eu-west-3?" in copy.stderr
    dry = imagekit(*publish_args(image, unique_name, "--region", "mars-1", "--dry-run"), env=clean_env())
    one_error(dry, 2)


def test_pv_copy_to_a_region_without_pvgrub_is_refused_before_upload(
    local_cloud: str, make_image: Callable[..., SparseImage], unique_name: str
) -> None:
    image = make_image("pv")
    proc = imagekit(*publish_args(image, unique_name, "--endpoint-url", local_cloud, "--copy-to", "eu-west-3"),
                    env=clean_env())
    assert one_error(proc, 2).startswith("error: --copy-to eu-west-3: no PV-GRUB AKI for x86_64 in eu-west-3")
    ec2 = boto3.client("ec2", endpoint_url=local_cloud, region_name="us-east-1")
    assert not ec2.describe_snapshots(Filters=[{"Name": "tag:imagekit:name", "Values": [unique_name]}])["Snapshots"]


def test_missing_credentials_are_refused_before_lint(
    local_cloud: str, make_image: Callable[..., SparseImage], unique_name: str, tmp_path: Path
) -> None:
    (tmp_path / "config").write_text("")
    (tmp_path / "credentials").write_text("")
    env = {k: v for k, v in clean_env().items() if k not in {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}}
    env |= {"AWS_CONFIG_FILE": str(tmp_path / "config"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials")}
    proc = imagekit(*publish_args(make_image("pv"), unique_name, "--endpoint-url", local_cloud), env=env)
    line = one_error(proc, 2)
    assert line.startswith("error: sts GetCallerIdentity in us-east-1: no AWS credentials"), line
    assert "aws configure" in proc.stderr


def test_unknown_profile(make_image: Callable[..., SparseImage], unique_name: str, tmp_path: Path) -> None:
    (tmp_path / "config").write_text("[profile dev]\nregion = eu-west-1\n")
    env = clean_env(AWS_CONFIG_FILE=str(tmp_path / "config"))
    image = make_image("pv")
    proc = imagekit(*publish_args(image, unique_name, "--profile", "nosuch"), env=env)
    assert one_error(proc, 2).startswith(f"error: --profile nosuch: no such AWS profile in {tmp_path / 'config'}")
    assert "aws configure list-profiles" in proc.stderr


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_endpoint(make_image: Callable[..., SparseImage], unique_name: str) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    proc = imagekit(*publish_args(make_image("pv"), unique_name, "--endpoint-url", url), env=clean_env())
    line = one_error(proc, 1)
    assert line.startswith(f"error: sts GetCallerIdentity in us-east-1: cannot connect to {url}"), line
    assert "is `imagekit local-cloud` running?" in proc.stderr


def test_unknown_kernel_id_is_invalid_amiid(
    local_cloud: str, make_image: Callable[..., SparseImage], unique_name: str
) -> None:
    image = make_image("pv")
    proc = imagekit(*publish_args(image, unique_name, "--endpoint-url", local_cloud, "--no-lint",
                                  "--kernel-id", "aki-0123abcd"), env=clean_env())
    line = one_error(proc, 2)
    assert line.startswith("error: ec2 DescribeImages ImageIds=aki-0123abcd in us-east-1: InvalidAMIID.NotFound"), line
    assert "check the id, --region and --profile" in proc.stderr


@pytest.fixture(scope="module")
def guarded_cloud() -> Iterator[tuple[str, dict[str, str]]]:
    """local-cloud with IAM enforced after 3 calls, and the keys of a user allowed sts:GetCallerIdentity only."""
    env = {**clean_env(), "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    with serve_local_cloud(env) as url:
        iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1", aws_access_key_id="admin",
                           aws_secret_access_key="admin")
        iam.create_user(UserName="publisher")
        key = iam.create_access_key(UserName="publisher")["AccessKey"]
        policy = {"Version": "2012-10-17",
                  "Statement": [{"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"}]}
        iam.put_user_policy(UserName="publisher", PolicyName="sts-only", PolicyDocument=json.dumps(policy))
        yield url, {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def test_access_denied(guarded_cloud: tuple[str, dict[str, str]], make_image: Callable[..., SparseImage],
                       unique_name: str) -> None:
    url, keys = guarded_cloud
    proc = imagekit(*publish_args(make_image("pv"), unique_name, "--endpoint-url", url, "--no-lint"),
                    env=clean_env(**keys))
    line = one_error(proc, 1)
    assert line.startswith(f"error: ec2 DescribeImages name={unique_name} in us-east-1: AccessDenied: "), line
    assert "needs permission for ec2:DescribeImages" in proc.stderr


class Throttled(BaseHTTPRequestHandler):
    """Every request: 400 Throttling, the Query-protocol error body STS and EC2 send."""

    calls = 0

    def do_POST(self) -> None:
        type(self).calls += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = (b"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded"
                b"</Message></Error><RequestId>t</RequestId></ErrorResponse>")
        self.send_response(400)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.slow  # botocore backs off through its retries against a throttled cloud: ~11 s (README, Tests)
def test_throttling_that_outlives_the_retries(make_image: Callable[..., SparseImage], unique_name: str) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Throttled)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        proc = imagekit(*publish_args(make_image("pv"), unique_name, "--endpoint-url", url), env=clean_env())
    finally:
        server.shutdown()
        server.server_close()
    line = one_error(proc, 1)
    assert line == "error: sts GetCallerIdentity in us-east-1: Throttling: Rate exceeded (after 5 attempts)", line
    assert Throttled.calls == 5
    assert "re-run the same command" in proc.stderr


def test_unwritable_record_keeps_the_ami_ids(
    local_cloud: str, make_image: Callable[..., SparseImage], unique_name: str
) -> None:
    store = "/sys/imagekit-test/published.json" if os.geteuid() == 0 else "/proc/imagekit-test/published.json"
    proc = imagekit(*publish_args(make_image("pv"), unique_name, "--endpoint-url", local_cloud, "--no-lint",
                                  "--record", store), env=clean_env())
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith("us-east-1\tami-"), proc.stdout  # the AMI is published: its id is printed
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [errors[0]] and errors[0].startswith(
        f"error: publish record: cannot write {Path(store).parent}")
    assert "Traceback" not in proc.stderr and "nothing is uploaded again" in proc.stderr
