"""HVM boot pieces that need no guest: the disk label, the firmware choice, QEMU's command line, the
firmware and GRUB 2 console lines (as SeaBIOS 1.16, OVMF (edk2 2022.11) and GRUB 2.06 print them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imagekit.boot.console import Reason, Watcher
from imagekit.boot.firmware import BOTH, Firmware, choose, firmware_argv
from imagekit.boot.hvm_boot import hvm_argv
from imagekit.boot.probe import LINUX_COMMANDS, add_serial_console
from imagekit.boot.qemu import Machine
from imagekit.image.disklabel import parse_head
from imagekit.manifest import Manifest
from imagekit.util.accel import Accel
from imagekit.util.errors import UsageError
from tests.boot.hvm_images import make_blank, make_empty_esp
from tests.boot.test_console import watch


def test_seabios_no_bootable_device() -> None:
    w = watch("\x1bcSeaBIOS (version 1.16.2-debian-1.16.2-1)", "Booting from Hard Disk...",
              "Boot failed: not a bootable disk", "", "No bootable device.")
    v = w.verdict(timed_out=False)
    assert w.done and v.reason is Reason.FIRMWARE_NO_BOOTABLE_DEVICE
    assert v.detail == "SeaBIOS: Boot failed: not a bootable disk; No bootable device"


def test_ovmf_without_a_boot_option() -> None:
    w = watch('BdsDxe: failed to load Boot0001 "UEFI QEMU NVMe Ctrl imagekit-root 1" from PciRoot(0x0)/Pci(0x2,0x0)/'
              "NVMe(0x1,00-00-00-00-00-00-00-00): Not Found",
              'BdsDxe: loading Boot0002 "EFI Internal Shell" from Fv(7CB8BDC9)/FvFile(7C04A583)')
    assert w.done and w.verdict(timed_out=False).detail == (
        'OVMF: failed to load Boot0001 "UEFI QEMU NVMe Ctrl imagekit-root 1": Not Found; it started the UEFI Shell')
    v = watch("BdsDxe: No bootable option or device was found.").verdict(timed_out=False)
    assert v.reason is Reason.FIRMWARE_NO_BOOTABLE_DEVICE
    assert v.detail == "OVMF: no boot option on the disk; no bootable option or device was found"


def test_grub_rescue() -> None:
    w = watch("error: no such device: 0a1b2c3d-0000-4000-8000-000000000000.", "Entering rescue mode...",
              "grub rescue> ")
    v = w.verdict(timed_out=False)
    assert w.done and v.reason is Reason.GRUB_RESCUE and v.t_bootloader == 0.0
    assert v.detail == ("GRUB: no such device: 0a1b2c3d-0000-4000-8000-000000000000; stopped at the grub rescue> "
                        "prompt")


def test_grub2_missing_kernel_without_fallback_is_the_grub_error_not_a_timeout() -> None:
    w = watch("Welcome to GRUB!", "  Booting `Debian GNU/Linux'", "error: file `/boot/vmlinuz-6.1.0-99' not found.",
              "error: you need to load the kernel first.", "Press any key to continue...")
    v = w.verdict(timed_out=True, silent_for=120)
    assert v.reason is Reason.NO_ENTRY_LOADED and v.detail == "GRUB: file `/boot/vmlinuz-6.1.0-99' not found"
    assert v.t_bootloader == 0.0


def test_disk_label() -> None:
    assert parse_head(b"") == parse_head(bytes(512))
    assert not parse_head(b"").may_hold_root
    mbr = bytearray(34 * 512)
    mbr[0x180:0x185] = b"GRUB "
    mbr[446 + 4], mbr[510:512] = 0x83, b"\x55\xaa"
    label = parse_head(bytes(mbr))
    assert (label.grub_in_mbr, label.gpt, label.esp, label.linux_partitions) == (True, False, False, 1)


def test_disk_label_of_real_gpt(tmp_path: Path) -> None:
    head = make_empty_esp(tmp_path / "esp.img").read_bytes()[: 34 * 512]
    label = parse_head(head)
    assert (label.gpt, label.esp, label.grub_in_mbr, label.may_hold_root) == (True, True, False, False)
    assert choose(None, None, label) == (Firmware.UEFI,)
    assert choose(None, None, parse_head(make_blank(tmp_path / "b.img").read_bytes()[:17408])) is None


def manifest(data: dict[str, str]) -> Manifest:
    """A hand-written manifest as its reader reads it (the JSON's strings become the recipe's enums)."""
    return Manifest.model_validate_json(json.dumps(data))


def test_firmware_choice() -> None:
    label = parse_head(b"")
    assert choose(None, manifest({"virtualization": "hvm", "layout": "gpt-hybrid"}), label) == BOTH
    assert choose(None, manifest({"virtualization": "hvm", "layout": "mbr-bios"}), label) == (Firmware.BIOS,)
    assert choose(None, manifest({"virtualization": "hvm", "boot_mode": "uefi"}), label) == (Firmware.UEFI,)
    assert choose("bios", manifest({"virtualization": "hvm", "layout": "gpt-uefi"}), label) == (Firmware.BIOS,)
    assert choose(None, manifest({"virtualization": "paravirtual", "layout": "hd0"}), label) is None
    with pytest.raises(UsageError, match=r"^--firmware: 'efi' is not one of bios, uefi, both$"):
        choose("efi", None, label)


def test_grub_cfg_linux_lines_get_the_serial_console_last() -> None:
    cfg = ("menuentry 'Debian' {\n\tlinux\t/boot/vmlinuz-6.1 root=UUID=abc ro console=tty0\n\tinitrd /boot/i\n}\n"
           "menuentry 'EFI' {\n  linuxefi /vmlinuz ro console=tty0 console=ttyS0,115200\n}\n"
           "menuentry 'PV console' {\n  linux /vmlinuz console=ttyS0 console=hvc0\n}\n")
    text, changed = add_serial_console(cfg, LINUX_COMMANDS, last=True)
    assert changed == 2 and "\tlinux\t/boot/vmlinuz-6.1 root=UUID=abc ro console=tty0 console=ttyS0\n" in text
    assert "linuxefi /vmlinuz ro console=tty0 console=ttyS0,115200\n" in text
    assert "  linux /vmlinuz console=ttyS0 console=hvc0 console=ttyS0\n" in text
    assert add_serial_console(text, LINUX_COMMANDS, last=True) == (text, 0)


def test_qemu_command_line_for_ovmf_and_nvme(tmp_path: Path) -> None:
    firmware = firmware_argv(Firmware.UEFI, tmp_path)
    argv = hvm_argv(Machine(512, 1, Accel("tcg", "test")), firmware=firmware, interface="nvme",
                    disk=tmp_path / "o.qcow2", serial_log=tmp_path / "s.log")
    assert argv[argv.index("-machine") + 1] == "pc,graphics=off" and "-kernel" not in argv
    code, nvram = firmware[1], firmware[3]
    assert code.startswith("if=pflash,format=raw,unit=0,readonly=on,file=/") and code.endswith(".fd")
    assert nvram == f"if=pflash,format=raw,unit=1,file={tmp_path}/OVMF_VARS.uefi.fd"
    assert (tmp_path / "OVMF_VARS.uefi.fd").stat().st_size > 0
    i = argv.index("-device")
    assert argv[i - 1:i + 2] == [f"if=none,id=root,file={tmp_path}/o.qcow2,format=qcow2,cache=unsafe", "-device",
                                 "nvme,drive=root,serial=imagekit-root,bootindex=1"]
    assert argv[-4:] == ["-netdev", "user,id=n0", "-device", "virtio-net-pci,romfile=,netdev=n0"]
    assert firmware_argv(Firmware.BIOS, tmp_path) == []


def test_grub2_prompt_in_an_hvm_boot_is_grub_cfg_not_found() -> None:
    w = Watcher(firmware_boot=True)
    for i, line in enumerate(["Welcome to GRUB!", "error: file `/boot/grub/grub.cfg' not found.", "grub> "]):
        w.feed(float(i), line)
    v = w.verdict(timed_out=False)
    assert v.reason is Reason.GRUB_CFG_NOT_FOUND
    assert v.detail == "GRUB: file `/boot/grub/grub.cfg' not found; stopped at the grub> prompt"
    assert watch("grub> ").verdict(timed_out=False).reason is Reason.MENU_LST_NOT_FOUND  # PV-GRUB: unchanged


def test_grub_writing_twice_to_the_serial_port() -> None:
    """`terminal_output serial console` under SeaBIOS's sercon: GRUB's two outputs interleave on ttyS0."""
    v = watch("  Booting `Debian'", "error: file `/boot/vmlinuz-6.1' not found.", "'",
              "error: file `/boot/vmlinuz-6.1' not founderror: you need to load the kernel first.", ".",
              "error: you need to load the kernel first", "Press any key to continue...",
              " Failed to boot both default and fallback entries.").verdict(timed_out=False)
    assert v.reason is Reason.NO_ENTRY_LOADED and v.detail == "GRUB: file `/boot/vmlinuz-6.1' not found"


def test_title_of_a_line_written_twice() -> None:
    v = watch("  Booting `small (6.1.0)'Booting `small (6.1.0)'", "Linux version 6.1.0").verdict(timed_out=True)
    assert v.entry_title == "small (6.1.0)"


def test_grub_error_run_into_the_next_line() -> None:
    v = watch("error: no such device: c7c6c54f-7d0c.GNU GRUB  version 2.06-13+deb12u2", "grub> ")
    assert v.verdict(timed_out=False).grub_errors == ("no such device: c7c6c54f-7d0c",)
    assert watch("error: file `/boot/vmlinuz-6.1.0-56.x' not found.").grub_errors == [
        "file `/boot/vmlinuz-6.1.0-56.x' not found"]


def test_missing_ovmf_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from imagekit.boot import firmware

    monkeypatch.setattr(firmware, "OVMF_PAIRS", ((str(tmp_path / "CODE.fd"), str(tmp_path / "VARS.fd")),))
    with pytest.raises(UsageError) as exc:
        firmware_argv(Firmware.UEFI, tmp_path)
    assert exc.value.message == f"--firmware uefi: no OVMF firmware on this host (looked for {tmp_path}/CODE.fd)"
    assert exc.value.hint == "apt-get install ovmf (scripts/setup does)"


def test_timeout_during_grubs_wait_after_a_failed_entry_is_a_timeout() -> None:
    """GRUB waits 10 s ("Press any key") after a failed entry before its fallback: a --timeout inside that
    wait is the user's timeout, not no-entry-loaded (CI saw this race with --timeout 4)."""
    w = watch("  Booting `missing'", "error: file `/boot/vmlinuz-missing' not found.", "Press any key to continue...")
    v = w.verdict(timed_out=True)
    assert v.reason is Reason.TIMEOUT and "vmlinuz-missing' not found" in v.detail
    assert w.verdict(timed_out=True, silent_for=120).reason is Reason.NO_ENTRY_LOADED
