"""A release (issue 18): one recipe's images for x86_64 and arm64 published by one `imagekit publish` under one
name template, against the local cloud (moto over HTTP): each AMI registered with its own manifest's
architecture, one JSON document listing both, a record per AMI naming the release, a re-run that makes
nothing new, and the refusals before any call."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import boto3
from click.testing import CliRunner

from imagekit.cli import cli
from tests.publish.conftest import BLOCK, write_image
from tests.util import run_imagekit

MANIFESTS = {arch: {"name": "t", "arch": arch, "layout": "gpt-uefi", "virtualization": "hvm", "boot_mode": "uefi"}
             for arch in ("x86_64", "arm64")}


def images(tmp_path: Path, *arches: str) -> list[Path]:
    out = []
    for n, arch in enumerate(arches):
        writes = {0: uuid.uuid4().bytes * 64, 1080: b"\x53\xef", (3 + n) * BLOCK: arch.encode() * 100}
        out.append(write_image(tmp_path / f"{arch}-{n}.img", 24 * 2**20, writes, MANIFESTS[arch]).path)
    return out


def publish(*args: Any) -> Any:
    return CliRunner().invoke(cli, ["publish", *map(str, args)], catch_exceptions=False)


def test_one_release_publishes_each_arch_under_its_name(tmp_path: Path, local_cloud: str, unique_name: str) -> None:
    x86, arm = images(tmp_path, "x86_64", "arm64")
    args = [x86, arm, "--name", unique_name + "-{arch}", "--endpoint-url", local_cloud, "--region", "us-east-1",
            "--poll-interval", "0.1", "--no-lint", "--json"]
    done = publish(*args)
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    assert (doc["schema"], doc["release"]) == ("imagekit.publish-release/1", unique_name + "-{arch}")
    assert [r["name"] for r in doc["images"]] == [unique_name + "-x86_64", unique_name + "-arm64"]
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=local_cloud)
    for record, arch in zip(doc["images"], ("x86_64", "arm64"), strict=True):
        ami = record["regions"]["us-east-1"]["image_id"]
        [kept] = ec2.describe_images(ImageIds=[ami])["Images"]
        assert (kept["Name"], kept["Architecture"], kept["BootMode"], kept["EnaSupport"]) == (
            record["name"], arch, "uefi", True)
    for image, record in zip((x86, arm), doc["images"], strict=True):
        beside = json.loads(image.with_name(image.name + ".publish.json").read_text())
        assert beside["release"] == unique_name + "-{arch}" and beside["name"] == record["name"]

    again = publish(*args)  # idempotent by name: nothing new in either
    assert again.exit_code == 0, again.output
    assert [{r["how"] for r in rec["regions"].values()} for rec in json.loads(again.stdout)["images"]] == [
        {"existing"}, {"existing"}]


def test_the_dry_run_shows_each_images_calls(tmp_path: Path) -> None:
    x86, arm = images(tmp_path, "x86_64", "arm64")
    done = publish(x86, arm, "--name", "rel-{arch}-1", "--region", "us-east-1", "--no-lint", "--dry-run", "--json")
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    assert doc["schema"] == "imagekit.publish-release-dry-run/1"
    registered = [[c["params"] for c in img["calls"] if c["operation"] == "register_image"] for img in doc["images"]]
    assert [[(p["Name"], p["Architecture"], p["BootMode"]) for p in r] for r in registered] == [
        [("rel-x86_64-1", "x86_64", "uefi")], [("rel-arm64-1", "arm64", "uefi")]]


def test_a_release_is_refused_before_any_call(tmp_path: Path) -> None:
    x86, arm = images(tmp_path, "x86_64", "arm64")
    (tmp_path / "o").mkdir()
    [other] = images(tmp_path / "o", "x86_64")
    cases = [([x86, arm, "--name", "rel-1"], "must contain {arch} (two AMIs cannot share a name)"),
             ([x86, other, "--name", "rel-{arch}"], "images 1 and 2 are both x86_64"),
             ([x86, arm, "--name", "rel-{arch}", "--arch", "arm64"], "--arch: not with several IMAGEs")]
    for args, why in cases:  # as a user runs it: one line, exit 2, no traceback, nothing sent (--dry-run aside)
        proc = run_imagekit("publish", *args, "--region", "us-east-1", "--dry-run")
        assert proc.returncode == 2 and proc.stdout == "", proc.stderr
        assert proc.stderr.startswith("error: ") and why in proc.stderr and "Traceback" not in proc.stderr


def test_one_image_takes_its_arch_into_the_name(tmp_path: Path) -> None:
    [arm] = images(tmp_path, "arm64")
    done = publish(arm, "--name", "one-{arch}", "--region", "us-east-1", "--no-lint", "--dry-run", "--json")
    assert done.exit_code == 0, done.output
    calls = json.loads(done.stdout)["calls"]
    assert [c["params"]["Name"] for c in calls if c["operation"] == "register_image"] == ["one-arm64"]
