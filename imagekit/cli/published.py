"""`imagekit published`: what was published where, from the publish record."""

from __future__ import annotations

from pathlib import Path

import click

from imagekit.cli.common import record_option


@click.command("published")
@click.option("--name", help="AMI name glob, e.g. 'debian-12-*'.")
@click.option("--region", help="Only records with an image in this region.")
@record_option("Publish record (default ~/.local/share/imagekit/published.json).")
@click.option("--json", "json_output", is_flag=True, help="Print the matching records as JSON.")
def command(name: str | None, region: str | None, record_path: Path | None, json_output: bool) -> None:
    """List published AMIs: one line per region, `name region image-id snapshot-id published-at`.

    \b
    Example:
      imagekit published --name 'debian-12-*' --region eu-west-1
    """
    from imagekit.publish.record import default_store, query

    entries = query(record_path or default_store(), name, region)
    if json_output:
        from imagekit.cli.common import echo_json

        echo_json("published", {"records": entries}, sort_keys=True)
        return
    for entry in entries:
        for where, image in sorted(entry.get("regions", {}).items()):
            if region and where != region:
                continue
            snaps = ",".join(image.get("snapshot_ids", [])) or "-"
            click.echo(f"{entry['name']}\t{where}\t{image['image_id']}\t{snaps}\t{entry.get('published_at', '')}")
