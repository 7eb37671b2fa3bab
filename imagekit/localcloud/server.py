"""Start moto's threaded server with imagekit's EC2 extensions applied."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from imagekit.util.errors import ImagekitError, UsageError

START_TIMEOUT = 30.0


@dataclass(frozen=True)
class LocalCloud:
    host: str
    port: int

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"


def install_extensions() -> None:
    """Patch moto's EC2 responder (idempotent)."""
    from imagekit.localcloud import ebs_state, ec2_images, ec2_imports, kernels

    ec2_images.install()
    ec2_imports.install()
    ebs_state.install()
    kernels.install()


def check_listenable(host: str, port: int) -> None:
    """Bind HOST:PORT once, as the server will (SO_REUSEADDR): a port in use is a usage error, not a hang.

    moto's ThreadedMotoServer binds in its thread; when that fails, werkzeug exits the thread and
    `start()` waits forever for a ready signal that never comes.
    """
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        raise UsageError(
            f"local-cloud: cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="another program (another local-cloud?) has the port: pass --port N, or --port 0 for a free one",
        ) from None


def start(server: Any, host: str, port: int) -> None:
    """server.start(), bounded: a server thread that dies before it is ready is an error, not a hang."""
    starter = threading.Thread(target=server.start, daemon=True, name="local-cloud-start")
    starter.start()
    starter.join(START_TIMEOUT)
    if starter.is_alive():
        raise ImagekitError(f"local-cloud: the server on {host}:{port} did not start in {START_TIMEOUT:.0f}s")


@contextmanager
def serve(host: str = "127.0.0.1", port: int = 0, log_requests: bool = False) -> Iterator[LocalCloud]:
    """Serve the local cloud until the block exits. port=0 picks a free port."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.INFO if log_requests else logging.ERROR)
    check_listenable(host, port)
    install_extensions()
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    start(server, host, port)
    try:
        bound_host, bound_port = server.get_host_and_port()
        yield LocalCloud(host=bound_host, port=bound_port)
    finally:
        server.stop()
