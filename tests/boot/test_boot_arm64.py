"""The shipped arm64 recipe (debian-12-arm64-uefi), built on this x86_64 host (mmdebstrap --architectures=arm64
through qemu-user, GRUB arm64-efi from the bootstrapped tree), linted (Nitro rules: NVMe, ENA, BOOTAA64.EFI,
GPT) and booted to the probe's sentinel under qemu-system-aarch64 -M virt -cpu max (TCG) with AAVMF, the disk
on NVMe as on Nitro; then published to the local cloud as EC2 would take it. One build and one boot: the
slowest test imagekit has (a cold arm64 bootstrap is ~10x the x86 one, see README's arm64 section). CI runs it
(.ci/run: scripts/setup --foreign, IMAGEKIT_TEST_FOREIGN=1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imagekit.publish.facts import image_facts
from imagekit.recipe.arch import spec_of
from tests.util import RECIPES, run_imagekit

pytestmark = [pytest.mark.slow, pytest.mark.foreign]


@pytest.fixture(scope="module")
def arm64_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built here, not through the shared `recipe_images` (whose users all run in one xdist worker): the cold
    arm64 bootstrap (~8 min, one core under qemu-user) then runs beside the other worker's tests."""
    image = tmp_path_factory.mktemp("arm64") / "debian-12-arm64-uefi.img"
    run_imagekit("build", RECIPES / "debian-12-arm64-uefi.toml", "-o", image, check=True)
    return image


def test_arm64_recipe_builds_lints_and_boots_to_the_sentinel(arm64_image: Path) -> None:
    manifest = json.loads(arm64_image.with_name(arm64_image.name + ".manifest.json").read_text())
    assert (manifest["arch"], manifest["layout"], manifest["boot_mode"]) == ("arm64", "gpt-uefi", "uefi")
    assert manifest["lint"]["errors"] == 0
    esp = next(p for p in manifest["partitions"] if p["kind"] == "esp")
    assert esp["filesystem"]["files"] == ["/EFI/BOOT/BOOTAA64.EFI"]
    assert manifest["kernel"]["version"].endswith("-cloud-arm64")
    assert "console=ttyS0,115200" in manifest["cmdline"]  # EC2 Graviton's console (QEMU's is added at boot)

    lint = run_imagekit("lint", arm64_image, "--json")
    report = json.loads(lint.stdout)
    assert lint.returncode == 0, lint.stdout
    rules = {f["rule"] for f in report["findings"]}
    assert not rules & {"hvm-driver-missing", "hvm-bootloader-missing", "kernel-arch", "kernel-unreadable"}
    assert "XEN_PVHVM" not in lint.stdout  # Graviton is Nitro only: no Xen HVM rules

    boot = run_imagekit("boot", arm64_image, "--json", "--timeout", "900")
    result = json.loads(boot.stdout)
    assert boot.returncode == 0, (result["reason"], result["detail"], result.get("context"))
    assert (result["booted"], result["reason"], result["firmware"]) == (True, "booted", "uefi")
    assert (result["disk_interface"], result["accel"]) == ("nvme", "tcg")
    assert result["kernel_version"] == manifest["kernel"]["version"]
    assert any("console=ttyAMA0 put last" in added for added in result["added"])  # QEMU virt's PL011

    facts = image_facts(arm64_image)
    assert (facts.arch, facts.boot_mode.value if facts.boot_mode else None) == (spec_of("arm64").ec2, "uefi")
