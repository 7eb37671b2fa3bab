"""Shared fixtures: small real images (busybox + the host's cloud kernel) and the shipped Debian recipes.

Everything here runs the real tools (mke2fs, pyparted, mmdebstrap, libguestfs); nothing is mocked.
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path

import pytest

from imagekit.util.accel import detect
from imagekit.util.cache import locked
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


def run_shared_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A directory every pytest-xdist worker of this run shares (beside the workers' own base directories),
    or this process's own without xdist."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return tmp_path_factory.mktemp(name)
    shared = tmp_path_factory.getbasetemp().parent / name
    shared.mkdir(exist_ok=True)
    return shared


@pytest.fixture(scope="session")
def recipe_images(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Build a shipped recipe (recipes/NAME.toml) once per test run (bootstraps cached); returns the image.
    `layout` builds another layout of it (`imagekit build --layout`, e.g. gpt-uefi: an HVM image of a PV recipe).
    The recipes of EPOCH_BUILDS are built with that SOURCE_DATE_EPOCH. Under pytest-xdist the workers share
    the builds: the first to ask builds under a lock, the others wait and take its image (imagekit build
    renames a finished image into place, so an image that exists is whole)."""
    out = run_shared_dir(tmp_path_factory, "recipes")

    def get(name: str, layout: str | None = None) -> Path:
        image = out / (f"{name}.img" if layout is None else f"{name}.{layout}.img")
        with locked(image.with_name(image.name + ".lock"), lambda _holder: nullcontext()):
            if not image.exists():
                env = {"SOURCE_DATE_EPOCH": str(EPOCH_BUILDS[name])} if name in EPOCH_BUILDS else None
                run_imagekit("build", RECIPES / f"{name}.toml", "-o", image,
                             *(["--layout", layout] if layout else []), env=env, check=True)
        return image

    return get


@pytest.fixture(scope="session")
def debian_images(recipe_images: Callable[..., Path]) -> Callable[[str], Path]:
    """A shipped Debian PV-GRUB recipe by variant (hd0, hd00, hd00-bootpart), built once per session."""
    return lambda variant: recipe_images(f"debian-12-pvgrub-{variant}")


FOREIGN = "IMAGEKIT_TEST_FOREIGN"


def shares_fixtures_in_its_module(item: pytest.Item) -> bool:
    """Whether the test uses a fixture made once for several tests of its module: module-, class- or
    package-scoped, or session-scoped but defined in the test module itself (e.g. its boot images)."""
    info = getattr(item, "_fixtureinfo", None)
    module = getattr(getattr(item, "module", None), "__name__", None)
    for defs in (info.name2fixturedefs.values() if info else ()):
        for fixture in defs:
            if fixture.scope in ("module", "class", "package"):
                return True
            if fixture.scope == "session" and getattr(fixture.func, "__module__", None) == module:
                return True
    return False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Groups for `pytest -n N --dist loadgroup` (scripts/test): the tests of a module that share a fixture
    made once for the module run in one worker, so it is made once; every other test goes to whichever
    worker is free. The shipped recipes' builds (recipe_images) are shared by the workers themselves. Without
    xdist the marks do nothing.

    `foreign` tests bootstrap another architecture through qemu-user, which needs the host's binfmt_misc
    handlers (a host-wide change: `scripts/setup --foreign` makes it, saying so) and, cold, ~8 minutes here
    (README, arm64): they run only with IMAGEKIT_TEST_FOREIGN=1, which CI sets (.ci/run), so a developer's
    `scripts/test` changes nothing host-wide."""
    foreign = os.environ.get(FOREIGN) == "1"
    skip = pytest.mark.skip(reason=f"foreign-arch bootstrap: set {FOREIGN}=1 to run (needs binfmt_misc, slow cold)")
    for item in items:
        if shares_fixtures_in_its_module(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))
        if "foreign" in item.keywords and not foreign:
            item.add_marker(skip)


CPU_LOG = "IMAGEKIT_TEST_CPU_LOG"


def cpu_seconds() -> float:
    """This process's CPU (user + sys) and that of every child it has reaped, theirs included: QEMU, the
    libguestfs appliance, mmdebstrap under qemu-user, the imagekit commands a test starts."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """With IMAGEKIT_TEST_CPU_LOG=FILE, each test's CPU seconds and wall seconds (setup, call and teardown:
    a module fixture is counted in the test that made it) are appended to FILE as a JSON line, by every
    xdist worker: where a suite that is CPU-bound on its machine spends the CPU (README: Tests)."""
    log = os.environ.get(CPU_LOG)
    if not log:
        yield
        return
    cpu, wall = cpu_seconds(), time.monotonic()
    yield
    line = json.dumps({"test": item.nodeid, "cpu": round(cpu_seconds() - cpu, 2),
                       "wall": round(time.monotonic() - wall, 2)})
    with open(log, "a") as f:  # one short write per test: O_APPEND keeps the workers' lines whole
        f.write(line + "\n")
