"""`imagekit build RECIPE -o IMAGE`: assemble a raw EC2 disk image from a recipe."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("build")
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Image file to write (default: out/<recipe name>.img).")
@click.option("--layout", type=click.Choice(["hd0", "hd00", "mbr-bios", "gpt-uefi", "gpt-hybrid"]), default=None,
              help="Build this layout instead of the recipe's (e.g. an HVM image from a PV recipe; the cached "
                   "bootstrap is shared).")
@click.option("--kernels-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              envvar="IMAGEKIT_KERNELS_DIR", show_envvar=True,
              help="Look for the recipe's kernel profile (NAME.toml) here first, then in a kernels/ directory "
                   "beside the recipe (or its parent), then among the profiles shipped with imagekit.")
@click.option("--no-lint", is_flag=True, help="Do not lint the image at the end (lint errors fail a build).")
@click.option("--json", "json_output", is_flag=True, help="Print the build manifest as JSON on stdout; no progress.")
def command(recipe: Path, output: Path | None, layout: str | None, kernels_dir: Path | None, no_lint: bool,
            json_output: bool) -> None:
    """Build a raw disk image from RECIPE (a TOML file in recipes/).

    Writes the image and, beside it, IMAGE.manifest.json saying what went in. Respects
    SOURCE_DATE_EPOCH (reproducible IDs and timestamps) and IMAGEKIT_CACHE_DIR (bootstrap cache).
    """
    from imagekit.build import build_image
    from imagekit.errors import RecipeError, UsageError
    from imagekit.progress import Progress
    from imagekit.recipe import Layout, load_recipe

    loaded = load_recipe(recipe, kernels_dir=kernels_dir)
    if layout is not None:
        try:
            loaded = loaded.with_layout(Layout(layout))
        except RecipeError as exc:
            raise UsageError(f"--layout {layout}: {exc.message}", hint=exc.hint) from None
    output = output or Path("out") / f"{loaded.name}.img"
    progress = Progress.for_cli(json_output)
    result = build_image(loaded, output, progress, lint=not no_lint)
    if json_output:
        click.echo(json.dumps(result.manifest, indent=2))
        return
    facts = result.manifest["image"]
    click.echo(f"{result.image}")
    progress.info(f"{facts['size'] >> 20} MiB image, {facts['allocated'] >> 20} MiB allocated, "
                  f"image id {facts['id'][:16]}..., manifest {result.manifest_path}")
