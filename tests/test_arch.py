"""arm64 (Graviton) recipes: the arch table, the kernel profile, and the layouts refused at recipe load."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from imagekit.boot.firmware import Firmware, firmware_argv
from imagekit.boot.hvm_boot import hvm_argv
from imagekit.boot.qemu import Machine
from imagekit.bootloader.grub2 import make_core, render_grub_cfg
from imagekit.kernel.bzimage import load_vmlinux
from imagekit.recipe.arch import ARCHES, Arch, spec_named, spec_of
from imagekit.recipe.kernel_profiles import load_profile
from imagekit.recipe.load import load_recipe
from imagekit.recipe.model import Layout
from imagekit.rootfs.bootstrap import check_foreign_host
from imagekit.util.errors import ImagekitError, RecipeError, UsageError
from tests.boot.hvm_images import make_empty_esp
from tests.util import RECIPES, run_imagekit

ARM64 = RECIPES / "debian-12-arm64-uefi.toml"


def recipe_text(layout: str, extra: str = "") -> str:
    return (f'name = "t"\narch = "arm64"\nsize = "2G"\nlayout = "{layout}"\n[rootfs]\nsource = "bootstrap"\n'
            f'[kernel]\nprofile = "debian-cloud-arm64"\n{extra}')


def test_arm64_recipe_loads_with_its_profile() -> None:
    recipe = load_recipe(ARM64)
    assert (recipe.arch, recipe.layout) == (Arch.ARM64, Layout.GPT_UEFI)
    profile = load_profile(recipe.kernel.profile, recipe_path=recipe.path)
    assert profile.arch is Arch.ARM64
    assert "linux-image-cloud-arm64" in profile.packages and "grub-efi-arm64-bin" in profile.packages
    assert profile.xen_pv is False


@pytest.mark.parametrize("layout", ["hd0", "hd00", "mbr-bios", "gpt-hybrid"])
def test_arm64_refuses_pv_and_bios_layouts_naming_the_key(tmp_path: Path, layout: str) -> None:
    path = tmp_path / "r.toml"
    path.write_text(recipe_text(layout))
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert err.value.key == "layout"
    kind = "a PV-GRUB (Xen PV) layout" if layout.startswith("hd") else "a BIOS layout"
    assert str(err.value) == f"{path}: layout: {layout} is {kind}: arm64 (Graviton) boots UEFI only; use gpt-uefi"


def test_arm64_gpt_uefi_with_a_separate_boot_loads(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(recipe_text("gpt-uefi", '[filesystems.boot]\ntype = "ext4"\nlabel = "boot"\nsize = "256M"\n'))
    assert load_recipe(path).separate_boot


def test_build_layout_option_is_refused_for_arm64(tmp_path: Path) -> None:
    """`imagekit build --layout hd00` on an arm64 recipe: exit 2, one line naming the recipe key."""
    result = run_imagekit("build", ARM64, "--layout", "hd00", "-o", tmp_path / "x.img", check=False)
    assert result.returncode == 2, result.stderr
    assert "layout: hd00 is a PV-GRUB (Xen PV) layout: arm64 (Graviton) boots UEFI only" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.img").exists()


def test_i386_stays_refused_with_its_reason(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(recipe_text("hd0").replace('arch = "arm64"', 'arch = "i386"'))
    with pytest.raises(RecipeError, match="arch: i386 is recognised but not supported yet"):
        load_recipe(path)


def test_arch_table_rows() -> None:
    arm = spec_of("arm64")
    assert (arm.debian, arm.ec2, arm.grub_platform, arm.esp_path) == ("arm64", "arm64", "arm64-efi",
                                                                      "EFI/BOOT/BOOTAA64.EFI")
    x86 = spec_of(None)
    assert (x86.debian, x86.grub_platform, x86.esp_path, x86.qemu) == ("amd64", "x86_64-efi",
                                                                        "EFI/BOOT/BOOTX64.EFI", "qemu-system-x86_64")
    assert {a.value for a in ARCHES} == {"x86_64", "i386", "arm64"}
    assert all(row.layouts <= {v.value for v in Layout} for row in ARCHES.values())


# --- the foreign bootstrap's host pieces (rootfs/bootstrap.py:check_foreign_host) ---------------------------

def binfmt_tree(tmp_path: Path, entry: str | None) -> Path:
    """A binfmt_misc directory as the kernel shows it: `status`, and the qemu-aarch64 entry when given."""
    d = tmp_path / "binfmt_misc"
    d.mkdir()
    (d / "status").write_text("enabled\n")
    if entry is not None:
        (d / "qemu-aarch64").write_text(entry)
    return d


HANDLER = ("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset 0\n"
           "magic 7f454c460201010000000000000000000200b700\n")


def test_missing_binfmt_handler_is_explained(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as err:
        check_foreign_host(spec_of("arm64"), binfmt_tree(tmp_path, None))
    assert "no qemu-aarch64 handler registered" in str(err.value)
    assert "qemu-user-static" in (err.value.hint or "")
    assert err.value.exit_code == 2


def test_unmounted_binfmt_misc_is_explained(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="binfmt_misc is not mounted at"):
        check_foreign_host(spec_of("arm64"), tmp_path)


def test_disabled_handler_is_explained(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="qemu-aarch64 is disabled") as err:
        check_foreign_host(spec_of("arm64"), binfmt_tree(tmp_path, HANDLER.replace("enabled", "disabled")))
    assert "update-binfmts --enable qemu-aarch64" in (err.value.hint or "")


def test_handler_without_its_interpreter_is_explained(tmp_path: Path) -> None:
    entry = HANDLER.replace("flags: PF", "flags: P").replace("/usr/libexec/qemu-binfmt/aarch64-binfmt-P",
                                                              str(tmp_path / "gone"))
    with pytest.raises(UsageError, match=r"interpreter .*gone is missing"):
        check_foreign_host(spec_of("arm64"), binfmt_tree(tmp_path, entry))


def test_registered_handler_and_native_arch_pass(tmp_path: Path) -> None:
    check_foreign_host(spec_of("arm64"), binfmt_tree(tmp_path, HANDLER))
    check_foreign_host(spec_of("x86_64"), tmp_path)  # native: nothing is looked at


@pytest.mark.foreign
def test_this_hosts_binfmt_runs_arm64() -> None:
    """CI's host (scripts/setup) has what the arm64 bootstrap needs: the real /proc/sys/fs/binfmt_misc."""
    check_foreign_host(spec_of("arm64"))


# --- boot: an arm64 image under qemu-system-aarch64 -M virt with AAVMF -------------------------------------

@pytest.mark.slow  # AAVMF under TCG to its failure: ~9 s (the fast loop: README, Tests)
def test_arm64_image_without_bootaa64_fails_with_the_firmware_reason(tmp_path: Path) -> None:
    """A GPT disk whose ESP has no EFI/BOOT/BOOTAA64.EFI, the manifest saying arm64: AAVMF finds nothing to
    boot on the NVMe disk and says so; the report names that, not a timeout. No bootstrap needed."""
    image = make_empty_esp(tmp_path / "arm64.img")
    (tmp_path / "arm64.img.manifest.json").write_text(
        '{"arch": "arm64", "virtualization": "hvm", "layout": "gpt-uefi", "boot_mode": "uefi"}')
    proc = run_imagekit("boot", image, "--json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["booted"], report["reason"], report["firmware"]) == (False, "firmware-no-bootable-device", "uefi")
    assert report["detail"].startswith('AAVMF: failed to load Boot0001 "UEFI QEMU NVMe Ctrl imagekit-root 1"')
    assert (report["disk_interface"], report["accel"]) == ("nvme", "tcg")
    assert report["probe"] == "none"


def test_arm64_image_refuses_bios_firmware(tmp_path: Path) -> None:
    image = make_empty_esp(tmp_path / "arm64.img")
    (tmp_path / "arm64.img.manifest.json").write_text(
        '{"arch": "arm64", "virtualization": "hvm", "layout": "gpt-uefi"}')
    proc = run_imagekit("boot", image, "--firmware", "bios")
    assert proc.returncode == 2, proc.stderr
    assert "--firmware bios: an arm64 image boots UEFI only" in proc.stderr


def test_arm64_qemu_command_line(tmp_path: Path) -> None:
    """The exact machine an arm64 boot gets: qemu-system-aarch64, virt, TCG with -cpu max, AAVMF as two
    pflash drives (the VARS a fresh copy), the disk on NVMe as on Nitro."""
    spec = spec_of("arm64")
    firmware = firmware_argv(Firmware.UEFI, tmp_path, spec)
    argv = hvm_argv(Machine(1024, 2), firmware=firmware, interface="nvme", disk=tmp_path / "d.qcow2",
                    serial_log=tmp_path / "s.log", spec=spec)
    assert argv[:8] == ["qemu-system-aarch64", "-accel", "tcg,thread=multi", "-cpu", "max,pauth-impdef=on",
                        "-machine", "virt", "-m"]
    assert firmware == ["-drive", "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/AAVMF/AAVMF_CODE.fd",
                        "-drive", f"if=pflash,format=raw,unit=1,file={tmp_path / 'OVMF_VARS.uefi.fd'}"]
    assert (tmp_path / "OVMF_VARS.uefi.fd").read_bytes() == Path("/usr/share/AAVMF/AAVMF_VARS.fd").read_bytes()
    assert "nvme,drive=root,serial=imagekit-root,bootindex=1" in argv


# --- lint's kernel reader: Debian's arm64 vmlinuz is an Image (PE "MZ", "ARM\x64" at 0x38) -----------------

def arm64_image_bytes() -> bytes:
    header = bytearray(b"MZ" + bytes(62))
    header[0x38:0x3C] = b"ARM\x64"
    return bytes(header) + b"\x00" * 4096


def test_arm64_image_is_read_as_an_aarch64_kernel() -> None:
    plain = load_vmlinux(arm64_image_bytes(), "vmlinuz-6.1.0-cloud-arm64")
    assert (plain.elf.arch, plain.elf.bits, plain.source_format) == ("aarch64", 64, "arm64-image")
    packed = load_vmlinux(gzip.compress(arm64_image_bytes()), "vmlinuz-6.1.0-cloud-arm64")
    assert (packed.elf.arch, packed.source_format, packed.data) == ("aarch64", "gzip-arm64-image",
                                                                   arm64_image_bytes())


def test_arch_names_map_to_the_kernel_machines_lint_compares() -> None:
    assert spec_named("arm64").elf_machine == "aarch64" and spec_named(None).elf_machine == "x86_64"


# --- GRUB arm64-efi -----------------------------------------------------------------------------------------

def test_arm64_grub_cfg_keeps_the_firmware_console() -> None:
    """GRUB arm64-efi has no com0 (`serial --unit=0` would fail): grub.cfg keeps the UEFI console, which is
    the serial port under AAVMF and on Graviton; x86's keeps GRUB's own serial terminal."""
    arm = render_grub_cfg([], boot_uuid="u", boot_mode="uefi", serial=spec_of("arm64").grub_serial)
    assert "terminal_output console\n" in arm and "serial --unit" not in arm
    x86 = render_grub_cfg([], boot_uuid="u", boot_mode="uefi", serial=spec_of("x86_64").grub_serial)
    assert "serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\n" in x86


def test_arm64_efi_without_the_module_tree_names_the_package(tmp_path: Path) -> None:
    spec = spec_of("arm64")
    assert spec.grub_lib(tmp_path) == tmp_path / "usr/lib/grub"  # the bootstrapped tree's, never the host's
    with pytest.raises(ImagekitError, match=r"no GRUB arm64-efi modules in .*usr/lib/grub/arm64-efi") as err:
        make_core("arm64-efi", tmp_path / "BOOTAA64.EFI", boot_uuid="u", prefix="/boot/grub", boot_fs="ext4",
                  workdir=tmp_path, grub_lib=spec.grub_lib(tmp_path))
    assert "grub-efi-arm64-bin" in (err.value.hint or "")
