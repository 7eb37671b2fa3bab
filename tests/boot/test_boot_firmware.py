"""Firmware-level failures of HVM images, booted for real (SeaBIOS, OVMF under QEMU TCG): seconds each.

No image builder needed: a blank disk and a GPT disk with an empty ESP are made here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imagekit.boot.harness import BootOptions, boot_image
from tests.boot.hvm_images import make_blank, make_empty_esp
from tests.util import run_imagekit


def test_blank_disk_under_seabios(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    proc = run_imagekit("boot", make_blank(tmp_path / "blank.img"), "--firmware", "bios", "--json",
                        "--serial-log", log)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["booted"], report["reason"]) == (False, "firmware-no-bootable-device")
    assert report["detail"] == "SeaBIOS: Boot failed: not a bootable disk; No bootable device"
    assert (report["firmware"], report["disk_interface"], report["loader"]) == ("bios", "nvme", "firmware")
    assert report["context"][0].startswith("SeaBIOS (version")  # graphics=off: SeaBIOS talks on the serial port
    assert [f["reason"] for f in report["firmwares"]] == ["firmware-no-bootable-device"]
    assert report["probe"] == "none" and log.is_file()  # a firmware failure, seen at once: not a timeout


@pytest.mark.slow  # an OVMF boot to its boot-device failure: ~9 s (the fast loop: README, Tests)
def test_empty_esp_under_ovmf_is_found_from_the_disk(tmp_path: Path) -> None:
    """No manifest and no --firmware: a GPT disk with an ESP means UEFI."""
    report = boot_image(BootOptions(make_empty_esp(tmp_path / "esp.img")))
    assert (report.booted, report.reason, report.firmware) == (False, "firmware-no-bootable-device", "uefi")
    assert report.detail == ('OVMF: failed to load Boot0001 "UEFI QEMU NVMe Ctrl imagekit-root 1": Not Found; '
                             "it started the UEFI Shell")
    assert report.exit_code == 1


@pytest.mark.slow  # two OVMF/SeaBIOS boots of a small image: ~12 s (the fast loop: README, Tests)
def test_manifest_layout_picks_both_firmwares(tmp_path: Path) -> None:
    image = make_blank(tmp_path / "hybrid.img")
    (tmp_path / "hybrid.img.manifest.json").write_text('{"virtualization": "hvm", "layout": "gpt-hybrid"}')
    report = boot_image(BootOptions(image, disk_interface="virtio"))
    assert (report.firmware, report.disk_interface, report.reason) == ("both", "virtio", "firmware-no-bootable-device")
    assert [(f.firmware, f.booted) for f in report.firmwares] == [("bios", False), ("uefi", False)]
    assert report.firmwares[1].detail.startswith('OVMF: failed to load Boot0001 "UEFI Misc Device"')
    assert {Path(f.serial_log).name for f in report.firmwares} == {"hybrid.img.serial.bios.log",
                                                                   "hybrid.img.serial.uefi.log"}
