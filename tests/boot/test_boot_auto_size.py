"""An image sized with size = "auto" boots (issue 9): built by imagekit, booted through PV-GRUB."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.boot.conftest import requires_kernel, userland
from tests.util import SMALL_RECIPE, run_imagekit


@pytest.mark.slow
@requires_kernel()
def test_auto_sized_image_boots(tmp_path: Path) -> None:
    userland(tmp_path / "tree")
    recipe = tmp_path / "auto.toml"
    recipe.write_text(SMALL_RECIPE.format(name="auto", layout="hd00", size="auto", extra="")
                      .replace('size = "auto"', 'size = "auto"\nfree = "256M"'))
    image = tmp_path / "auto.img"
    built = run_imagekit("build", recipe, "-o", image, "--json", "--no-lint")
    assert built.returncode == 0, built.stderr
    manifest = json.loads(built.stdout)
    assert manifest["image"]["size"] == 1 << 30
    assert manifest["filesystems"][0]["usage"]["free"] >= 256 << 20
    subprocess.run(["e2fsck", "-fn", f"{image}?offset=1048576"], check=True, capture_output=True)

    booted = run_imagekit("boot", image, "--json", "--timeout", "240")
    report = json.loads(booted.stdout)
    assert booted.returncode == 0, booted.stdout + booted.stderr
    assert report["booted"] is True
