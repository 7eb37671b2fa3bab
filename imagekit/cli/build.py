"""`imagekit build RECIPE -o IMAGE`: assemble a raw EC2 disk image from a recipe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from imagekit.cli.common import arch_choice, layout_choice

if TYPE_CHECKING:
    from imagekit.recipe.model import Recipe


@click.command("build")
@click.argument("recipe", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Image file to write, raw (default: out/<recipe name>.img). A .qcow2 name is refused.")
@click.option("--force", is_flag=True, help="Replace IMAGE (and its manifest) if it exists.")
@click.option("--layout", type=layout_choice(), default=None,
              help="Build this layout instead of the recipe's (e.g. an HVM image from a PV recipe; the cached "
                   "bootstrap is shared).")
@click.option("--arch", type=arch_choice(), default=None,
              help="Build for this architecture instead of the recipe's (x86_64, arm64; one recipe for both images "
                   "of a release), checked as the recipe's arch key is. A recipe naming its architecture's default "
                   "kernel profile gets the other's (debian-cloud-amd64 <-> debian-cloud-arm64).")
@click.option("--kernels-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              envvar="IMAGEKIT_KERNELS_DIR", show_envvar=True,
              help="Look for the recipe's kernel profile (NAME.toml) here first, then in a kernels/ directory "
                   "beside the recipe (or its parent), then among the profiles shipped with imagekit.")
@click.option("--no-lint", is_flag=True, help="Do not lint the image at the end (lint errors fail a build).")
@click.option("--json", "json_output", is_flag=True, help="Print the build manifest as JSON on stdout; no progress.")
def command(recipe: Path, output: Path | None, force: bool, layout: str | None, arch: str | None,
            kernels_dir: Path | None, no_lint: bool, json_output: bool) -> None:
    """Build a raw disk image from RECIPE (a TOML file in recipes/).

    Writes the image and, beside it, IMAGE.manifest.json saying what went in. Respects
    SOURCE_DATE_EPOCH (reproducible IDs and timestamps) and IMAGEKIT_CACHE_DIR (bootstrap cache).

    \b
    Example:
      imagekit build recipes/debian-12-pvgrub-hd0.toml -o out/debian-12-pvgrub-hd0.img
      imagekit build recipes/debian-12-pvgrub-hd00.toml --layout gpt-hybrid -o out/hvm.img --force
      imagekit build recipes/debian-12-hvm-uefi.toml --arch arm64 -o out/arm64.img
    """
    from imagekit.build import build_image
    from imagekit.cli.common import check_output
    from imagekit.recipe.load import load_recipe
    from imagekit.util.progress import Progress

    if output is not None:
        check_output(output, force, disk=True)  # before the recipe's bootstrap: minutes saved
    original = load_recipe(recipe, kernels_dir=kernels_dir)
    loaded = with_options(original, layout, arch)
    if output is None:  # another arch's image of the recipe gets its own default name
        suffix = f"-{loaded.arch.value}" if loaded.arch is not original.arch else ""
        output = Path("out") / f"{loaded.name}{suffix}.img"
        check_output(output, force, disk=True)
    progress = Progress.for_cli(json_output)
    result = build_image(loaded, output, progress, lint=not no_lint)
    if json_output:
        click.echo(json.dumps(result.manifest.document(), indent=2))  # IMAGE.manifest.json's document
        return
    facts = result.manifest.image
    assert facts is not None and facts.size is not None and facts.allocated is not None and facts.id is not None
    click.echo(f"{result.image}")
    progress.info(f"{facts.size >> 20} MiB image, {facts.allocated >> 20} MiB allocated, "
                  f"image id {facts.id[:16]}..., manifest {result.manifest_path}")


def with_options(recipe: Recipe, layout: str | None, arch: str | None) -> Recipe:
    """The recipe with --layout and --arch applied, checked as its keys are; a refusal names the option(s) and
    the recipe key (`--arch arm64: recipes/x.toml: layout: hd0 is a PV-GRUB (Xen PV) layout: ...`)."""
    from imagekit.build import load_checked_profile
    from imagekit.recipe.arch import Arch
    from imagekit.recipe.model import Layout
    from imagekit.util.errors import RecipeError, UsageError

    if layout is None and arch is None:
        return recipe
    given = " ".join(f"{opt} {value}" for opt, value in (("--arch", arch), ("--layout", layout)) if value)
    try:
        changed = recipe.with_build_options(layout=Layout(layout) if layout else None,
                                            arch=Arch(arch) if arch else None)
        if arch is not None:
            load_checked_profile(changed)  # a profile the recipe names for the other architecture
    except RecipeError as exc:
        raise UsageError(f"{given}: {exc.message}", hint=exc.hint or arch_hint(exc.key, arch)) from None
    return changed


def arch_hint(key: str | None, arch: str | None) -> str | None:
    from imagekit.recipe.arch import ARCHES, Arch

    if arch is None or ARCHES[Arch(arch)].refused:
        return None
    spec = ARCHES[Arch(arch)]
    if key == "layout":
        return f"add --layout {' or '.join(sorted(spec.layouts))} (the layouts {arch} boots)"
    if key == "kernel.profile":
        return f"name an {arch} profile in the recipe's kernel.profile (e.g. {spec.profile})"
    return None
