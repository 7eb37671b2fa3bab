"""Recipes: every shipped recipe loads; bad ones fail with one line naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagekit.errors import RecipeError
from imagekit.recipe import Layout, load_recipe, parse_size
from tests.util import RECIPES, run_imagekit

GOOD = """\
name = "t"
size = "1G"
layout = "hd0"
[rootfs]
source = "bootstrap"
[kernel]
profile = "debian-cloud-amd64"
"""


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_recipes_load(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.name == path.stem
    assert len(recipe.sha256) == 64


def test_bootpart_recipe_is_hd00_with_ext2_boot() -> None:
    recipe = load_recipe(RECIPES / "debian-12-pvgrub-hd00-bootpart.toml")
    assert recipe.layout == Layout.HD00
    assert recipe.filesystems.boot is not None and recipe.filesystems.boot.type.value == "ext2"


@pytest.mark.parametrize(("text", "value"), [("4G", 4 << 30), ("512M", 512 << 20), ("1.5G", 3 << 29), (4096, 4096)])
def test_parse_size(text: object, value: int) -> None:
    assert parse_size(text) == value


BAD = [
    (GOOD.replace('layout = "hd0"', 'layout = "hd1"'), "layout: 'hd1' is not one of hd0, hd00"),
    ("colour = 'red'\n" + GOOD, "colour: unknown key"),
    (GOOD.replace('size = "1G"', 'size = "1X"'), "size: '1X' is not a size like 4G or 512M"),
    (GOOD.replace('size = "1G"', 'size = "-1G"'), "size: '-1G' is not a size like 4G or 512M"),
    (GOOD.replace('size = "1G"\n', ""), "size: required key is missing"),
    (GOOD.replace('profile = "debian-cloud-amd64"', 'profile = "nope"'), "kernel.profile: no kernel profile 'nope'"),
    (GOOD.replace('source = "bootstrap"', 'source = "rsync"'),
     "rootfs.source: 'rsync' is not one of bootstrap, tarball, directory"),
    (GOOD.replace('source = "bootstrap"', 'source = "bootstrap"\nsuit = "bookworm"'), "rootfs.suit: unknown key"),
    (GOOD.replace('layout = "hd0"', 'layout = "hd00"')
     + '[filesystems.boot]\ntype = "vfat"\nlabel = "b"\nsize = "64M"\n',
     "filesystems.boot.type: 'vfat' is not one of ext2, ext3, ext4, xfs, btrfs"),
    (GOOD + '[filesystems.boot]\ntype = "ext2"\nlabel = "boot"\nsize = "64M"\n',
     'filesystems.boot: a separate /boot needs a partition table: use layout = "hd00"'),
    (GOOD.replace('layout = "hd0"', 'layout = "hd00"') + '[filesystems.boot]\ntype = "ext2"\nlabel = "boot"\n',
     "filesystems.boot.size: required key is missing"),
    (GOOD.replace('name = "t"', 'name = "t"\narch = "i386"'), "arch: i386 is recognised but not supported yet"),
    (GOOD.replace('name = "t"', 'name = "t"\narch = "arm64"'), "arch: 'arm64' is not one of x86_64, i386"),
    (GOOD + "[boot]\ndefault = 2\n", "boot.default: default 2 is not an entry (there are 1)"),
    (GOOD + '[filesystems.root]\nlabel = "a label with spaces"\n',
     "filesystems.root.label: label 'a label with spaces'"),
    ("name = ", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_recipe_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "x.toml"
    path.write_text(text)
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(err.value).startswith(f"{path}: {message}"), str(err.value)


def test_cli_bad_recipe_one_line_exit_2_no_output(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text(GOOD.replace('layout = "hd0"', 'layout = "hd1"'))
    out = tmp_path / "x.img"
    proc = run_imagekit("build", path, "-o", out)
    assert proc.returncode == 2
    assert proc.stderr == f"error: {path}: layout: 'hd1' is not one of hd0, hd00, mbr-bios, gpt-uefi, gpt-hybrid\n"
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [path]


def test_cli_missing_recipe_file(tmp_path: Path) -> None:
    proc = run_imagekit("build", tmp_path / "nope.toml")
    assert proc.returncode == 2
    assert proc.stderr == f"error: {tmp_path / 'nope.toml'}: no such recipe file\n"
