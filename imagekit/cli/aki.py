"""`imagekit aki`: the PV-GRUB AKI for a region, architecture and image layout."""

from __future__ import annotations

from dataclasses import asdict

import click

from imagekit.cli.common import PV_LAYOUTS, arch_choice, echo_json, layout_choice
from imagekit.pvgrub.aki import VERSIONS, Aki, find_aki, list_akis
from imagekit.util.errors import UsageError


def _row(aki: Aki) -> str:
    return f"{aki.region:<15} {aki.arch:<7} {aki.layout:<5} {aki.version:<5} {aki.id}"


@click.command("aki")
@click.option("--region", help="EC2 region, e.g. eu-west-1.")
@click.option("--arch", type=arch_choice(), default=None, help="Default: x86_64.")
@click.option("--layout", type=layout_choice(), default=None,
              help="hd0 (partitionless image, default) or hd00 (partitioned); HVM layouts need no AKI.")
@click.option("--version", "version", type=click.Choice(VERSIONS), default=None,
              help="PV-GRUB table; default: the newest with that layout (1.05 for hd0, 1.03 for hd00).")
@click.option("--list", "list_all", is_flag=True, help="List known AKIs (filtered by the options given).")
@click.option("--json", "json_output", is_flag=True, help="Print JSON.")
def command(region: str | None, arch: str | None, layout: str | None, version: str | None,
            list_all: bool, json_output: bool) -> None:
    """Print the PV-GRUB AKI id for REGION x ARCH x LAYOUT (seed 002's table and PV-GRUB 1.05).

    \b
    Example:
      imagekit aki --region eu-west-1 --layout hd00
      imagekit aki --list --arch i386
    """
    if layout is not None and layout not in PV_LAYOUTS:
        raise UsageError(f"--layout {layout}: an HVM layout boots its own GRUB 2 and needs no AKI",
                         hint=f"PV-GRUB AKIs are for {' and '.join(PV_LAYOUTS)} images")
    if list_all:
        rows = list_akis(region, arch, layout, version)
        if json_output:
            echo_json("aki-list", {"akis": [asdict(a) for a in rows]})
            return
        click.echo(f"{'REGION':<15} {'ARCH':<7} {'LAYOUT':<5} {'PVGRUB':<5} AKI")
        for aki in rows:
            click.echo(_row(aki))
        return
    if not region:
        raise click.UsageError("--region is required (or use --list)")
    aki = find_aki(region, arch or "x86_64", layout or "hd0", version)
    if json_output:
        echo_json("aki", asdict(aki))
    else:
        click.echo(aki.id)
