"""`imagekit local-cloud`: an offline AWS (moto, extended) to rehearse a publish against.

Prints the endpoint URL on stdout (or --json), then serves until SIGINT or SIGTERM (exit 0).
A port that cannot be bound is exit 2 at once.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

import click


@click.command("local-cloud")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=5000, show_default=True, help="Port (0 picks a free one).")
@click.option(
    "--import-seconds",
    type=float,
    default=3.0,
    show_default=True,
    envvar="IMAGEKIT_LOCALCLOUD_IMPORT_SECONDS",
    show_envvar=True,
    help="How long a local ImportSnapshot task takes (the flag beats the environment variable).",
)
@click.option("--log-requests", is_flag=True, help="Log every request on stderr.")
@click.option("--json", "json_output", is_flag=True, help='Print {"endpoint_url", "host", "port"} as JSON.')
def command(host: str, port: int, import_seconds: float, log_requests: bool, json_output: bool) -> None:
    """Serve S3, EBS direct, IAM and EC2 (with ImportSnapshot and a faithful RegisterImage) on HOST:PORT.

    \b
    Example:
      imagekit local-cloud --port 5000 &
      imagekit publish out/debian-12-pvgrub-hd0.img --name demo-1 --endpoint-url http://127.0.0.1:5000
    """
    import os

    from imagekit.cli.common import echo_json
    from imagekit.util.optional import require

    require("moto.server", needed_by="imagekit local-cloud")
    from imagekit.localcloud import serve

    os.environ["IMAGEKIT_LOCALCLOUD_IMPORT_SECONDS"] = str(import_seconds)  # read by the ImportSnapshot handler
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with serve(host, port, log_requests=log_requests) as cloud:
        if json_output:
            echo_json("local-cloud", {"endpoint_url": cloud.endpoint_url, "host": cloud.host, "port": cloud.port},
                      indent=None)  # one line: a script reads it while the server runs
        else:
            click.echo(cloud.endpoint_url)
        sys.stdout.flush()
        click.echo(f"local cloud on {cloud.endpoint_url} (any credentials; Ctrl-C to stop)", err=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
