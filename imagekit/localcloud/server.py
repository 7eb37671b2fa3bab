"""Start moto's threaded server with imagekit's EC2 extensions applied."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


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


@contextmanager
def serve(host: str = "127.0.0.1", port: int = 0, log_requests: bool = False) -> Iterator[LocalCloud]:
    """Serve the local cloud until the block exits. port=0 picks a free port."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.INFO if log_requests else logging.ERROR)
    install_extensions()
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    try:
        bound_host, bound_port = server.get_host_and_port()
        yield LocalCloud(host=bound_host, port=bound_port)
    finally:
        server.stop()
