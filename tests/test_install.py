"""A non-editable install: a wheel built from the sources, installed into a fresh venv, run outside the checkout.

The venv is made from the system Python with --system-site-packages (Debian's python3-guestfs and
python3-parted), without extras, as `pip install .` makes it; pip fetches the dependencies from PyPI
(or its cache). The wheel is built from a copy of the files a wheel needs, which is deleted before
anything runs: an install that still read the checkout would fail here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.util import REPO

pytestmark = pytest.mark.slow

SOURCES = ("pyproject.toml", "README.md", "imagekit", "kernels")
RECIPE = "debian-12-pvgrub-hd0"
MARKER = "imagekit.test=kernels-dir"


@dataclass(frozen=True)
class Install:
    venv: Path
    work: Path  # outside the checkout; every command runs here

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        return {**env, "PATH": f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"}

    def run(self, *args: str | os.PathLike[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=self.work,
                              env=self.env(), timeout=timeout)

    def imagekit(self, *args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
        return self.run(self.venv / "bin" / "imagekit", *args)


def checked(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"{proc.args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def build_wheel(tmp: Path) -> Path:
    """A wheel built (pip, isolated build) from a copy of the sources, which is removed afterwards."""
    src, dist = tmp / "src", tmp / "dist"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    checked(subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(src), "-w", str(dist)],
                           capture_output=True, text=True, cwd=tmp, timeout=600))
    shutil.rmtree(src)
    (wheel,) = dist.glob("imagekit-*.whl")
    return wheel


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    tmp = tmp_path_factory.mktemp("install")
    wheel = build_wheel(tmp)
    venv, work = tmp / "venv", tmp / "work"
    work.mkdir()
    checked(subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)],
                           capture_output=True, text=True, timeout=300))
    install = Install(venv, work)
    checked(install.run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel))
    yield install


def copy_recipe(dest: Path) -> Path:
    """The default recipe and the files it copies, in a directory of their own (no kernels/ beside it)."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "recipes" / f"{RECIPE}.toml", dest)
    shutil.copytree(REPO / "recipes" / "files", dest / "files", dirs_exist_ok=True)
    return dest / f"{RECIPE}.toml"


def site_packages(install: Install) -> Path:
    out = checked(install.run(install.venv / "bin" / "python", "-c", "import imagekit; print(imagekit.__file__)"))
    return Path(out.stdout.strip()).parent


def test_the_installed_package_is_the_wheel(installed: Install) -> None:
    package = site_packages(installed)
    assert package.is_relative_to(installed.venv), package
    assert not (package / "_kernels").is_symlink()
    assert sorted(p.name for p in (package / "_kernels").glob("*.toml")) == sorted(
        p.name for p in (REPO / "kernels").glob("*.toml"))
    version = checked(installed.imagekit("--version"))
    assert re.search(r"\b0\.\d+\.\d+\b", version.stdout), version.stdout


def test_build_uses_the_packaged_profile(installed: Install) -> None:
    recipe = copy_recipe(installed.work / "recipe")
    proc = checked(installed.imagekit("build", recipe, "-o", "out.img", "--no-lint"))
    assert proc.stdout.strip() == "out.img"
    manifest = json.loads((installed.work / "out.img.manifest.json").read_text())
    assert manifest["kernel"]["profile"] == "debian-cloud-amd64"
    assert MARKER not in manifest["cmdline"]


def test_build_uses_the_kernels_dir_profile(installed: Install) -> None:
    recipe = copy_recipe(installed.work / "recipe")
    mine = installed.work / "my-kernels"
    mine.mkdir()
    text = (REPO / "kernels" / "debian-cloud-amd64.toml").read_text()
    modified = re.sub(r'^cmdline = "(.*)"$', rf'cmdline = "\1 {MARKER}"', text, count=1, flags=re.M)
    assert modified != text
    (mine / "debian-cloud-amd64.toml").write_text(modified)
    checked(installed.imagekit("build", recipe, "-o", "mine.img", "--no-lint", "--kernels-dir", mine))
    manifest = json.loads((installed.work / "mine.img.manifest.json").read_text())
    assert MARKER in manifest["cmdline"]


def test_a_missing_profile_lists_the_places_looked(installed: Install) -> None:
    recipe = copy_recipe(installed.work / "missing")
    recipe.write_text(recipe.read_text().replace('profile = "debian-cloud-amd64"', 'profile = "no-such-kernel"'))
    mine = installed.work / "empty-kernels"
    mine.mkdir()
    proc = installed.imagekit("build", recipe, "-o", "x.img", "--no-lint", "--kernels-dir", mine)
    assert proc.returncode == 2, proc.stderr
    error, hint = proc.stderr.splitlines()
    assert error == (f"error: {recipe}: kernel.profile: no kernel profile 'no-such-kernel' (looked in {mine}, "
                     f"{site_packages(installed) / '_kernels'}; known: {', '.join(shipped_profiles())})")
    assert hint.startswith("hint: ") and "--kernels-dir" in hint
    assert not (installed.work / "x.img").exists()


def test_local_cloud_without_the_extra_says_how_to_install_it(installed: Install) -> None:
    python = installed.venv / "bin" / "python"
    if installed.run(python, "-c", "import moto.server").returncode == 0:
        pytest.skip("moto is importable in this venv (from the system site packages): the hint cannot show")
    proc = installed.imagekit("local-cloud", "--port", "0")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        "error: imagekit local-cloud needs the Python module moto, which is not installed",
        "hint: pip install 'imagekit[local-cloud]' (moto[server] 5.2.5)",
    ]


def test_userdata_check_has_pyyaml(installed: Install) -> None:
    bad = installed.work / "bad.yaml"
    bad.write_text("#cloud-config\npackages: [postgresql\n")
    proc = installed.imagekit("userdata", "check", bad)
    assert proc.returncode == 2, proc.stderr
    assert "cloud-config is not valid YAML" in proc.stderr


def shipped_profiles() -> list[str]:
    """The profiles the checkout ships (kernels/), which the wheel must carry: the error lists them all."""
    return sorted(p.stem for p in (REPO / "kernels").glob("*.toml"))

