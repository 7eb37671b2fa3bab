"""lint on real HVM images (GPT + ESP + GRUB 2 boot code, the host's cloud kernel): the grub.cfg,
ESP and Nitro rules, and the target picked from the image when --target is not given."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from image_factory import MiB, boot_tree, mkext, mkvfat, partitioned
from parity import assert_readers_agree

from imagekit.lint import Severity, default_target, has_errors, lint_image

pytestmark = pytest.mark.slow

ROOT_UUID = "4f1c2b3a-5d6e-4f70-8a9b-0c1d2e3f4a5b"
IMAGES: dict[str, Path] = {}  # fixture name -> the image it built (test_readers_agree)
BOOT_IMG = Path("/usr/lib/grub/i386-pc/boot.img")
GOOD_ARGS = f"root=UUID={ROOT_UUID} ro console=tty0 console=ttyS0,115200 nvme_core.io_timeout=4294967295 net.ifnames=0"
ETH0 = "auto lo\niface lo inet loopback\n"  # /etc/network/interfaces; interfaces.d/eth0 as the recipes ship it:
ETH0_D = "allow-hotplug eth0\niface eth0 inet dhcp\n"


def grub_cfg(version: str, *, default: str = "0", search: str = ROOT_UUID, args: str = GOOD_ARGS,
             kernel: str | None = None, serial: bool = True, extra: str = "") -> str:
    head = f"set default={default}\nset fallback=1\nset timeout=1\n"
    if serial:
        head += "serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\n"
    entry = (f"menuentry 'Debian {{n}}' {{{{\n\tsearch --no-floppy --fs-uuid --set=root {search}\n"
             f"\tlinux {kernel or f'/boot/vmlinuz-{version}'} {args}\n\tinitrd /boot/initrd.img-{version}\n}}}}\n")
    return head + entry.format(n=0) + entry.format(n=1) + extra


def hvm_image(tmp: Path, kernel: Path, cfg: str, fstab: str, *, fat: int = 32, loader: bool = True,
              boot_mode: str | None = None, esp_id: str | None = None, eth0: bool = True) -> Path:
    """GPT: ESP (BOOTX64.EFI unless `loader` is False) + ext4 root with /boot, GRUB's boot.img in the MBR;
    ifupdown configuring eth0 unless `eth0` is False."""
    tree = boot_tree(tmp / "root", kernel, menu=None, fstab=fstab)
    if eth0:
        (tree / "etc/network/interfaces.d").mkdir(parents=True)
        (tree / "etc/network/interfaces").write_text(ETH0 + "source /etc/network/interfaces.d/*\n")
        (tree / "etc/network/interfaces.d/eth0").write_text(ETH0_D)
    (tree / "boot/grub").mkdir(parents=True, exist_ok=True)
    (tree / "boot/grub/grub.cfg").write_text(cfg)
    esp_tree = tmp / "esp"
    (esp_tree / "EFI/BOOT").mkdir(parents=True)
    if loader:
        (esp_tree / "EFI/BOOT/BOOTX64.EFI").write_bytes(b"MZ" + bytes(4094))
    mkvfat(tmp / "esp.fs", esp_tree, 64 * MiB, fat=fat, volume_id=esp_id)
    mkext(tmp / "root.fs", tree, 112 * MiB, uuid=ROOT_UUID)
    image = tmp / "hvm.img"
    partitioned(image, "gpt", [(tmp / "esp.fs", "U"), (tmp / "root.fs", "L")])
    with open(image, "r+b") as f:
        f.write(BOOT_IMG.read_bytes()[:440])
    if boot_mode:
        manifest = {"virtualization": "hvm", "boot_mode": boot_mode, "arch": "x86_64", "layout": "gpt-uefi"}
        image.with_name(image.name + ".manifest.json").write_text(json.dumps(manifest))
    return image


def rules(findings, severity=None) -> set[str]:
    return {f.rule for f in findings if severity is None or f.severity is severity}


@pytest.fixture(scope="module")
def good(tmp_path_factory, host_kernel):
    tmp = tmp_path_factory.mktemp("hvm-good")
    version = host_kernel.name.removeprefix("vmlinuz-")
    image = hvm_image(tmp, host_kernel, grub_cfg(version), f"UUID={ROOT_UUID} / ext4 defaults 0 1\n")
    IMAGES["good"] = image
    return image, lint_image(image, target="nitro")


def test_good_hvm_image_is_nitro_ready(good):
    _, findings = good
    assert not has_errors(findings), findings
    assert not rules(findings) & {"grubcfg-no-serial", "cmdline-nvme-timeout", "esp-not-fat32", "cmdline-console",
                                  "nic-name-eth0"}  # eth0 configured, net.ifnames=0 on the command line


ESP_ID = "1A2B-3C4D"


def test_esp_not_in_fstab_is_a_warning(good):
    _, findings = good  # its fstab mounts / only
    missing = [f for f in findings if f.rule == "fstab-esp-missing"]
    assert len(missing) == 1 and missing[0].severity is Severity.WARNING
    assert "/dev/sda1" in missing[0].message and "/boot/efi vfat umask=0077" in missing[0].hint


def test_esp_in_fstab(tmp_path, host_kernel):
    """fstab names the ESP by its FAT volume id: resolved (no fstab-unresolved), no fstab-esp-missing; a volume
    id that is not the ESP's is unresolved (and only that: the entry for /boot/efi is there)."""
    version = host_kernel.name.removeprefix("vmlinuz-")
    root = f"UUID={ROOT_UUID} / ext4 defaults 0 1\n"
    fstab = root + f"UUID={ESP_ID} /boot/efi vfat umask=0077 0 1\n"
    image = hvm_image(tmp_path / "ok", host_kernel, grub_cfg(version), fstab, esp_id=ESP_ID)
    found = rules(lint_image(image, target="nitro"))
    assert not found & {"fstab-esp-missing", "fstab-unresolved"}, found
    wrong = hvm_image(tmp_path / "wrong", host_kernel, grub_cfg(version), fstab, esp_id="0BAD-C0DE")
    findings = lint_image(wrong, target="nitro")
    assert "fstab-unresolved" in rules(findings, Severity.ERROR) and "fstab-esp-missing" not in rules(findings)
    assert any(f.rule == "fstab-unresolved" and f"UUID={ESP_ID} /boot/efi" in f.object for f in findings)


def test_target_follows_the_disk_without_a_manifest(good, tmp_path):
    image, _ = good
    assert default_target(image) == "hvm"  # GPT protective MBR + GRUB boot code
    pv = tmp_path / "pv.img"
    mkext(pv, None, 16 * MiB)
    assert default_target(pv) == "pv"


@pytest.fixture(scope="module")
def broken(tmp_path_factory, host_kernel):
    tmp = tmp_path_factory.mktemp("hvm-broken")
    version = host_kernel.name.removeprefix("vmlinuz-")
    other = "0badc0de-0000-4000-8000-000000000000"
    cfg = grub_cfg(version, default="7", kernel="/boot/vmlinuz-missing", serial=False,
                   args=f"root=UUID={other} ro console=tty0",
                   extra=f"menuentry 'elsewhere' {{\n\tsearch --fs-uuid --set=root {other}\n"
                         f"\tlinux /boot/vmlinuz-{version} root=UUID={ROOT_UUID}\n}}\n")
    fstab = f"UUID={ROOT_UUID} / ext4 defaults 0 1\n/dev/xvdf /data ext4 defaults 0 2\n"
    image = hvm_image(tmp, host_kernel, cfg, fstab, fat=16, loader=False, boot_mode="uefi")
    proc = subprocess.run([sys.executable, "-m", "imagekit", "lint", str(image), "--json"],
                          capture_output=True, text=True)
    nitro = lint_image(image, target="nitro")
    IMAGES["broken"] = image
    return proc, nitro


def test_broken_hvm_image_defaults_to_the_hvm_target(broken):
    proc, _ = broken
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["target"] == "hvm"  # from the manifest beside the image
    found = {(f["rule"], f["object"]) for f in report["findings"]}
    assert ("hvm-bootloader-missing", "disk") in found  # boot mode uefi, the ESP has no BOOTX64.EFI
    assert any(rule == "esp-not-fat32" and obj.endswith("(EFI system partition)") for rule, obj in found)


def test_broken_hvm_image_grub_cfg_rules(broken):
    _, findings = broken
    by_rule = {f.rule: f for f in findings}
    assert by_rule["grubcfg-default"].object.endswith("set default=7")
    missing = [f for f in findings if f.rule == "grubcfg-kernel-missing"]
    assert {f.object.split(" linux ")[-1] for f in missing} == {"/boot/vmlinuz-missing"}
    assert "does not exist on /dev/sda2" in missing[0].message
    unresolved = by_rule["grubcfg-search-unresolved"]
    assert "'elsewhere'" in unresolved.object and "UUID=0badc0de" in unresolved.message
    assert by_rule["grubcfg-no-serial"].severity is Severity.WARNING
    assert "root-unresolved" in rules(findings, Severity.ERROR)  # root=UUID of no filesystem
    assert "fstab-xvd-names" in rules(findings, Severity.ERROR)  # Nitro renames /dev/xvdf
    assert "cmdline-nvme-timeout" in rules(findings, Severity.WARNING)
    assert "cmdline-console" in rules(findings)  # no console=ttyS0
    nic = by_rule["nic-name-eth0"]  # interfaces.d/eth0, no net.ifnames=0: ens5 on Nitro, no network
    assert nic.severity is Severity.WARNING and "ens5" in nic.message and "net.ifnames=0" in nic.hint


def test_grub_rules_are_catalogued():
    from imagekit.lint import RULES

    for rule in ("grubcfg-missing", "grubcfg-kernel-missing", "grubcfg-search-unresolved", "esp-not-fat32",
                 "cmdline-nvme-timeout", "fstab-esp-missing", "nic-name-eth0"):
        assert rule in RULES




@pytest.mark.parametrize("name", ["good", "broken"])
def test_readers_agree(request, name):
    """Every target's findings, native reader vs libguestfs, on each HVM image above."""
    request.getfixturevalue(name)
    assert_readers_agree(IMAGES[name])


def test_grub_serial_is_asked_of_x86_only(broken):
    """arm64's GRUB keeps the firmware's console (the serial port under AAVMF and on Graviton: arm64-efi has no
    com0), so a grub.cfg without `serial` is no finding there; the same image as x86_64 gets the warning."""
    _, findings = broken
    assert "grubcfg-no-serial" in rules(findings)
    assert "grubcfg-no-serial" not in rules(lint_image(IMAGES["broken"], target="nitro", arch="arm64"))
