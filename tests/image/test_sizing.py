"""size = "auto" and the too-small check: measured against mke2fs itself, exact to the MiB."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.util import dumpe2fs, run_imagekit


def test_auto_size_whole_gib_with_headroom(small_recipe: Callable[..., Path], small_tree: Path, tmp_path: Path) -> None:
    recipe = small_recipe(size="auto")
    recipe.write_text(recipe.read_text().replace('size = "auto"', 'size = "auto"\nfree = "600M"'))
    image = tmp_path / "auto.img"
    proc = run_imagekit("build", recipe, "-o", image, "--json", "--no-lint")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    assert manifest["image"]["size"] == 1 << 30  # tree (~40 MiB) + 600 MiB headroom -> 1 GiB
    usage = manifest["filesystems"][0]["usage"]
    assert usage["free"] >= 600 << 20
    assert usage["total"] == 1 << 30 and usage["used"] + usage["free"] < usage["total"]
    subprocess.run(["e2fsck", "-fn", image], check=True, capture_output=True)
    sb = dumpe2fs(image)  # e2fsprogs' reading, not imagekit's read_superblock
    block = int(sb["Block size"])
    assert (int(sb["Free blocks"]) - int(sb["Reserved block count"])) * block == usage["free"]
    assert int(sb["Block count"]) * block == usage["total"]


def test_auto_size_percentage(small_recipe: Callable[..., Path], small_tree: Path, tmp_path: Path) -> None:
    recipe = small_recipe(size="auto")
    recipe.write_text(recipe.read_text().replace('size = "auto"', 'size = "auto"\nfree = "1000%"'))
    proc = run_imagekit("build", recipe, "-o", tmp_path / "p.img", "--json", "--no-lint")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    usage = manifest["filesystems"][0]["usage"]
    assert usage["free"] >= 10 * usage["used"] * 0.9  # used includes the filesystem's own metadata
    assert manifest["image"]["size"] % (1 << 30) == 0


@pytest.mark.slow  # builds until mke2fs runs out of room: ~9 s (the fast loop: README, Tests)
def test_too_small_states_exact_shortfall(small_recipe: Callable[..., Path], tmp_path: Path) -> None:
    """The shortfall is exact: size + shortfall builds, size + shortfall - 1 MiB does not."""
    proc = run_imagekit("build", small_recipe(size="20M"), "-o", tmp_path / "a.img", "--no-lint")
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    m = re.search(r"size: too small: / holds \d+ MiB in \d+ inodes, which needs a (\d+) MiB ext4 filesystem "
                  r"\(root reserve and journal included\) but gets 20 MiB: short by (\d+) MiB$", last)
    assert m, last
    need, short = int(m[1]), int(m[2])
    assert need == 20 + short
    assert not (tmp_path / "a.img").exists() and not list(tmp_path.glob(".a.img*"))

    below = run_imagekit("build", small_recipe(name="b", size=f"{need - 1}M"), "-o", tmp_path / "b.img", "--no-lint")
    assert below.returncode == 2 and below.stderr.strip().endswith("short by 1 MiB")
    exact = run_imagekit("build", small_recipe(name="c", size=f"{need}M"), "-o", tmp_path / "c.img", "--no-lint")
    assert exact.returncode == 0, exact.stderr
    subprocess.run(["e2fsck", "-fn", tmp_path / "c.img"], check=True, capture_output=True)


def test_bad_free_value(small_recipe: Callable[..., Path], tmp_path: Path) -> None:
    recipe = small_recipe(size="auto")
    recipe.write_text(recipe.read_text().replace('size = "auto"', 'size = "auto"\nfree = "lots"'))
    proc = run_imagekit("build", recipe, "-o", tmp_path / "x.img")
    assert proc.returncode == 2
    assert proc.stderr == f"error: {recipe}: free: 'lots' is not a size like 512M or a percentage like 20%\n"
