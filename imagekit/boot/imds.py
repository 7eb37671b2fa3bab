"""A local EC2 instance metadata service for boot tests: one HTTP exchange on stdin/stdout.

QEMU's user networking runs a command per guest connection to a forwarded address
(`guestfwd=tcp:169.254.169.254:80-cmd:python -m imagekit.boot.imds CONFIG`), wired to the connection, so
the guest reaches http://169.254.169.254/ as on EC2 and this module answers one request and exits.
It speaks what bootstrap scripts and cloud-init's Ec2 datasource ask for:

- IMDSv2: `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds` gives a token; GETs
  carrying `X-aws-ec2-metadata-token` must carry that token (401 otherwise). IMDSv1 (no token) is
  answered unless the config says `require_token`.
- `/latest/user-data` (404 when there is none), `/latest/meta-data/` with instance-id, ami-id,
  hostname, local-hostname, local-ipv4, instance-type, placement/availability-zone and
  block-device-mapping/ (ami, root, ephemeral0, ebsN), listings ending in `/` as EC2 does.

Stateless between connections: the token is derived from the instance id. Every request is appended
to the config's log (method, path, status, bytes) for the boot report.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

MAX_HEADER = 16384
TTL_HEADER = "x-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "x-aws-ec2-metadata-token"


@dataclass(frozen=True)
class Config:
    instance_id: str = "i-0123456789abcdef0"
    ami_id: str = "ami-00000000000000000"
    hostname: str = "ip-169-254-0-15.ec2.internal"
    local_ipv4: str = "169.254.0.15"
    instance_type: str = "m3.medium"
    zone: str = "us-east-1a"
    user_data: str | None = None  # path of the user-data file
    block_devices: dict[str, str] = field(default_factory=lambda: {"ami": "sda1", "root": "/dev/sda1",
                                                                    "ephemeral0": "sdb"})
    require_token: bool = False
    log: str | None = None

    @classmethod
    def load(cls, path: Path) -> Config:
        return cls(**json.loads(path.read_text()))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.__dict__))

    @property
    def token(self) -> str:
        return hashlib.sha256(f"imagekit-imds:{self.instance_id}".encode()).hexdigest()


def meta_data(cfg: Config) -> dict[str, str]:
    """Every meta-data leaf, by path below /latest/meta-data/."""
    leaves = {
        "instance-id": cfg.instance_id, "ami-id": cfg.ami_id, "hostname": cfg.hostname,
        "local-hostname": cfg.hostname, "local-ipv4": cfg.local_ipv4, "instance-type": cfg.instance_type,
        "placement/availability-zone": cfg.zone, "ami-launch-index": "0",
    }
    for name, device in cfg.block_devices.items():
        leaves[f"block-device-mapping/{name}"] = device
    return leaves


def listing(leaves: dict[str, str], prefix: str) -> str | None:
    """The directory listing EC2 gives for `prefix` (children, subdirectories with a trailing /)."""
    children: list[str] = []
    for key in leaves:
        if not key.startswith(prefix):
            continue
        head, sep, _ = key[len(prefix):].partition("/")
        child = head + sep
        if child and child not in children:
            children.append(child)
    return "\n".join(children) if children else None


def answer(cfg: Config, method: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """(status, body) for one request."""
    path = path.split("?", 1)[0]
    if path == "/latest/api/token":
        if method != "PUT":
            return 405, b"method not allowed"
        ttl = headers.get(TTL_HEADER, "")
        if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            return 400, b"missing or invalid " + TTL_HEADER.encode()
        return 200, cfg.token.encode()
    if method != "GET":
        return 405, b"method not allowed"
    given = headers.get(TOKEN_HEADER)
    if (given is not None and given != cfg.token) or (given is None and cfg.require_token):
        return 401, b"unauthorized"
    if path in ("/latest/user-data", "/latest/user-data/"):
        if cfg.user_data is None:
            return 404, b"not found"
        return 200, Path(cfg.user_data).read_bytes()
    if path in ("/latest", "/latest/"):
        return 200, b"dynamic\nmeta-data/\nuser-data" if cfg.user_data else b"dynamic\nmeta-data/"
    prefix = "/latest/meta-data/"
    if path == prefix[:-1] or path.startswith(prefix):
        leaves = meta_data(cfg)
        key = path[len(prefix):]
        if key in leaves:
            return 200, leaves[key].encode()
        found = listing(leaves, key if key.endswith("/") or not key else key + "/")
        if found is not None:
            return 200, found.encode()
    return 404, b"not found"


def read_request(stream: BinaryIO) -> tuple[str, str, dict[str, str]] | None:
    """(method, path, lower-cased headers) of one HTTP request; None when the peer sent nothing usable."""
    head = b""
    while b"\r\n\r\n" not in head and b"\n\n" not in head and len(head) < MAX_HEADER:
        chunk = stream.readline(MAX_HEADER)
        if not chunk:
            break
        head += chunk
    lines = head.decode("latin-1").splitlines()
    if not lines or len(lines[0].split()) != 3:
        return None
    method, path, _ = lines[0].split()
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0") or 0)
    if 0 < length <= MAX_HEADER:
        stream.read(length)
    return method, path, headers


REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed"}


def serve_one(cfg: Config, rfile: BinaryIO, wfile: BinaryIO) -> None:
    request = read_request(rfile)
    if request is None:
        return
    method, path, headers = request
    status, body = answer(cfg, method, path, headers)
    wfile.write(f"HTTP/1.0 {status} {REASONS[status]}\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    wfile.flush()
    if cfg.log:
        with open(cfg.log, "a") as f:
            f.write(json.dumps({"t": round(time.time(), 3), "method": method, "path": path, "status": status,
                                "bytes": len(body), "token": TOKEN_HEADER in headers}) + "\n")


def read_log(path: Path) -> list[dict[str, object]]:
    """The requests the guest made, in order (for the boot report)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m imagekit.boot.imds CONFIG.json  (one HTTP exchange on stdin/stdout)", file=sys.stderr)
        return 2
    serve_one(Config.load(Path(args[0])), sys.stdin.buffer, sys.stdout.buffer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
