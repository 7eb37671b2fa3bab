"""Real TCG boots of Debian 12 HVM images (built once per session by tests/conftest.py), each through its
real firmware path to the probe's sentinel: SeaBIOS for mbr-bios, OVMF for gpt-uefi, both for gpt-hybrid.
The disk is NVMe, as on Nitro (recipes/debian-12-hvm-<bios|uefi|hybrid>.toml). The probe's mounts report
shows the ESP mounted at /boot/efi from fstab (gpt-uefi, gpt-hybrid).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit.boot.harness import BootOptions, boot_image
from tests.boot.conftest import requires_kernel
from tests.util import sha256

pytestmark = [pytest.mark.slow, requires_kernel()]


@pytest.mark.parametrize(("recipe", "firmwares"), [
    ("debian-12-hvm-bios", ["bios"]),
    ("debian-12-hvm-uefi", ["uefi"]),
    ("debian-12-hvm-hybrid", ["bios", "uefi"]),
])
def test_debian_hvm_boots_through_its_firmware(recipe_images: Callable[[str], Path], recipe: str,
                                               firmwares: list[str]) -> None:
    image = recipe_images(recipe)
    before = sha256(image) if recipe == "debian-12-hvm-hybrid" else None
    report = boot_image(BootOptions(image))
    assert report.booted, report.to_text()
    assert report.prepared_with.startswith("debugfs"), report.notes  # no libguestfs appliance
    assert before is None or sha256(image) == before
    assert [(f.firmware, f.reason) for f in report.firmwares] == [(f, "booted") for f in firmwares]
    assert (report.loader, report.disk_interface, report.probe, report.failed_units) == (
        "firmware", "nvme", "systemd-unit", [])
    assert report.system_state == "running" and report.kernel_version
    assert report.entry is not None and not report.entry.fallback
    if recipe != "debian-12-hvm-bios":  # fstab mounts the ESP (vfat, by LABEL=ESP) at /boot/efi
        esp = [m for m in report.mounts if m["target"] == "/boot/efi"]
        assert [(m["fstype"], m["label"]) for m in esp] == [("vfat", "ESP")], report.mounts
    else:
        assert "/boot/efi" not in [m["target"] for m in report.mounts]
    assert "/" in [m["target"] for m in report.mounts]
    assert report.missing_mounts == [] and not report.degraded, report.to_text()
