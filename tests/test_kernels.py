"""Kernel profiles: the search path (--kernels-dir, kernels/ beside the recipe, the shipped ones) and its errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from imagekit.recipe.kernel_profiles import PACKAGED_DIR, find_profile, load_profile, search_path
from imagekit.recipe.load import load_recipe
from imagekit.util.errors import RecipeError
from tests.util import REPO, run_imagekit

RECIPE = """\
name = "t"
size = "1G"
layout = "hd0"
[rootfs]
source = "bootstrap"
[kernel]
profile = "{profile}"
"""


def write_recipe(directory: Path, profile: str = "debian-cloud-amd64") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "r.toml"
    path.write_text(RECIPE.format(profile=profile))
    return path


def copy_profile(directory: Path, description: str, name: str = "debian-cloud-amd64") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    text = (REPO / "kernels" / "debian-cloud-amd64.toml").read_text()
    text = text.replace('name = "debian-cloud-amd64"', f'name = "{name}"')
    path = directory / f"{name}.toml"
    path.write_text(re.sub(r"^description = .*$", f'description = "{description}"', text, flags=re.M))
    return path


def test_packaged_profiles_are_the_top_level_kernels_dir() -> None:
    assert PACKAGED_DIR.resolve() == (REPO / "kernels").resolve()
    assert {p.name for p in PACKAGED_DIR.glob("*.toml")} == {p.name for p in (REPO / "kernels").glob("*.toml")}


def test_a_recipe_anywhere_finds_the_shipped_profile(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "a" / "b")
    assert find_profile("debian-cloud-amd64", recipe_path=recipe) == PACKAGED_DIR / "debian-cloud-amd64.toml"


@pytest.mark.parametrize("beside", ["kernels", "../kernels"])
def test_kernels_beside_the_recipe_beat_the_shipped_ones(tmp_path: Path, beside: str) -> None:
    recipe = write_recipe(tmp_path / "project" / "recipes")
    copy_profile(recipe.parent / beside, "beside")
    assert load_profile("debian-cloud-amd64", recipe_path=recipe).description == "beside"


def test_kernels_dir_beats_beside_the_recipe(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "recipes")
    copy_profile(tmp_path / "kernels", "beside")
    copy_profile(tmp_path / "mine", "mine")
    assert load_profile("debian-cloud-amd64", recipe_path=recipe, kernels_dir=tmp_path / "mine").description == "mine"
    assert search_path(recipe, tmp_path / "mine") == [tmp_path / "mine", tmp_path / "kernels", PACKAGED_DIR]


def test_kernels_dir_falls_through_to_the_shipped_profiles(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path)
    copy_profile(tmp_path / "mine", "mine", name="my-kernel")
    assert load_recipe(recipe, kernels_dir=tmp_path / "mine").kernels_dir == tmp_path / "mine"


def test_a_missing_profile_names_every_place_looked(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "recipes", profile="no-such-kernel")
    copy_profile(tmp_path / "kernels", "beside", name="local-kernel")
    (tmp_path / "mine").mkdir()
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe, kernels_dir=tmp_path / "mine")
    message = info.value.message
    assert message.startswith(f"{recipe}: kernel.profile: no kernel profile 'no-such-kernel' (looked in "
                              f"{tmp_path / 'mine'}, {tmp_path / 'kernels'}, {PACKAGED_DIR}; known: ")
    assert "debian-cloud-amd64" in message and "local-kernel" in message
    assert "--kernels-dir" in (info.value.hint or "")


def test_kernels_dir_is_not_a_recipe_key(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path)
    recipe.write_text(f'kernels_dir = "{tmp_path}"\n' + recipe.read_text())
    with pytest.raises(RecipeError, match="kernels_dir: unknown key"):
        load_recipe(recipe)


def test_cli_kernels_dir_from_the_environment(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "r", profile="my-kernel")
    proc = run_imagekit("build", recipe, "-o", tmp_path / "x.img", env={"IMAGEKIT_KERNELS_DIR": str(tmp_path / "no")})
    assert proc.returncode == 2
    assert "--kernels-dir" in proc.stderr and "IMAGEKIT_KERNELS_DIR" in proc.stderr and "does not exist" in proc.stderr
    assert not (tmp_path / "x.img").exists()
