"""`imagekit build --arch` (issue 18 item 6): one recipe for both architectures of a release, the option checked
as the recipe's `arch` key is; a refusal names the option and the recipe key, exit 2, before any bootstrap."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagekit.cli.build import with_options
from imagekit.recipe.arch import Arch
from imagekit.recipe.load import load_recipe
from imagekit.recipe.model import Layout
from imagekit.util.errors import UsageError
from tests.util import RECIPES, run_imagekit


@pytest.mark.parametrize(("recipe", "layout", "kind"), [
    ("debian-12-pvgrub-hd0", "hd0", "a PV-GRUB (Xen PV) layout"),
    ("debian-12-hvm-bios", "mbr-bios", "a BIOS layout"),
])
def test_arch_option_refuses_a_layout_arm64_cannot_boot(tmp_path: Path, recipe: str, layout: str, kind: str) -> None:
    path = RECIPES / f"{recipe}.toml"
    result = run_imagekit("build", path, "--arch", "arm64", "-o", tmp_path / "x.img", check=False)
    assert result.returncode == 2, result.stderr
    assert (f"--arch arm64: {path}: layout: {layout} is {kind}: arm64 (Graviton) boots UEFI only; use gpt-uefi"
            in result.stderr)
    assert "--layout gpt-uefi" in result.stderr  # the hint
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.img").exists()


def test_arch_option_swaps_the_default_kernel_profile_and_nothing_else() -> None:
    recipe = load_recipe(RECIPES / "debian-12-hvm-uefi.toml")
    arm = with_options(recipe, None, "arm64")
    assert (arm.arch, arm.kernel.profile, arm.layout) == (Arch.ARM64, "debian-cloud-arm64", Layout.GPT_UEFI)
    same = {"arch", "kernel"}
    assert arm.model_dump(exclude=same) == recipe.model_dump(exclude=same)
    assert arm.kernel.model_dump(exclude={"profile"}) == recipe.kernel.model_dump(exclude={"profile"})
    assert with_options(arm, None, "x86_64").model_dump() == recipe.model_dump()


def test_arch_with_layout_together(tmp_path: Path) -> None:
    recipe = load_recipe(RECIPES / "debian-12-pvgrub-hd0.toml")
    arm = with_options(recipe, "gpt-uefi", "arm64")
    assert (arm.arch, arm.layout, arm.kernel.profile) == (Arch.ARM64, Layout.GPT_UEFI, "debian-cloud-arm64")


def test_arch_option_refuses_i386_naming_the_key() -> None:
    recipe = load_recipe(RECIPES / "debian-12-hvm-uefi.toml")
    with pytest.raises(UsageError, match=r"^--arch i386: .*: arch: i386 is recognised but not supported yet"):
        with_options(recipe, None, "i386")


def test_arch_option_refuses_a_profile_of_the_other_arch(tmp_path: Path) -> None:
    text = (RECIPES / "debian-12-hvm-uefi.toml").read_text().replace(
        'profile = "debian-cloud-amd64"', 'profile = "host-cloud-amd64"')
    path = tmp_path / "r.toml"
    path.write_text(text.replace('src = "files/', f'src = "{RECIPES}/files/'))
    recipe = load_recipe(path)
    with pytest.raises(UsageError, match=r"^--arch arm64: .*: kernel.profile: profile host-cloud-amd64 is for "
                                         r"x86_64, the recipe is arm64") as err:
        with_options(recipe, None, "arm64")
    assert "debian-cloud-arm64" in (err.value.hint or "")
