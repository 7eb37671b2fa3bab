"""The local cloud (`imagekit local-cloud`, a moto server) on 127.0.0.1, and small sparse test images.

The server runs as a subprocess for the whole session; tests reach it over HTTP with boto3.
Every test uses its own AMI name, so tests share the server without seeing each other's images.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from imagekit.image.blockmap import BlockMap
from imagekit.publish.aws import AwsClients

BLOCK = 524288
FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextlib.contextmanager
def serve_local_cloud(env: dict[str, str], *options: str) -> Iterator[str]:
    """Run `imagekit local-cloud --port 0 OPTIONS` with env; yields its endpoint URL; SIGTERM (then kill) at exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "imagekit", "local-cloud", "--port", "0", *options, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, "imagekit local-cloud printed nothing"
        yield str(json.loads(line)["endpoint_url"])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def local_cloud() -> Iterator[str]:
    """Start `imagekit local-cloud --port 0`; yields its endpoint URL."""
    env = {**os.environ, **FAKE_ENV, "IMAGEKIT_LOCALCLOUD_COPY_SECONDS": "0.5"}
    with serve_local_cloud(env, "--import-seconds", "1") as url:
        yield url


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_REGION"):
        monkeypatch.delenv(key, raising=False)
    for key, value in FAKE_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("IMAGEKIT_PUBLISHED", str(tmp_path / "published.json"))


@pytest.fixture
def clients(local_cloud: str) -> AwsClients:
    return AwsClients(endpoint_url=local_cloud)


@pytest.fixture
def unique_name() -> str:
    return f"imagekit-test-{uuid.uuid4().hex[:10]}"


@dataclass(frozen=True)
class SparseImage:
    path: Path
    size: int
    data_blocks: tuple[int, ...]  # indexes of the 512 KiB blocks that are not all zeros

    def block(self, index: int) -> bytes:
        with open(self.path, "rb") as fh:
            fh.seek(index * BLOCK)
            return fh.read(BLOCK).ljust(BLOCK, b"\0")


def write_image(
    path: Path,
    size: int,
    writes: dict[int, bytes],
    manifest: dict[str, Any] | None = None,
) -> SparseImage:
    """A sparse raw file of `size` bytes with `writes` (offset -> bytes); holes elsewhere."""
    with open(path, "wb") as fh:
        fh.truncate(size)
        for offset, data in writes.items():
            fh.seek(offset)
            fh.write(data)
    blocks = sorted(
        {
            i
            for off, data in writes.items()
            if any(data)
            for i in range(off // BLOCK, (off + len(data) - 1) // BLOCK + 1)
        }
    )
    image = SparseImage(path, size, tuple(i for i in blocks if any(_read(path, i))))
    if manifest is not None:
        info = {"path": str(path), "size": size, "allocated": os.stat(path).st_blocks * 512}
        path.with_name(path.name + ".manifest.json").write_text(json.dumps({**manifest, "image": info}))
    return image


def _read(path: Path, index: int) -> bytes:
    with open(path, "rb") as fh:
        fh.seek(index * BLOCK)
        return fh.read(BLOCK)


PV_MANIFEST = {"name": "t", "arch": "x86_64", "layout": "hd0", "virtualization": "paravirtual", "boot_mode": None}
HVM_MANIFEST = {"name": "t", "arch": "x86_64", "layout": "gpt-uefi", "virtualization": "hvm", "boot_mode": "uefi"}


@pytest.fixture
def make_image(tmp_path: Path) -> Callable[..., SparseImage]:
    """make_image(kind="pv"|"hvm"|None, size=...) -> SparseImage with data in a few blocks, the rest holes."""

    def make(kind: str | None = "pv", size: int = 24 * 2**20 + 4096, name: str = "img.raw") -> SparseImage:
        seed = uuid.uuid4().bytes  # different content per image: different image id
        writes = {
            0: seed * 64,  # block 0
            1080: b"\x53\xef",  # ext superblock magic, in block 0
            3 * BLOCK + 7: os.urandom(BLOCK),  # straddles blocks 3 and 4
            9 * BLOCK: bytes(BLOCK),  # explicitly written zeros: allocated, still skipped
            size - 100: b"tail" * 25,  # the last, partial block
        }
        manifest = {"pv": PV_MANIFEST, "hvm": HVM_MANIFEST}.get(kind or "")
        return write_image(tmp_path / name, size, writes, manifest)

    return make


class Recorder:
    """botocore event hooks: the API parameters of every call, by operation name."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def attach(self, client: Any) -> None:
        client.meta.events.register("provide-client-params.*.*", self._record)

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls.append((model.name, dict(params)))

    def of(self, operation: str) -> list[dict[str, Any]]:
        return [p for name, p in self.calls if name == operation]

    def names(self) -> set[str]:
        return {name for name, _ in self.calls}


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def recorded_clients(local_cloud: str, recorder: Recorder) -> AwsClients:
    return AwsClients(endpoint_url=local_cloud, hooks=[recorder.attach])


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


def fake_response(request: Any, status: int, body: bytes, headers: dict[str, str]) -> Any:
    """A response returned from a `before-send` hook: the request never leaves the process."""
    from botocore.awsrequest import AWSResponse

    return AWSResponse(request.url, status, headers, _Raw(body))


def json_error(request: Any, status: int, code: str, message: str = "injected by the test") -> Any:
    body = json.dumps({"message": message}).encode()
    return fake_response(request, status, body, {"x-amzn-ErrorType": code, "Content-Type": "application/json"})


def xml_error(request: Any, status: int, code: str, message: str = "injected by the test") -> Any:
    """An error in S3's shape (a bare <Error>)."""
    body = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()
    return fake_response(request, status, body, {"Content-Type": "application/xml"})


def ec2_error(request: Any, status: int, code: str, message: str = "injected by the test") -> Any:
    """An error in EC2's query-protocol shape (<Response><Errors><Error>...): botocore reads S3's shape from
    EC2 as code "Unknown"."""
    body = (f"<?xml version='1.0' encoding='UTF-8'?><Response><Errors><Error><Code>{code}</Code>"
            f"<Message>{message}</Message></Error></Errors><RequestID>test-request</RequestID></Response>").encode()
    return fake_response(request, status, body, {"Content-Type": "text/xml"})


def block_index_of(request: Any) -> int | None:
    """The BlockIndex of a PutSnapshotBlock request (PUT /snapshots/<id>/blocks/<index>)."""
    from urllib.parse import urlparse

    parts = urlparse(request.url).path.strip("/").split("/")
    if request.method == "PUT" and len(parts) == 4 and parts[2] == "blocks":
        return int(parts[3])
    return None


__all__ = ["Recorder", "SparseImage", "block_index_of", "ec2_error", "json_error", "xml_error"]


def independent_block_map(path: Path) -> dict[int, bytes]:
    """The image's non-zero 512 KiB blocks and their SHA-256, by a plain read (not imagekit's reader)."""
    data = path.read_bytes()
    blocks = {}
    for i in range(0, len(data), BLOCK):
        block = data[i : i + BLOCK].ljust(BLOCK, b"\0")
        if any(block):
            blocks[i // BLOCK] = hashlib.sha256(block).digest()
    return blocks


def stamp_manifest(image: SparseImage, record: str = "block_map") -> str:
    """Record what the image's bytes are in its manifest, as `imagekit build` does (`block_map`: the block
    map and image id) or as builds before block maps did (`sha256`: the whole-file sha256 only). Returns the
    image id, the value publish tags with."""
    blocks = independent_block_map(image.path)
    mapped = BlockMap(image.size, blocks)
    manifest = image.path.with_name(image.path.name + ".manifest.json")
    data = json.loads(manifest.read_text())
    if record == "sha256":
        data["image"]["sha256"] = hashlib.sha256(image.path.read_bytes()).hexdigest()
    else:
        data["image"]["id"] = mapped.image_id
        data["image"]["block_map"] = {
            "block_size": BLOCK, "algorithm": "SHA256", "aggregation": "LINEAR",
            "blocks": [[i, base64.b64encode(blocks[i]).decode()] for i in sorted(blocks)],
        }
    manifest.write_text(json.dumps(data))
    return mapped.image_id
