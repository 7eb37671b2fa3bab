"""Real TCG boots of small images (host cloud kernel + busybox): the failures a user meets, each named.

These images boot Debian's LZ4 bzImage from 1 KiB-block ext4, which PV-GRUB's own rules refuse, so they
test the GRUB 2 legacycfg loader's reports (`--loader pvgrub`, named in each test).
Boots here: fallback (PV-GRUB), panic, wrong root label (~30 s of initramfs waiting), and two that end
inside GRUB in seconds (every kernel missing, `root (hd0)` on a partitioned disk).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit.boot.direct import prepare_direct
from imagekit.boot.guest import find_disk, mount, open_guest, read_menu_lst
from imagekit.boot.harness import BootOptions, boot_image
from imagekit.boot.overlay import image_file, overlay
from imagekit.util.accel import detect
from tests.boot.conftest import requires_kernel
from tests.util import run_imagekit, sha256

pytestmark = [pytest.mark.slow, requires_kernel()]

Images = Callable[[str], Path]


def test_default_kernel_missing_boots_the_fallback_and_leaves_the_image_alone(small_images: Images,
                                                                               tmp_path: Path) -> None:
    image = small_images("fallback")
    before = sha256(image)
    log = tmp_path / "serial.log"
    proc = run_imagekit("boot", image, "--loader", "pvgrub", "--json", "--serial-log", log)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["booted"] and report["reason"] == "booted" and report["loader"] == "pvgrub"
    assert (report["schema"], report["verdict"]) == ("imagekit.boot/1", "pass")
    assert report["entry"] == {"title": "Debian cloud", "index": 1, "fallback": True}
    assert report["variant"] == "hd0" and report["probe"] == "init-hook"
    assert report["prepared_with"] == "debugfs"  # the init wrapped without libguestfs (fresh image: no cache yet)
    assert report["grub_errors"] == ["couldn't load file /boot/vmlinuz-missing"]
    assert report["kernel_version"].endswith("-cloud-amd64")
    assert 0 < report["seconds_to_first_kernel_line"] < report["seconds_to_sentinel"]
    assert any("console=ttyS0 put first on 2 kernel line(s)" in a for a in report["added"])
    assert report["serial_log"] == str(log) and "Falling back to `Debian cloud'" in log.read_text()
    assert sha256(image) == before
    assert not list(tmp_path.glob("*.qcow2")) and not list(image.parent.glob("*.qcow2"))


def test_direct_loader_picks_the_entry_pvgrub_booted(small_images: Images, tmp_path: Path) -> None:
    """The direct loader's choice (imagekit's parser) against GRUB's own, seen in the test above."""
    image = image_file(small_images("fallback"))
    accel = detect(None)
    with overlay(image, tmp_path) as ov, open_guest(ov, accel, image.path.name) as g:
        disk = find_disk(g, image.path.name)
        mount(g, disk)
        direct = prepare_direct(g, disk, read_menu_lst(g, disk) or "", tmp_path)
    assert (direct.entry.title, direct.index, direct.fallback) == ("Debian cloud", 1, True)
    assert direct.append == "console=ttyS0 root=LABEL=root ro console=hvc0"
    assert direct.kernel.stat().st_size > 1_000_000 and direct.initrd is not None


def test_every_kernel_missing(small_images: Images) -> None:
    report = boot_image(BootOptions(small_images("all-missing"), loader="pvgrub"))
    assert (report.booted, report.reason, report.entry) == (False, "no-entry-loaded", None)
    assert report.detail == ("GRUB: couldn't load file /boot/vmlinuz-missing; couldn't load file /boot/nope")
    assert report.exit_code == 1 and report.seconds_to_first_kernel_line is None


def test_root_hd0_on_a_partitioned_image(small_images: Images) -> None:
    report = boot_image(BootOptions(small_images("hd0-on-partitioned"), loader="pvgrub"))
    assert report.variant == "hd00" and report.reason == "no-entry-loaded"
    assert report.detail == ("GRUB: couldn't load file /boot/vmlinuz; entry 'Debian cloud': root (hd0) is the whole "
                             "disk, but the disk is partitioned: there is no filesystem there (use (hd0,0))")


def test_kernel_panic(small_images: Images) -> None:
    report = boot_image(BootOptions(small_images("panic"), loader="pvgrub"))
    assert report.reason == "kernel-panic"
    assert report.detail.startswith("Kernel panic: Attempted to kill init!")
    assert any("Kernel panic" in line for line in report.context)


def test_wrong_root_label(small_images: Images) -> None:
    report = boot_image(BootOptions(small_images("wrong-label"), loader="pvgrub"))
    assert report.reason == "root-not-found"
    assert report.detail == "LABEL=nosuch does not exist (the initramfs gave up waiting for it)"
