"""`imagekit diff A B`: what differs between two images or two build manifests."""

from __future__ import annotations

import dataclasses
import difflib
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
    Exit 0 when they are the same, 1 when they differ.

    \b
    Example:
      imagekit diff out/old.img out/new.img
      imagekit diff out/old.img.manifest.json out/new.img.manifest.json --json
    """
    from imagekit.util.appliance import check_image_file

    if ".json" not in (a.suffix, b.suffix):  # two build manifests, or a mix diff refuses itself
        for name, path in (("A", a), ("B", b)):
            check_image_file(path, name, fmt)
    from imagekit.cli.common import echo_json
    from imagekit.diff import diff
    from imagekit.util.progress import Progress

    changes = diff(a, b, Progress.for_cli(json_output), fmt, reader)
    if json_output:
        echo_json("diff", {"a": str(a), "b": str(b), "same": not changes,
                           "changes": [dataclasses.asdict(c) for c in changes]})
    else:
        for c in changes:
            click.echo(c.line())
            if c.kind == "boot":
                for line in difflib.unified_diff((c.old or "").splitlines(), (c.new or "").splitlines(),
                                                 str(a), str(b), lineterm="", n=1):
                    click.echo(f"    {line}")
    raise SystemExit(1 if changes else 0)
