"""HVM images built by imagekit from the small recipe (busybox + the host's cloud kernel), booted through
real firmware: each HVM layout of the table through the firmware its entry declares (mbr-bios and gpt-bios under
SeaBIOS, gpt-uefi under OVMF, gpt-hybrid both ways). Then copies broken on purpose, rootless (mtools on the
ESP, debugfs on the root filesystem), each failure with its exact reason.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from imagekit.boot.harness import BootOptions, boot_image
from imagekit.manifest import manifest_path
from imagekit.recipe.layouts import LAYOUTS, Layout
from tests.boot.conftest import on_first_use, requires_kernel, userland
from tests.boot.hvm_images import WRONG_UUID
from tests.util import SMALL_RECIPE, run_imagekit

pytestmark = [pytest.mark.slow, requires_kernel()]

Built = Callable[[str], Path]
HVM_LAYOUTS = [layout.value for layout, spec in LAYOUTS.items() if not spec.pv]  # a new one is booted here too


@pytest.fixture(scope="session")
def built_hvm(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """layout -> the small recipe built with that HVM layout (with its manifest), once per session."""
    out = tmp_path_factory.mktemp("built-hvm")
    userland(out / "tree")

    def build(image: Path) -> Path:
        layout = image.stem
        recipe = out / f"{layout}.toml"
        recipe.write_text(SMALL_RECIPE.format(name=f"small-{layout}", layout=layout, size="256M", extra=""))
        run_imagekit("build", recipe, "-o", image, "--no-lint", "--json", check=True)
        return image

    return on_first_use(out, dict.fromkeys(HVM_LAYOUTS, build))


def broken_copy(image: Path, dest: Path) -> dict[str, Any]:
    """A sparse copy of `image` and its manifest, to break; returns the manifest."""
    subprocess.run(["cp", "--sparse=always", image, dest], check=True)
    shutil.copy(manifest_path(image), manifest_path(dest))
    manifest: dict[str, Any] = json.loads(manifest_path(dest).read_text())
    return manifest


def debugfs_write(image: Path, offset: int, *requests: str) -> None:
    for request in requests:
        subprocess.run(["debugfs", "-w", "-R", request, f"{image}?offset={offset}"], check=True, capture_output=True)


@pytest.mark.parametrize(("layout", "firmwares"), [(layout, [f.value for f in LAYOUTS[Layout(layout)].firmwares])
                                                   for layout in HVM_LAYOUTS])
def test_built_layout_boots_through_its_firmware(built_hvm: Built, layout: str, firmwares: list[str]) -> None:
    """Every HVM layout of the table, built and booted through each firmware its entry declares."""
    image = built_hvm(layout)
    before = hashlib.sha256(image.read_bytes()).hexdigest()
    report = boot_image(BootOptions(image))
    assert report.booted, report.to_text()
    assert report.prepared_with.startswith("debugfs"), report.notes  # GPT or MBR, ext4 root: no appliance
    assert hashlib.sha256(image.read_bytes()).hexdigest() == before
    assert [(f.firmware, f.reason) for f in report.firmwares] == [(f, "booted") for f in firmwares]
    assert report.firmware == (firmwares[0] if len(firmwares) == 1 else "both")
    assert report.entry is not None and report.entry.title == f"small-{layout} ({report.kernel_version})"
    assert report.added[2:] == []  # grub.cfg already ends with console=ttyS0,115200: nothing to add
    for f in report.firmwares:
        assert f.seconds_to_bootloader is not None and f.seconds_to_first_kernel_line is not None
        assert f.seconds_to_bootloader < f.seconds_to_first_kernel_line < (f.seconds_to_sentinel or 0)


def test_esp_missing_the_loader(built_hvm: Built, tmp_path: Path) -> None:
    image = tmp_path / "no-loader.img"
    manifest = broken_copy(built_hvm("gpt-uefi"), image)
    esp = next(p for p in manifest["partitions"] if p["kind"] == "esp")
    subprocess.run(["mdel", "-i", f"{image}@@{esp['offset']}", "::/EFI/BOOT/BOOTX64.EFI"], check=True,
                   env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"})
    report = boot_image(BootOptions(image))
    assert (report.reason, report.firmware) == ("firmware-no-bootable-device", "uefi")
    assert report.detail == ('OVMF: failed to load Boot0001 "UEFI QEMU NVMe Ctrl imagekit-root 1": Not Found; '
                             "it started the UEFI Shell")


def test_grub_cfg_naming_a_missing_kernel(built_hvm: Built, tmp_path: Path) -> None:
    image = tmp_path / "no-kernel.img"
    manifest = broken_copy(built_hvm("mbr-bios"), image)
    kernel = manifest["kernel"]["path"]
    debugfs_write(image, manifest["filesystems"][-1]["offset"], f"rm {kernel}")
    report = boot_image(BootOptions(image))
    assert (report.reason, report.entry, report.firmware) == ("no-entry-loaded", None, "bios")
    assert report.detail == f"GRUB: file `{kernel}' not found"


def test_root_uuid_wrong(built_hvm: Built, tmp_path: Path) -> None:
    image = tmp_path / "wrong-root.img"
    manifest = broken_copy(built_hvm("mbr-bios"), image)
    cfg = tmp_path / "grub.cfg"
    cfg.write_text(manifest["grub_cfg"]["text"].replace("root=LABEL=root", f"root=UUID={WRONG_UUID}"))
    debugfs_write(image, manifest["filesystems"][-1]["offset"], "rm /boot/grub/grub.cfg",
                  f"write {cfg} /boot/grub/grub.cfg")
    report = boot_image(BootOptions(image))
    assert report.reason == "root-not-found", report.to_text()
    assert report.detail == f"UUID={WRONG_UUID} does not exist (the initramfs gave up waiting for it)"


def test_boot_filesystem_uuid_changed_stops_grub_at_its_prompt(built_hvm: Built, tmp_path: Path) -> None:
    """core.img finds /boot/grub by the filesystem's UUID; normal.mod is built in, so GRUB stops at grub>
    (not grub rescue>, which needs normal.mod from the disk: tests/boot/test_boot_hvm.py)."""
    image = tmp_path / "rescue.img"
    manifest = broken_copy(built_hvm("mbr-bios"), image)
    root = manifest["filesystems"][-1]
    debugfs_write(image, root["offset"], f"ssv uuid {WRONG_UUID}")
    report = boot_image(BootOptions(image))
    assert report.reason == "grub-cfg-not-found", report.to_text()
    assert report.detail == f"GRUB: no such device: {root['uuid']}; stopped at the grub> prompt"
