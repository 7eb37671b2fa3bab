"""--loader pvgrub097 on real images built by imagekit (busybox + the host's Debian cloud kernel, whose bzImage
payload is LZ4), some edited afterwards with debugfs -w: GRUB 0.97 (Debian's grub-legacy 0.97-80) runs the
menu, Xen's loader rules judge the kernel, QEMU boots the ELF under TCG.

One TCG boot (the fallback image); every other test is decided before QEMU starts.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit.boot.harness import BootOptions, boot_image
from imagekit.boot.pvgrub import Variant
from imagekit.boot.pvgrub097 import fallbacks, plan
from imagekit.kernel.bzimage import convert_to_aki
from imagekit.pvgrub.menu import read_menu
from tests.boot.conftest import INITRD, KERNEL, requires_kernel, userland
from tests.util import SMALL_RECIPE, run_imagekit, sha256

pytestmark = requires_kernel()

INITRD_NAME = Path(INITRD).name if INITRD else ""
BZIMAGE = Path(KERNEL).name if KERNEL else ""  # a PV build keeps it beside the PV-safe kernel it boots
Build = Callable[..., Path]


def entry(title: str, kernel: str | None = None) -> str:
    lines = ["[[boot.entries]]", f'title = "{title}"']
    if kernel:
        lines += [f'kernel = "{kernel}"', f'initrd = "{INITRD_NAME}"']
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def aki_kernel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The host's LZ4 bzImage as `imagekit kernel aki` makes it: the ELF vmlinux, gzipped (seed 004)."""
    kernel = sorted(glob.glob("/boot/vmlinuz-*-cloud-amd64"))[-1]
    out = tmp_path_factory.mktemp("aki") / "aki-vmlinux.gz"
    convert_to_aki(kernel, out)
    return out


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """imagekit build of a busybox tree (an init that stays up) with extra files in /boot, hd0 layout; each
    distinct build made once per module (tests edit copies, never the image: debugfs_edit)."""
    counter = iter(range(100))
    built: dict[tuple[str, tuple[tuple[str, Path], ...]], Path] = {}

    def make(boot: str = "", files: dict[str, Path] | None = None) -> Path:
        key = (boot, tuple(sorted((files or {}).items())))
        if key not in built:
            built[key] = build_one(boot, files)
        return built[key]

    def build_one(boot: str, files: dict[str, Path] | None) -> Path:
        work = tmp_path_factory.mktemp(f"build{next(counter)}")
        userland(work / "tree")
        (work / "tree/boot").mkdir()
        for name, src in (files or {}).items():
            shutil.copy(src, work / "tree/boot" / name)
        recipe = work / "pv.toml"
        recipe.write_text(SMALL_RECIPE.format(name="pv", layout="hd0", size="256M", extra=boot))
        image = work / "pv.img"
        run_imagekit("build", recipe, "-o", image, "--no-lint", check=True)
        return image

    return make


def debugfs_edit(image: Path, menu: Callable[[str], str], remove: tuple[str, ...] = ()) -> Path:
    """A copy of image (and its manifest) with menu.lst rewritten by `menu` and files removed (debugfs -w)."""
    copy = image.with_name(f"edited-{len(list(image.parent.glob('edited-*.img')))}.img")
    shutil.copy(image, copy)
    shutil.copy(image.with_name(image.name + ".manifest.json"), copy.with_name(copy.name + ".manifest.json"))
    text = subprocess.run(["debugfs", "-R", "cat /boot/grub/menu.lst", copy], capture_output=True, text=True,
                          check=True).stdout
    local = copy.with_suffix(".menu.lst")
    local.write_text(menu(text))
    commands = [f"rm {f}" for f in remove] + ["rm /boot/grub/menu.lst", f"write {local} /boot/grub/menu.lst"]
    subprocess.run(["debugfs", "-w", "-f", "-", copy], input="\n".join(commands) + "\n", text=True, check=True,
                   capture_output=True)
    return copy


@pytest.mark.slow  # a build and GRUB 0.97's plan: ~9 s (the fast loop: README, Tests)
def test_lz4_bzimage_refused_before_qemu(build: Build) -> None:
    """The shipped kind of kernel: Debian's LZ4 bzImage. Xen's loader refuses it, GRUB has no fallback: exit 1,
    pvgrub-kernel-format, and QEMU never started (the appliance launch runs beside GRUB 0.97 and is dropped)."""
    image = build(entry("Debian bzImage", BZIMAGE))
    proc = run_imagekit("boot", image, "--loader", "pvgrub097", "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "==> boot" not in proc.stderr
    report = json.loads(proc.stdout)
    assert (report["booted"], report["reason"], report["loader"], report["variant"]) == \
        (False, "pvgrub-kernel-format", "pvgrub097", "hd0")
    assert report["seconds_qemu"] == 0 and report["entry"] is None and report["serial_log"] == ""
    assert report["grub_errors"] == ["Error 9: Unknown boot failure"]
    assert "bzImage payload is lz4: AWS documents PV-GRUB for gzip, bzip2, lzo and xz" in report["detail"]
    assert "lz4 needs Xen 4.4 or later" in report["detail"]
    summary = report["pvgrub097"]
    assert summary["aki_version"] == "1.05" and summary["menu"] == "(hd0)/boot/grub/menu.lst"  # `imagekit aki`'s
    assert [t["index"] for t in summary["tried"]] == [0] and summary["kernel"] is None


def test_kernel_without_xen_notes(build: Build) -> None:
    """An ELF that is no Xen guest (busybox): Xen's "Not a Xen-ELF image" -> pvgrub-not-xen-pv."""
    image = build(entry("busybox", "busybox-elf"), {"busybox-elf": Path(shutil.which("busybox") or "/bin/busybox")})
    report = boot_image(BootOptions(image, loader="pvgrub097"))
    assert (report.booted, report.reason) == (False, "pvgrub-not-xen-pv")
    assert "Not a Xen-ELF image: No ELF notes or '__xen_guest' section found" in report.detail
    assert report.detail.startswith("no entry boots: entry 0 'busybox': Error 9: Unknown boot failure at menu.lst "
                                    "line 8")


@pytest.mark.slow  # GRUB 0.97 gunzips the 60 MiB AKI vmlinux (plan and boot): ~15 s each under TCG load
def test_menu_only_command_in_an_entry_and_an_unknown_one(build: Build, aki_kernel: Path) -> None:
    """GRUB 0.97 skips a command it does not know (`uuid`: the entry still boots) but fails an entry that
    holds a menu-only command (`hiddenmenu`) with Error 27 -> pvgrub-unknown-command, before QEMU."""
    image = build(entry("AKI vmlinux", "aki-vmlinux.gz"), {"aki-vmlinux.gz": aki_kernel})
    skipped = debugfs_edit(image, lambda m: m.replace("\troot (hd0)\n", "\troot (hd0)\n\tuuid 1234\n"))
    result = plan(skipped, Variant.HD0, "1.05", skipped.parent / "keep")
    assert result.booted is not None and not result.fell_back and result.xen is not None and result.xen.pvh
    assert [line.text for line in result.booted.entry.skipped] == ["uuid 1234"]
    menu_only = debugfs_edit(image, lambda m: m.replace("\troot (hd0)\n", "\troot (hd0)\n\thiddenmenu\n"))
    report = boot_image(BootOptions(menu_only, loader="pvgrub097"))
    assert (report.booted, report.reason, report.seconds_qemu) == (False, "pvgrub-unknown-command", 0)
    assert report.detail == "no entry boots: entry 0 'AKI vmlinux': Error 27: Unrecognized command at menu.lst " \
                            "line 8 ('hiddenmenu')"


@pytest.mark.slow  # two GRUB 0.97 plans of a built image: ~9 s (the fast loop: README, Tests)
def test_aki_version_picks_the_search(build: Build) -> None:
    """No menu.lst: 1.03 looked in one place, 1.05 (the default for hd0) in the nine of shared/REFERENCE.md."""
    image = debugfs_edit(build(), lambda m: m)
    subprocess.run(["debugfs", "-w", "-R", "rm /boot/grub/menu.lst", image], check=True, capture_output=True)
    old = boot_image(BootOptions(image, loader="pvgrub097", aki_version="1.03"))
    new = boot_image(BootOptions(image, loader="pvgrub097"))
    assert old.reason == new.reason == "menu-lst-not-found"
    assert old.pvgrub097 and new.pvgrub097
    assert [s["path"] for s in old.pvgrub097["searched"]] == ["(hd0)/boot/grub/menu.lst"]
    assert len(new.pvgrub097["searched"]) == 9 and new.pvgrub097["aki_version"] == "1.05"
    assert old.detail == "PV-GRUB 1.03 looked in: (hd0)/boot/grub/menu.lst: Error 15: File not found"
    bad = run_imagekit("boot", image, "--loader", "pvgrub097", "--aki-version", "new")
    assert bad.returncode == 2 and "--aki-version: 'new' is not a PV-GRUB version" in bad.stderr


def test_fallback_list_as_stage2_reads_it() -> None:
    def menu(fallback: str) -> list[int]:
        entries = "".join(f"title e{i}\nkernel /k\n" for i in range(4))
        return fallbacks(read_menu("(hd0)/boot/grub/menu.lst", f"fallback {fallback}\n{entries}", frozenset()))

    assert menu("1") == [1] and menu("1 2 3") == [1, 2, 3] and menu("=2") == [2]
    assert menu("1 9 2") == [1]  # stage2 stops at an entry that does not exist
    assert menu("x") == []


@pytest.mark.slow  # a build, a qcow2 copy and GRUB 0.97's plan: ~9 s (the fast loop: README, Tests)
def test_entry_without_kernel_and_a_qcow2_image(build: Build, tmp_path: Path) -> None:
    """An entry whose commands all run but load no kernel: `boot` fails with Error 8. A qcow2 image: exit 2."""
    image = build()
    bare = debugfs_edit(image, lambda m: "\n".join(x for x in m.splitlines() if not x.startswith(("\tkernel",
                                                                                                  "\tinitrd"))))
    report = boot_image(BootOptions(bare, loader="pvgrub097"))
    assert report.reason == "pvgrub-unreadable" and report.detail.startswith("no entry boots: entry 0 'pv (")
    assert report.detail.endswith("': Error 8: Kernel must be loaded before booting (no kernel line)")
    qcow2 = tmp_path / "pv.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", image, qcow2], check=True)
    proc = run_imagekit("boot", qcow2, "--loader", "pvgrub097")
    assert proc.returncode == 2 and "is qcow2: --loader pvgrub097 reads raw images" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_aki_vmlinux_boots_as_fallback(build: Build, aki_kernel: Path, tmp_path: Path) -> None:
    """The default entry's kernel is missing (Error 15), the first fallback's is the LZ4 bzImage (Xen refuses:
    Error 9), the second fallback's the AKI-style gzipped vmlinux: it boots, under TCG, to the sentinel."""
    files = {"missing-kernel": aki_kernel, "aki-vmlinux.gz": aki_kernel}
    boot = "[boot]\nfallback = 1\n" + entry("missing kernel", "missing-kernel") + entry("Debian bzImage", BZIMAGE) + \
        entry("AKI vmlinux", "aki-vmlinux.gz")
    image = debugfs_edit(build(boot, files), lambda m: m.replace("fallback 1\n", "fallback 1 2\n"),
                         remove=("/boot/missing-kernel",))
    before = sha256(image)
    report = boot_image(BootOptions(image, loader="pvgrub097", serial_log=tmp_path / "serial.log"))
    assert report.booted, report.to_text()
    assert report.entry is not None and (report.entry.index, report.entry.fallback) == (2, True)
    assert report.notes[0].startswith("entry 2 'AKI vmlinux' booted as fallback after entry 0 'missing kernel': "
                                      "Error 15: File not found at menu.lst line 9")
    assert report.pvgrub097 is not None
    tried = report.pvgrub097["tried"]
    assert [(t["index"], t["error"]) for t in tried] == \
        [(0, "Error 15: File not found"), (1, "Error 9: Unknown boot failure"), (2, None)]
    assert "payload is lz4" in tried[1]["xen_refused"]
    assert report.pvgrub097["kernel"] == {"xen_loader": ["ELF loader"], "compression": None, "bits": 64,
                                          "pvh_entry": True}  # GRUB 0.97's grub_open gunzipped it already
    assert report.kernel_version and report.kernel_version.endswith("-cloud-amd64")
    assert "Command line: console=ttyS0 root=LABEL=root" in (tmp_path / "serial.log").read_text()
    assert sha256(image) == before


def recording_xl(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An `xl` on PATH that records its calls and answers as a host without a dom0 does; (env, calls file)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "xl-calls"
    (bin_dir / "xl").write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho "xc: error: no hypervisor" >&2\nexit 1\n')
    (bin_dir / "xl").chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}, calls


@pytest.mark.slow  # a build and GRUB 0.97's plan: ~7 s (the fast loop: README, Tests)
def test_xen_hypervisor_checks_the_kernel_before_xl(build: Build, tmp_path: Path) -> None:
    """--hypervisor xen runs the same checks first: the LZ4 bzImage is refused (pvgrub-kernel-format) before
    `xl` is looked up (the recording `xl` is never called)."""
    env, calls = recording_xl(tmp_path)
    refused = build(entry("Debian bzImage", BZIMAGE))
    proc = run_imagekit("boot", refused, "--hypervisor", "xen", "--json", env=env)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["reason"], report["hypervisor"], report["booted"]) == ("pvgrub-kernel-format", "xen", False)
    assert "bzImage payload is lz4" in report["detail"]
    assert report["notes"] == ["decided before xl create started: no entry PV-GRUB would boot"]
    assert not calls.exists()


@pytest.mark.slow  # GRUB 0.97 gunzips the 60 MiB AKI vmlinux before xl is reached
def test_xen_hypervisor_reaches_xl_with_a_loadable_kernel(build: Build, aki_kernel: Path, tmp_path: Path) -> None:
    """The AKI-style vmlinux passes the checks and reaches `xl info` (exit 2: no dom0 here)."""
    env, calls = recording_xl(tmp_path)
    loads = build(entry("AKI vmlinux", "aki-vmlinux.gz"), {"aki-vmlinux.gz": aki_kernel})
    proc = run_imagekit("boot", loads, "--hypervisor", "xen", env=env)
    assert proc.returncode == 2 and "--hypervisor xen: no Xen dom0 here" in proc.stderr, proc.stderr
    assert calls.read_text() == "info\n"
