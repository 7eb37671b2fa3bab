"""Shared fixtures: small real images (busybox + the host's cloud kernel) and the shipped Debian recipes.

Everything here runs the real tools (mke2fs, pyparted, mmdebstrap, libguestfs); nothing is mocked.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit.util.accel import detect
from tests.util import EPOCH_BUILDS, RECIPES, SMALL_RECIPE, make_small_tree, run_imagekit

# libguestfs' direct backend tries KVM first; where KVM hangs (these machines) force TCG. The probe
# is imagekit's own (cached), so a user with working KVM keeps it.
for _key, _value in detect().libguestfs_env().items():
    os.environ.setdefault(_key, _value)


HOST_KERNELS = sorted(Path("/boot").glob("vmlinuz-*-cloud-amd64"))


@pytest.fixture(scope="session")
def host_kernel() -> Path:
    """The host's Debian cloud kernel (scripts/setup installs it), with its initrd and config beside it."""
    if not HOST_KERNELS:
        pytest.skip("no /boot/vmlinuz-*-cloud-amd64 (scripts/setup installs linux-image-cloud-amd64)")
    kernel = HOST_KERNELS[-1]
    version = kernel.name.removeprefix("vmlinuz-")
    for name in (f"initrd.img-{version}", f"config-{version}"):
        if not kernel.with_name(name).exists():
            pytest.skip(f"no /boot/{name}")
    return kernel


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
def recipe_images(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Build a shipped recipe (recipes/NAME.toml) once per session (bootstraps cached); returns the image.
    `layout` builds another layout of it (`imagekit build --layout`, e.g. gpt-uefi: an HVM image of a PV recipe).
    The recipes of EPOCH_BUILDS are built with that SOURCE_DATE_EPOCH."""
    out = tmp_path_factory.mktemp("recipes")
    built: dict[tuple[str, str | None], Path] = {}

    def get(name: str, layout: str | None = None) -> Path:
        if (name, layout) not in built:
            image = out / (f"{name}.img" if layout is None else f"{name}.{layout}.img")
            env = {"SOURCE_DATE_EPOCH": str(EPOCH_BUILDS[name])} if name in EPOCH_BUILDS else None
            run_imagekit("build", RECIPES / f"{name}.toml", "-o", image,
                         *(["--layout", layout] if layout else []), env=env, check=True)
            built[name, layout] = image
        return built[name, layout]

    return get


@pytest.fixture(scope="session")
def debian_images(recipe_images: Callable[..., Path]) -> Callable[[str], Path]:
    """A shipped Debian PV-GRUB recipe by variant (hd0, hd00, hd00-bootpart), built once per session."""
    return lambda variant: recipe_images(f"debian-12-pvgrub-{variant}")


FOREIGN = "IMAGEKIT_TEST_FOREIGN"
SHARED_BUILDS = frozenset({"recipe_images", "debian_images"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Groups for `pytest -n 2 --dist loadgroup` (scripts/test): a module's tests run in one worker, so its
    module-scoped images are made once; every module using the shipped recipes' session builds runs in one
    worker ("recipes"), so each Debian image is built once. Without xdist the marks do nothing.

    `foreign` tests bootstrap another architecture through qemu-user, which needs the host's binfmt_misc
    handlers (a host-wide change: `scripts/setup --foreign` makes it, saying so) and, cold, ~8 minutes here
    (README, arm64): they run only with IMAGEKIT_TEST_FOREIGN=1, which CI sets (.ci/run), so a developer's
    `scripts/test` changes nothing host-wide."""
    foreign = os.environ.get(FOREIGN) == "1"
    skip = pytest.mark.skip(reason=f"foreign-arch bootstrap: set {FOREIGN}=1 to run (needs binfmt_misc, slow cold)")
    for item in items:
        uses_recipes = SHARED_BUILDS & set(getattr(item, "fixturenames", ()))
        group = "recipes" if uses_recipes else item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))
        if "foreign" in item.keywords and not foreign:
            item.add_marker(skip)
