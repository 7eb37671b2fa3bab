"""Real TCG boots of Debian 12 HVM images (built once per session by tests/conftest.py), each through its
real firmware path to the probe's sentinel: SeaBIOS for mbr-bios, OVMF for gpt-uefi, both for gpt-hybrid.
The disk is NVMe, as on Nitro. The image is recipes/debian-12-hvm-<bios|uefi|hybrid>.toml where shipped,
else the hd0 recipe built with `--layout`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit.boot import BootOptions, boot_image
from tests.boot.conftest import requires_kernel
from tests.util import RECIPES

pytestmark = [pytest.mark.slow, requires_kernel()]


def debian_hvm(debian_images: Callable[..., Path], recipe: str, layout: str) -> Path:
    if (RECIPES / f"{recipe}.toml").is_file():
        return debian_images(recipe)
    return debian_images("hd0", layout=layout)


@pytest.mark.parametrize(("recipe", "layout", "firmwares"), [
    ("debian-12-hvm-bios", "mbr-bios", ["bios"]),
    ("debian-12-hvm-uefi", "gpt-uefi", ["uefi"]),
    ("debian-12-hvm-hybrid", "gpt-hybrid", ["bios", "uefi"]),
])
def test_debian_hvm_boots_through_its_firmware(debian_images: Callable[..., Path], recipe: str, layout: str,
                                               firmwares: list[str]) -> None:
    report = boot_image(BootOptions(debian_hvm(debian_images, recipe, layout)))
    assert report.booted, report.to_text()
    assert [(f.firmware, f.reason) for f in report.firmwares] == [(f, "booted") for f in firmwares]
    assert (report.loader, report.disk_interface, report.probe, report.failed_units) == (
        "firmware", "nvme", "systemd-unit", [])
    assert report.system_state == "running" and report.kernel_version
    assert report.entry is not None and not report.entry.fallback
