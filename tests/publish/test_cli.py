"""`imagekit publish`, `imagekit published` and `--dry-run` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from imagekit.cli import cli
from tests.publish.conftest import SparseImage


def run(*args: str | Path) -> Any:
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result


def test_publish_then_query(
    local_cloud: str, make_image: Callable[..., SparseImage], unique_name: str, tmp_path: Path
) -> None:
    image = make_image("pv")
    args = [
        "publish",
        image.path,
        "--name",
        unique_name,
        "--endpoint-url",
        local_cloud,
        "--poll-interval",
        "0.1",
        "--no-lint",
    ]
    result = run(*args, "--copy-to", "us-west-2", "--tag", "team=images")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["us-east-1", "us-west-2"]
    assert all(line.split("\t")[1].startswith("ami-") for line in lines)

    record = json.loads((image.path.parent / "img.raw.publish.json").read_text())
    assert record["name"] == unique_name
    assert record["manifest"]["path"].endswith("img.raw.manifest.json")
    assert record["upload"]["blocks_sent"] == len(image.data_blocks)

    again = run(*args, "--json")
    assert again.exit_code == 0, again.output
    assert {r["how"] for r in json.loads(again.stdout)["regions"].values()} == {"existing"}

    listed = run("published", "--name", "imagekit-test-*")
    assert listed.exit_code == 0, listed.output
    rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert {(r[0], r[1]) for r in rows} == {(unique_name, "us-east-1"), (unique_name, "us-west-2")}
    assert json.loads(run("published", "--name", "nothing-*", "--json").stdout) == {
        "schema": "imagekit.published/1", "records": []}
    only_west = json.loads(run("published", "--region", "us-west-2", "--json").stdout)["records"]
    assert [e["name"] for e in only_west] == [unique_name]


def test_dry_run_prints_json_with_a_schema(make_image: Callable[..., SparseImage], unique_name: str) -> None:
    """Issue 15 item 9: --json holds for --dry-run too: the calls it would make, as JSON."""
    image = make_image("pv")
    result = run("publish", image.path, "--name", unique_name, "--dry-run", "--json", "--no-lint")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["schema"] == "imagekit.publish-dry-run/1"
    operations = [c["operation"] for c in doc["calls"]]
    assert "start_snapshot" in operations and "register_image" in operations
    blocks = [c for c in doc["calls"] if c["operation"] == "put_snapshot_block"]
    assert len(blocks) == 1 and blocks[0]["count"] == len(image.data_blocks)


def test_dry_run_prints_every_call_and_sends_none(make_image: Callable[..., SparseImage], unique_name: str) -> None:
    image = make_image("hvm")
    result = run(
        "publish", image.path, "--name", unique_name, "--dry-run", "--copy-to", "eu-west-1", "--public", "--no-lint"
    )
    assert result.exit_code == 0, result.output
    ops = [line.split(" ")[0] for line in result.stdout.splitlines()]
    assert ops == [
        "sts.get_caller_identity[us-east-1]",  # the credentials, before anything else
        "ec2.describe_images[us-east-1]",
        "ec2.describe_snapshots[us-east-1]",
        "ebs.start_snapshot[us-east-1]",
        "ebs.put_snapshot_block[us-east-1]",
        "ebs.complete_snapshot[us-east-1]",
        "ec2.describe_snapshots[us-east-1]",
        "ec2.create_tags[us-east-1]",
        "ec2.register_image[us-east-1]",
        "ec2.create_tags[us-east-1]",
        "ec2.modify_image_attribute[us-east-1]",
        "ec2.modify_snapshot_attribute[us-east-1]",
        "ec2.describe_images[us-east-1]",
        "ec2.describe_images[eu-west-1]",
        "ec2.copy_image[eu-west-1]",
        "ec2.describe_images[eu-west-1]",
        "ec2.create_tags[eu-west-1]",
        "ec2.modify_image_attribute[eu-west-1]",
        "ec2.modify_snapshot_attribute[eu-west-1]",
    ]
    blocks = next(line for line in result.stdout.splitlines() if "put_snapshot_block" in line)
    assert f"x{len(image.data_blocks)} " in blocks
    assert "BlockIndex=0,3-4,48" in blocks
    assert not (image.path.parent / "img.raw.publish.json").exists()


def imagekit(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imagekit", *map(str, args)], capture_output=True, text=True, timeout=300
    )


def test_user_errors_are_one_line_with_exit_2(make_image: Callable[..., SparseImage], tmp_path: Path) -> None:
    image = make_image("pv")
    cases = {
        ("--name", "x"): "--name 'x': an AMI name is 3-128 characters",
        ("--name", "good-name", "--tag", "novalue"): "--tag 'novalue': expected KEY=VALUE",
        ("--name", "good-name", "--ena"): "--ena is for HVM images",
        ("--name", "good-name", "--method", "import-snapshot"): "--method import-snapshot needs --bucket",
        ("--name", "good-name", "--share-with", "12"): "--share-with '12': an AWS account id is 12 digits",
    }
    for extra, message in cases.items():
        proc = imagekit("publish", image.path, "--dry-run", *extra)
        assert proc.returncode == 2, (extra, proc.stderr)
        assert proc.stderr.startswith(f"error: {message}"), proc.stderr
        assert "Traceback" not in proc.stderr
    missing = imagekit("publish", tmp_path / "nope.raw", "--name", "good-name", "--dry-run")
    assert missing.returncode == 2 and "no such image file" in missing.stderr


@pytest.mark.slow
def test_lint_errors_stop_the_publish_before_any_call(make_image: Callable[..., SparseImage]) -> None:
    image = make_image("pv")  # a superblock magic and random bytes: no menu.lst anywhere
    proc = imagekit("publish", image.path, "--name", "good-name", "--dry-run")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("AWS: region us-east-1 (AWS_DEFAULT_REGION), profile default\nerror: lint found")
    assert "--no-lint publishes anyway" in proc.stderr
    assert proc.stdout == ""  # not one call printed


def test_the_method_choices_are_the_uploaders_table() -> None:
    """--method offers what publish/uploaders.py registers, and each name makes the uploader of that name."""
    from imagekit.cli.publish import command
    from imagekit.publish.uploaders import UPLOADERS, ImportSnapshot

    option = next(p for p in command.params if p.name == "method")
    assert isinstance(option.type, click.Choice)
    assert list(option.type.choices) == list(UPLOADERS) == ["ebs-direct", "import-snapshot"]
    opts = {"bucket": "b", "workers": 4, "s3_prefix": "p", "keep_s3_object": True, "role_name": "r"}
    assert [UPLOADERS[name](opts).method for name in UPLOADERS] == list(UPLOADERS)
    assert UPLOADERS["import-snapshot"](opts) == ImportSnapshot("b", "p", True, "r")
