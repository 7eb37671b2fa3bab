"""`imagekit diff A B`: what differs between two images or two build manifests."""

from __future__ import annotations

import dataclasses
import difflib
import json
from pathlib import Path

import click


@click.command("diff")
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["raw", "qcow2"]), default=None,
              help="How to read images A and B: raw (what imagekit builds) or qcow2 (without a backing or data "
                   "file). Default: raw, and a file that starts with a qcow2 header is refused: say which it is.")
@click.option("--reader", type=click.Choice(["auto", "native", "guestfs"]), default="auto", show_default=True,
              help="How to read images: native (in this process, no appliance), guestfs (a libguestfs appliance), "
                   "auto (native, and libguestfs for what it cannot open: LVM, qcow2...; said on stderr).")
@click.option("--json", "json_output", is_flag=True, help="Print the changes as JSON.")
def command(a: Path, b: Path, fmt: str | None, reader: str, json_output: bool) -> None:
    """Packages added, removed and changed (with versions), files changed (with sizes) and boot
    configuration (menu.lst, fstab, kernel command line) between images A and B, or manifests A and B.
    Exit 0 when they are the same, 1 when they differ."""
    from imagekit.diff import diff
    from imagekit.progress import Progress

    changes = diff(a, b, Progress.for_cli(json_output), fmt, reader)
    if json_output:
        click.echo(json.dumps([dataclasses.asdict(c) for c in changes], indent=2))
    else:
        for c in changes:
            click.echo(c.line())
            if c.kind == "boot":
                for line in difflib.unified_diff((c.old or "").splitlines(), (c.new or "").splitlines(),
                                                 str(a), str(b), lineterm="", n=1):
                    click.echo(f"    {line}")
    raise SystemExit(1 if changes else 0)
