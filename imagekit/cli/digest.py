"""`imagekit digest IMAGE`: the image's whole-file sha256 (as `sha256sum` prints it), its block map and id."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("digest")
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--json", "json_output", is_flag=True, help="Print the figures as JSON.")
def command(image: Path, json_output: bool) -> None:
    """Print IMAGE's sha256 as `sha256sum` does, then its image id and block map (the 512 KiB blocks that
    are not all zeros: what EBS direct uploads, and what the build manifest records), and whether the
    manifest beside it describes these bytes. Exit 1 when it does not.

    \b
    Example:
      imagekit digest out/debian-12-pvgrub-hd0.img
    """
    from imagekit.image.blockmap import block_count
    from imagekit.manifest import ImageRecord, load_manifest, manifest_path
    from imagekit.publish.digest import digest_image
    from imagekit.publish.facts import manifest_block_map
    from imagekit.util.errors import UsageError
    from imagekit.util.progress import Progress

    if not image.is_file():
        raise UsageError(f"IMAGE: {image} is not a file")
    progress = Progress.for_cli(json_output)
    digest = digest_image(image, progress, whole_sha256=True)
    manifest = manifest_path(image)
    verdict: str | None = None
    if manifest.is_file():
        info = load_manifest(manifest).image or ImageRecord()
        recorded = manifest_block_map(manifest, "image.block_map", digest.size, info.block_map)
        if recorded is None:
            verdict = "matches" if info.sha256 == digest.sha256 else "differs: image.sha256"
        else:
            difference = digest.block_map.first_difference(recorded)
            verdict = "matches" if difference is None else f"differs: {difference}"
    figures = {
        "schema": "imagekit.digest/1", "path": str(image), "size": digest.size, "sha256": digest.sha256,
        "id": digest.image_id, "data_blocks": len(digest.blocks), "blocks": block_count(digest.size),
        "aggregate": digest.linear_checksum, "manifest": None if verdict is None else {
            "path": str(manifest), "verdict": verdict},
    }
    if json_output:
        click.echo(json.dumps(figures, indent=2))
    else:
        click.echo(f"{digest.sha256}  {image}")
        click.echo(f"image id {digest.image_id}")
        click.echo(f"block map {len(digest.blocks)} of {block_count(digest.size)} blocks of 512 KiB hold data, "
                   f"LINEAR aggregate {digest.linear_checksum}")
        if verdict is not None:
            click.echo(f"manifest {manifest}: {verdict}")
    raise SystemExit(1 if verdict is not None and verdict != "matches" else 0)
