"""The local metadata service as QEMU's guestfwd runs it: a subprocess per connection, stdin/stdout
wired to a socket, spoken to by a real HTTP client (http.client over the other end of a socketpair)."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from imagekit.boot.imds import TOKEN_HEADER, TTL_HEADER, Config, read_log


def request(cfg_path: Path, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One connection: spawn the responder on one end of a socketpair, talk HTTP on the other."""
    ours, theirs = socket.socketpair()
    with theirs:
        proc = subprocess.Popen([sys.executable, "-m", "imagekit.boot.imds", cfg_path], stdin=theirs.fileno(),
                                stdout=theirs.fileno())
    try:
        conn = http.client.HTTPConnection("169.254.169.254")
        conn.sock = ours
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        ours.close()
        assert proc.wait(timeout=10) == 0


@pytest.fixture
def imds(tmp_path: Path) -> tuple[Path, Config]:
    user_data = tmp_path / "user-data"
    user_data.write_bytes(b"#!/bin/sh\necho hello from user-data\n")
    cfg = Config(user_data=str(user_data), log=str(tmp_path / "imds.log"),
                 block_devices={"ami": "sda1", "root": "/dev/sda1", "ephemeral0": "sdb", "ebs1": "sdh"})
    path = tmp_path / "imds.json"
    cfg.save(path)
    return path, cfg


def test_imdsv2_token_then_user_data(imds: tuple[Path, Config]) -> None:
    path, cfg = imds
    status, token = request(path, "PUT", "/latest/api/token", {TTL_HEADER: "300"})
    assert status == 200 and token.decode() == cfg.token
    assert request(path, "GET", "/latest/user-data", {TOKEN_HEADER: token.decode()}) == (
        200, b"#!/bin/sh\necho hello from user-data\n")
    assert request(path, "GET", "/latest/user-data", {TOKEN_HEADER: "wrong"})[0] == 401
    assert request(path, "GET", "/latest/user-data")[0] == 200  # IMDSv1 still answered
    assert request(path, "PUT", "/latest/api/token")[0] == 400  # no TTL header
    log = read_log(Path(str(cfg.log)))
    assert [(e["method"], e["path"], e["status"]) for e in log] == [
        ("PUT", "/latest/api/token", 200), ("GET", "/latest/user-data", 200), ("GET", "/latest/user-data", 401),
        ("GET", "/latest/user-data", 200), ("PUT", "/latest/api/token", 400)]


def test_meta_data_tree(imds: tuple[Path, Config], tmp_path: Path) -> None:
    path, cfg = imds
    status, body = request(path, "GET", "/latest/meta-data/")
    assert status == 200
    assert body.decode().splitlines() == ["instance-id", "ami-id", "hostname", "local-hostname", "local-ipv4",
                                          "instance-type", "placement/", "ami-launch-index", "block-device-mapping/"]
    assert request(path, "GET", "/latest/meta-data/block-device-mapping/") == (200, b"ami\nroot\nephemeral0\nebs1")
    assert request(path, "GET", "/latest/meta-data/block-device-mapping/ebs1") == (200, b"sdh")
    assert request(path, "GET", "/latest/meta-data/instance-id") == (200, cfg.instance_id.encode())
    assert request(path, "GET", "/latest/meta-data/nope")[0] == 404
    strict = tmp_path / "strict.json"
    Config(require_token=True).save(strict)
    assert request(strict, "GET", "/latest/meta-data/instance-id")[0] == 401
    assert request(strict, "GET", "/latest/user-data", {TOKEN_HEADER: Config().token})[0] == 404
