"""Pieces of the boot harness that need no guest: menu.lst edits, device mapping, GRUB and xl configs."""

from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path

import pytest

from imagekit.boot import xen
from imagekit.boot.direct import map_devices
from imagekit.boot.guest import Disk
from imagekit.boot.probe import SAY, add_serial_console
from imagekit.boot.pvgrub import Variant, build_core, grub_cfg
from imagekit.boot.qemu import Machine, qemu_argv
from imagekit.util.accel import Accel
from tests.util import run_imagekit

HD0 = Disk(Variant.HD0, "/dev/sda", "/dev/sda", False)
HD00 = Disk(Variant.HD00, "/dev/sda1", "/dev/sda1", False)


def test_serial_console_goes_first_on_every_kernel_line() -> None:
    text = "default 0\ntitle A\n\troot (hd0)\n\tkernel /boot/vmlinuz root=LABEL=root console=hvc0\n" \
           "title B\n  kernel /boot/b\ntitle C\nkernel /c console=ttyS0\n"
    new, changed = add_serial_console(text)
    assert changed == 2
    assert "\tkernel /boot/vmlinuz console=ttyS0 root=LABEL=root console=hvc0\n" in new
    assert "  kernel /boot/b console=ttyS0\n" in new and "kernel /c console=ttyS0\n" in new
    assert add_serial_console(new) == (new, 0)


def test_ec2_device_names_are_mapped() -> None:
    assert map_devices("root=/dev/xvda1 ro console=hvc0", HD0) == (
        "root=/dev/vda ro console=hvc0", ("root=/dev/xvda1 -> root=/dev/vda (EC2 device name; QEMU's disk is virtio)",))
    assert map_devices("root=/dev/sda1", HD00)[0] == "root=/dev/vda1"
    assert map_devices("root=LABEL=root", HD00) == ("root=LABEL=root", ())


def test_grub_cfg_reads_only_where_the_aki_looks() -> None:
    hd0, hd00 = grub_cfg(Variant.HD0), grub_cfg(Variant.HD00)
    assert "set root=(hd0)\n" in hd0 and "legacy_source (hd0)/boot/grub/menu.lst\n" in hd0
    assert "legacy_source (hd0,msdos1)/boot/grub/menu.lst\n" in hd00 and "set timeout=0\n" in hd00
    assert "terminal_output serial\n" in hd0


def test_core_image_is_built_once_and_bootable_as_a_kernel(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEKIT_CACHE_DIR", str(tmp_path))
    core = build_core(Variant.HD0)
    assert core.read_bytes()[0x202:0x206] == b"HdrS"  # lnxboot.img: a Linux boot header QEMU's -kernel takes
    mtime = core.stat().st_mtime_ns
    assert build_core(Variant.HD0).stat().st_mtime_ns == mtime
    assert build_core(Variant.HD00) != core


def test_qemu_command_line(tmp_path: Path) -> None:
    argv = qemu_argv(Machine(512, 1, Accel("tcg", "test")), disk=tmp_path / "o.qcow2",
                     serial_log=tmp_path / "s.log", kernel=tmp_path / "k", initrd=tmp_path / "i", append="a b")
    assert argv[:5] == ["qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "max"]
    assert argv[argv.index("-m"):argv.index("-m") + 2] == ["-m", "512"]
    assert f"file={tmp_path}/o.qcow2,if=virtio,format=qcow2,cache=unsafe" in argv
    assert argv[-6:] == ["-kernel", f"{tmp_path}/k", "-initrd", f"{tmp_path}/i", "-append", "a b"]


def test_xl_config_attaches_hd0_as_a_partition(tmp_path: Path) -> None:
    cfg = xen.xl_config("t", kernel=tmp_path / "grub.bin", disk=tmp_path / "o.qcow2", disk_format="qcow2",
                        variant=Variant.HD0, machine=Machine(512, 1))
    assert 'type = "pv"\n' in cfg and f'kernel = "{tmp_path}/grub.bin"\n' in cfg
    assert f'disk = [ "format=qcow2, vdev=xvda1, access=rw, backendtype=qdisk, target={tmp_path}/o.qcow2" ]' in cfg
    hd00 = xen.xl_config("t", kernel=Path("/k"), disk=Path("/d.img"), disk_format="raw", variant=Variant.HD00,
                         machine=Machine(512, 1))
    assert 'disk = [ "format=raw, vdev=xvda, access=rw, target=/d.img" ]' in hd00


@pytest.mark.skipif(not (xen.GRUB_XEN_DIR / "legacycfg.mod").is_file(), reason="grub-xen-bin not installed")
def test_pvgrub2_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEKIT_CACHE_DIR", str(tmp_path))
    image = xen.build_pvgrub2(Variant.HD0)
    assert image.read_bytes()[:4] == b"\x7fELF"
    strings = subprocess.run(["strings", image], capture_output=True, text=True).stdout
    assert "legacy_source ($root)/boot/grub/menu.lst" in strings


def test_xen_without_dom0_exits_2(tmp_path: Path) -> None:
    image = tmp_path / "x.img"
    image.write_bytes(b"\0" * 2 * 1024 * 1024)
    proc = run_imagekit("boot", image, "--hypervisor", "xen")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: --hypervisor xen: no Xen dom0 here")


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    proc = run_imagekit("boot", tmp_path / "missing.img")
    assert proc.returncode == 2 and "missing.img: no such image file" in proc.stderr
    tiny = tmp_path / "tiny.img"
    tiny.write_bytes(b"\0" * 2 * 1024 * 1024)  # a disk's size: the option is what is refused
    proc = run_imagekit("boot", tiny, "--memory", "64")
    assert proc.returncode == 2 and proc.stderr.startswith("error: --memory: 64 MiB")


def test_hvm_options_that_mean_pv_only_exit_2(tmp_path: Path) -> None:
    image = tmp_path / "hvm.img"
    image.write_bytes(b"\0" * 2 * 1024 * 1024)
    (tmp_path / "hvm.img.manifest.json").write_text('{"virtualization": "hvm", "layout": "gpt-uefi"}')
    proc = run_imagekit("boot", image, "--loader", "direct")
    assert proc.returncode == 2 and proc.stderr.startswith("error: --loader direct: an HVM image boots through")
    (tmp_path / "hvm.img.manifest.json").write_text('{"virtualization": "paravirtual", "layout": "hd0"}')
    proc = run_imagekit("boot", image, "--firmware", "uefi")
    assert proc.returncode == 2 and proc.stderr.startswith("error: --firmware uefi: the manifest says this is a "
                                                            "paravirtual image")


def test_probe_says_a_line_again_when_the_tty_was_hung_up() -> None:
    """The getty's vhangup makes a write in flight fail (EIO): say() writes the line again, once it lands,
    and gives up after a bound on a device that never takes it (here /dev/full: ENOSPC), going on to the next."""
    master, slave = pty.openpty()
    try:
        tty = os.ttyname(slave)
        failing_echo = ('left=3; echo() { if [ "$left" -gt 0 ]; then left=$((left-1)); return 1; fi; '
                        'command echo "$@"; }')
        script = "\n".join([failing_echo, SAY.replace("/dev/ttyS0 /dev/console", f"{tty} /dev/full"),
                            'say "IMAGEKIT-PROBE: mount target=/x"', 'echo "left=$left" >&2'])
        done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30, check=True)
        out = os.read(master, 4096).decode()
    finally:
        os.close(master)
        os.close(slave)
    # the pty's first 3 writes failed, its 4th landed; /dev/full took none and did not stop it
    assert out.replace("\r", "").splitlines() == ["IMAGEKIT-PROBE: mount target=/x"]
    assert done.stderr.strip() == "left=0"


def test_tcg_boots_skip_the_kernel_s_io_apic_timer_check_kvm_boots_do_not(tmp_path: Path) -> None:
    from dataclasses import replace

    from imagekit.boot import probe
    from imagekit.boot.harness import TCG_KERNEL_ARG_NOTE, with_tcg_kernel_arg
    from imagekit.boot.prepared import Prepared
    from imagekit.boot.pvgrub097 import Grub097Boot, Grub097Plan
    from imagekit.pvgrub.menu import BootPlan

    disk = Disk(Variant.HD0, "/dev/sda", "/dev/sda", False)
    plain = Prepared(disk, None, probe.ProbeKind.NONE, ("probe",), None, ())
    grub097 = Grub097Boot(Grub097Plan("1.03", BootPlan(None, (), ()), (), None), tmp_path / "k", None,
                          "root=LABEL=root ro", ())
    prepared = replace(plain, grub097=grub097)
    tcg = with_tcg_kernel_arg(prepared, Accel("tcg", "test"))
    assert tcg.grub097 is not None and tcg.grub097.append == "root=LABEL=root ro no_timer_check"
    assert tcg.added == ("probe", TCG_KERNEL_ARG_NOTE)
    assert with_tcg_kernel_arg(prepared, Accel("kvm", "test")) == prepared
    assert with_tcg_kernel_arg(plain, Accel("tcg", "test")) == plain  # GRUB 2 reads menu.lst's line
