"""Real TCG boots of small HVM disks (host cloud kernel + busybox, GRUB 2 set up by tests/boot/hvm_images.py)
through the real firmware: SeaBIOS from the MBR, OVMF from the ESP, a hybrid disk both ways; and the
failures a user meets, each with its exact reason.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit.boot.harness import BootOptions, boot_image
from tests.boot import hvm_images as hvm
from tests.boot.conftest import on_first_use, requires_kernel
from tests.util import run_imagekit

pytestmark = [pytest.mark.slow, requires_kernel()]

Images = Callable[[str], Path]
WRONG_UUID = hvm.WRONG_UUID


@pytest.fixture(scope="session")
def hvm_disks(tmp_path_factory: pytest.TempPathFactory) -> Images:
    out = tmp_path_factory.mktemp("hvm-disks")
    makers: dict[str, Callable[[Path], Path]] = {
        "uefi": lambda p: hvm.make_uefi(p, hvm.grub_cfg()),
        "bios": lambda p: hvm.make_bios(p, hvm.grub_cfg()),
        "hybrid": lambda p: hvm.make_hybrid(p, hvm.grub_cfg()),
        "uefi-no-loader": lambda p: hvm.make_uefi(p, hvm.grub_cfg(), loader=False),
        "bios-missing-kernel": lambda p: hvm.make_bios(p, hvm.grub_cfg(kernel="/boot/vmlinuz-6.1.0-99-cloud-amd64")),
        "bios-wrong-root": lambda p: hvm.make_bios(p, hvm.grub_cfg(root=WRONG_UUID)),
        "bios-rescue": lambda p: hvm.make_bios(p, hvm.grub_cfg(), search_uuid=WRONG_UUID),
    }
    return on_first_use(out, makers)


@pytest.mark.parametrize("name", ["uefi", "bios"])
def test_boots_to_the_sentinel_through_the_firmware(hvm_disks: Images, name: str) -> None:
    """No manifest: the firmware comes from the disk (an ESP; GRUB in the MBR); the disk is NVMe."""
    report = boot_image(BootOptions(hvm_disks(name)))
    assert report.booted, report.to_text()
    assert (report.firmware, report.disk_interface, report.loader, report.probe) == (name, "nvme", "firmware",
                                                                                       "init-hook")
    assert report.entry is not None and (report.entry.title, report.entry.fallback) == ("Small HVM", False)
    assert report.seconds_to_bootloader is not None and report.seconds_to_first_kernel_line is not None
    assert 0 <= report.seconds_to_bootloader < report.seconds_to_first_kernel_line < (report.seconds_to_sentinel or 0)
    assert any(a.startswith("/boot/grub/grub.cfg: console=ttyS0 put last on 1 linux line(s)") for a in report.added)


def test_hybrid_boots_both_ways(hvm_disks: Images, tmp_path: Path) -> None:
    log = tmp_path / "hybrid.log"
    proc = run_imagekit("boot", hvm_disks("hybrid"), "--json", "--serial-log", log)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert (report["firmware"], report["booted"]) == ("both", True)
    assert [(f["firmware"], f["reason"]) for f in report["firmwares"]] == [("bios", "booted"), ("uefi", "booted")]
    assert [f["serial_log"] for f in report["firmwares"]] == [str(tmp_path / "hybrid.bios.log"),
                                                              str(tmp_path / "hybrid.uefi.log")]
    assert "SeaBIOS" in (tmp_path / "hybrid.bios.log").read_text(errors="replace")
    assert "BdsDxe" in (tmp_path / "hybrid.uefi.log").read_text(errors="replace")


def test_esp_without_the_loader(hvm_disks: Images) -> None:
    report = boot_image(BootOptions(hvm_disks("uefi-no-loader")))
    assert (report.reason, report.firmware) == ("firmware-no-bootable-device", "uefi")
    assert report.detail == ('OVMF: failed to load Boot0001 "UEFI QEMU NVMe Ctrl imagekit-root 1": Not Found; '
                             "it started the UEFI Shell")


def test_grub_cfg_naming_a_missing_kernel(hvm_disks: Images) -> None:
    report = boot_image(BootOptions(hvm_disks("bios-missing-kernel")))
    assert (report.reason, report.entry) == ("no-entry-loaded", None)
    assert report.detail == "GRUB: file `/boot/vmlinuz-6.1.0-99-cloud-amd64' not found"
    assert report.seconds_to_first_kernel_line is None


def test_root_uuid_wrong(hvm_disks: Images) -> None:
    report = boot_image(BootOptions(hvm_disks("bios-wrong-root"), firmware="bios"))
    assert report.reason == "root-not-found"
    assert report.detail == f"UUID={WRONG_UUID} does not exist (the initramfs gave up waiting for it)"


def test_grub_cannot_find_its_prefix(hvm_disks: Images) -> None:
    report = boot_image(BootOptions(hvm_disks("bios-rescue")))
    assert report.reason == "grub-rescue"
    assert report.detail == (f"GRUB: no such device: {WRONG_UUID}; unknown filesystem; stopped at the grub rescue> "
                             "prompt")


@pytest.mark.parametrize("interface", ["virtio", "ide"])
def test_other_disk_interfaces(hvm_disks: Images, interface: str) -> None:
    report = boot_image(BootOptions(hvm_disks("bios"), disk_interface=interface))
    assert report.booted, report.to_text()
    assert (report.firmware, report.disk_interface) == ("bios", interface)
