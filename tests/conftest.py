"""Shared fixtures: small real images (busybox + the host's cloud kernel) and the shipped Debian recipes.

Everything here runs the real tools (mke2fs, pyparted, mmdebstrap, libguestfs); nothing is mocked.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit.accel import detect
from tests.util import RECIPES, SMALL_RECIPE, make_small_tree, run_imagekit

# libguestfs' direct backend tries KVM first; where KVM hangs (these machines) force TCG. The probe
# is imagekit's own (cached), so a user with working KVM keeps it.
for _key, _value in detect().libguestfs_env().items():
    os.environ.setdefault(_key, _value)


@pytest.fixture(scope="session")
def small_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_small_tree(tmp_path_factory.mktemp("small") / "tree")


@pytest.fixture
def small_recipe(tmp_path: Path, small_tree: Path) -> Callable[..., Path]:
    """Write a recipe for the small tree into tmp_path; returns its path."""
    (tmp_path / "tree").symlink_to(small_tree)

    def write(name: str = "small", layout: str = "hd0", size: str = "256M", extra: str = "") -> Path:
        path = tmp_path / f"{name}.toml"
        path.write_text(SMALL_RECIPE.format(name=name, layout=layout, size=size, extra=extra))
        return path

    return write


@pytest.fixture(scope="session")
def shipped_images(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Build a shipped recipe (recipes/NAME.toml) once per session (one shared, cached bootstrap); returns the image."""
    out = tmp_path_factory.mktemp("debian")
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            image = out / f"{name}.img"
            run_imagekit("build", RECIPES / f"{name}.toml", "-o", image, check=True)
            built[name] = image
        return built[name]

    return get


@pytest.fixture(scope="session")
def debian_images(shipped_images: Callable[[str], Path]) -> Callable[[str], Path]:
    """A shipped Debian PV-GRUB recipe's image by variant (hd0, hd00, hd00-bootpart)."""
    return lambda variant: shipped_images(f"debian-12-pvgrub-{variant}")
