"""The shipped Debian HVM recipes (issue 7), built for real from the cached bootstrap the PV recipes use,
and booted through SeaBIOS and OVMF to the login prompt on ttyS0 (TCG: a minute or two each)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.util import RECIPES, run_imagekit

pytestmark = pytest.mark.slow

MODES = {"bios": ("mbr-bios", "legacy-bios"), "uefi": ("gpt-uefi", "uefi"), "hybrid": ("gpt-hybrid", "uefi-preferred")}


@pytest.fixture(scope="session")
def hvm_images(recipe_images: Callable[[str], Path]) -> Callable[[str], Path]:
    """A shipped debian-12-hvm-* recipe's image by variant (bios, uefi, hybrid), built once (lint included)."""
    return lambda variant: recipe_images(f"debian-12-hvm-{variant}")


def manifest_of(image: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(image.with_name(image.name + ".manifest.json").read_text())
    return data


@pytest.mark.parametrize("variant", ["bios", "uefi", "hybrid"])
def test_debian_hvm_recipe_builds(hvm_images: Callable[[str], Path], variant: str) -> None:
    manifest = manifest_of(hvm_images(variant))
    assert (manifest["layout"], manifest["boot_mode"]) == MODES[variant]
    assert manifest["virtualization"] == "hvm" and manifest["lint"]["errors"] == 0
    assert "console=ttyS0,115200" in manifest["cmdline"] and "nvme_core.io_timeout=4294967295" in manifest["cmdline"]
    assert manifest["cmdline"].split().count("net.ifnames=0") == 1  # the profile's, once
    assert manifest["kernel"]["profile"] == "debian-cloud-amd64"
    esp_line = "LABEL=ESP\t/boot/efi\tvfat\tumask=0077\t0\t1\n"  # the ESP mounted as Debian's images do
    assert (esp_line in manifest["fstab"]) is (variant != "bios")
    assert "fstab-esp-missing" not in {f["rule"] for f in manifest["lint"]["findings"]}


def test_initrd_reaches_nvme_and_ena(hvm_images: Callable[[str], Path], tmp_path: Path) -> None:
    """Nitro: the root disk is NVMe, the network ENA. Debian's cloud kernel has NVMe built in; ENA is in the
    initrd (initramfs-tools MODULES=most)."""
    image = hvm_images("hybrid")
    manifest = manifest_of(image)
    root = f"{image}?offset={manifest['filesystems'][-1]['offset']}"
    initrd = tmp_path / "initrd.img"
    subprocess.run(["debugfs", "-R", f"dump {manifest['initrd']['path']} {initrd}", root], check=True,
                   capture_output=True)
    files = subprocess.run(["lsinitramfs", initrd], capture_output=True, text=True, check=True).stdout
    version = manifest["kernel"]["version"]
    builtin = subprocess.run(["debugfs", "-R", f"cat /lib/modules/{version}/modules.builtin", root],
                             capture_output=True, text=True).stdout
    assert "/ena/ena.ko" in files
    assert "kernel/drivers/nvme/host/nvme.ko" in builtin or "/nvme/host/nvme.ko" in files


def test_pv_recipe_builds_hvm_from_the_cached_bootstrap(debian_images: Callable[[str], Path],
                                                        tmp_path: Path) -> None:
    """Item 6: one recipe, a PV and an HVM image, one bootstrap: the layout is not in the cache key."""
    pv = debian_images("hd00")
    image = tmp_path / "hd00-as-hybrid.img"
    proc = run_imagekit("build", RECIPES / "debian-12-pvgrub-hd00.toml", "--layout", "gpt-hybrid", "-o", image,
                        "--no-lint")
    assert proc.returncode == 0, proc.stderr
    assert "(cached bootstrap)" in proc.stderr and "==> bootstrap" not in proc.stderr
    hvm, pv_manifest = manifest_of(image), manifest_of(pv)
    assert hvm["packages"] == pv_manifest["packages"]
    assert (hvm["layout"], hvm["boot_mode"], pv_manifest["layout"]) == ("gpt-hybrid", "uefi-preferred", "hd00")
    assert "console=hvc0" in pv_manifest["cmdline"] and "console=ttyS0,115200" in hvm["cmdline"]
    assert "net.ifnames=0" in hvm["cmdline"].split()  # the PV recipe's eth0 config still applies on Nitro


# Booting these through their firmware to the sentinel: tests/boot/test_boot_debian_hvm.py (imagekit boot).


@pytest.mark.parametrize("variant", ["bios", "uefi"])
def test_no_ssh_host_keys_shipped(hvm_images: Callable[[str], Path], variant: str) -> None:
    """The bootstrap's SSH host keys (openssh-server's postinst made them) are not in the image, read back with
    debugfs; the first boot makes each instance's own before sshd starts (the boot tests' probe would name
    ssh.service as failed otherwise: `sshd -t` refuses to run without a host key)."""
    image = hvm_images(variant)
    manifest = manifest_of(image)
    root = f"{image}?offset={manifest['filesystems'][-1]['offset']}"

    def debugfs(request: str) -> str:
        return subprocess.run(["debugfs", "-R", request, root], capture_output=True, text=True, check=True).stdout

    names = debugfs("ls -p /etc/ssh").split()
    entries = [field.split("/")[5] for field in names if field.count("/") >= 6]
    assert "sshd_config" in entries and not [n for n in entries if n.startswith("ssh_host_")], entries
    unit = debugfs("cat /etc/systemd/system/ssh-host-keys.service")
    assert "ExecStart=/usr/bin/ssh-keygen -A" in unit and "Before=ssh.service" in unit
    assert "ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key" in unit
    link = debugfs("stat /etc/systemd/system/multi-user.target.wants/ssh-host-keys.service")
    assert 'Fast link dest: "/etc/systemd/system/ssh-host-keys.service"' in link
    assert "ssh-host-keys-shipped" not in {f["rule"] for f in manifest["lint"]["findings"]}
