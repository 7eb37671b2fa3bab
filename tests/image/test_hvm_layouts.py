"""HVM layouts (issue 7): build each from the small busybox recipe, read it back with independent tools.

sfdisk --json (partition table, GPT types and flags), mtools (the ESP's files), file(1) (BOOTX64.EFI
is a PE32+ x86-64 image), the MBR's bytes against GRUB's boot.img, blkid -p at each partition's
offset (the UUIDs grub.cfg names), debugfs (grub.cfg, kernel and initrd inside the filesystem),
e2fsck -fn. No libguestfs, so these are fast.
"""

from __future__ import annotations

import filecmp
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from imagekit.recipe.layouts import LAYOUTS, Firmware, LayoutSpec, PartitionTable
from tests.image.firmware import boot_firmware
from tests.util import SMALL_RECIPE, make_small_tree, run_imagekit

BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
BOOT_IMG = Path("/usr/lib/grub/i386-pc/boot.img")
BOOTPART = '[filesystems.boot]\ntype = "ext2"\nlabel = "boot"\nsize = "64M"\n'


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def build(recipe: Path, image: Path, *args: str) -> dict[str, Any]:
    proc = run_imagekit("build", recipe, "-o", image, "--json", "--no-lint", *args)
    assert proc.returncode == 0, proc.stderr
    manifest: dict[str, Any] = json.loads(proc.stdout)
    return manifest


def partitions(image: Path) -> tuple[str, list[dict[str, Any]]]:
    out = subprocess.run(["sfdisk", "--json", image], capture_output=True, text=True, check=True).stdout
    table = json.loads(out)["partitiontable"]
    return table["label"], table["partitions"]


def blkid(image: Path, offset: int, tag: str) -> str:
    proc = subprocess.run(["blkid", "-p", "-O", str(offset), "-o", "value", "-s", tag, image],
                          capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def debugfs(image: Path, offset: int, request: str) -> str:
    proc = subprocess.run(["debugfs", "-R", request, f"{image}?offset={offset}"], capture_output=True, text=True)
    return proc.stdout


def e2fsck(image: Path, offset: int) -> None:
    subprocess.run(["e2fsck", "-fn", f"{image}?offset={offset}"], check=True, capture_output=True)


def assert_grub_mbr(image: Path) -> None:
    """The MBR's boot code is GRUB's boot.img (its BPB area and the patched fields aside)."""
    mbr = image.read_bytes()[:512]
    boot = BOOT_IMG.read_bytes()
    assert mbr[:3] == boot[:3] and mbr[0x5A:0x5C] == boot[0x5A:0x5C]  # the jump (the BPB area is the disk's)
    assert mbr[0x64] == 0xFF and mbr[0x66:0x68] == b"\x90\x90"  # boot drive, drive check nopped as grub-bios-setup
    assert mbr[0x68:440] == boot[0x68:440]  # the code after the patched fields
    assert mbr[510:512] == b"\x55\xaa"


def assert_grub_cfg(image: Path, manifest: dict[str, Any], boot_offset: int, boot_uuid: str, prefix: str) -> None:
    cfg = debugfs(image, boot_offset, f"cat {prefix}/grub/grub.cfg")
    assert cfg == manifest["grub_cfg"]["text"]
    assert "serial --unit=0 --speed=115200\n" in cfg and "terminal_output serial console\n" in cfg
    assert f"search --no-floppy --fs-uuid --set=root {boot_uuid}" in cfg
    linux = re.search(r"^\tlinux (\S+) (.*)$", cfg, re.M)
    initrd = re.search(r"^\tinitrd (\S+)$", cfg, re.M)
    assert linux and initrd
    assert "console=ttyS0,115200" in linux[2] and "hvc0" not in linux[2]
    assert "nvme_core.io_timeout=4294967295" in linux[2]
    for path in (linux[1], initrd[1]):  # the kernel and initrd grub.cfg names exist on the boot filesystem
        assert "Type: regular" in debugfs(image, boot_offset, f"stat {path}"), path


def assert_esp_mounted(image: Path, manifest: dict[str, Any], root_offset: int, esp_offset: int, by: str,
                       mountpoint_fs: int | None = None, mountpoint: str = "/boot/efi") -> None:
    """The image's /etc/fstab mounts the ESP at /boot/efi by its LABEL or UUID as blkid reads them; the
    mount point exists (on the /boot filesystem at `mountpoint_fs`, if separate); the manifest says so."""
    fstab = debugfs(image, root_offset, "cat /etc/fstab")
    assert fstab == manifest["fstab"]
    lines = [line.split("\t") for line in fstab.splitlines() if not line.startswith("#")]
    esp_lines = [f for f in lines if f[1] == "/boot/efi"]
    assert esp_lines == [[f"{by}={blkid(image, esp_offset, by)}", "/boot/efi", "vfat", "umask=0077", "0", "1"]]
    assert lines[0][1] == "/" and lines[-1][1] == "/boot/efi"  # mounted after / (and /boot)
    stat = debugfs(image, root_offset if mountpoint_fs is None else mountpoint_fs, f"stat {mountpoint}")
    assert "Type: directory" in stat and "Mode:  0755" in stat, stat
    esp = manifest["filesystems"][0]
    assert (esp["mountpoint"], esp["type"], esp["offset"]) == ("/boot/efi", "vfat", esp_offset)
    assert (esp["uuid"], esp["label"]) == (blkid(image, esp_offset, "UUID"), blkid(image, esp_offset, "LABEL"))
    record = next(p for p in manifest["partitions"] if p["kind"] == "esp")
    assert record["filesystem"]["mountpoint"] == "/boot/efi" and record["filesystem"]["uuid"] == esp["uuid"]


# every HVM layout of the table: a new one is built and read back here without a change to this test
HVM_LAYOUTS = [spec for spec in LAYOUTS.values() if not spec.pv]


@pytest.mark.parametrize("spec", [pytest.param(spec, id=spec.layout.value) for spec in HVM_LAYOUTS])
def test_hvm_layout(small_recipe: Callable[..., Path], tmp_path: Path, spec: LayoutSpec) -> None:
    """The disk as sfdisk, mtools, file(1), blkid and e2fsck read it is what the layout's entry declares: its
    partition table, its firmware partitions in order, GRUB's boot code in the MBR for BIOS, BOOTX64.EFI
    on the ESP for UEFI."""
    layout = spec.layout.value
    image = tmp_path / f"{layout}.img"
    manifest = build(small_recipe(layout=layout), image)
    assert (manifest["layout"], manifest["virtualization"]) == (layout, "hvm")
    assert spec.boot_mode is not None and manifest["boot_mode"] == spec.boot_mode.value
    assert manifest["menu_lst"] is None
    label, parts = partitions(image)
    root = manifest["filesystems"][-1]
    assert blkid(image, root["offset"], "UUID") == root["uuid"]
    e2fsck(image, root["offset"])
    assert_grub_cfg(image, manifest, root["offset"], root["uuid"], "/boot")
    assert "root=LABEL=root" in manifest["cmdline"]

    if spec.table is PartitionTable.MBR:
        assert label == "dos"
        assert [(p["start"], p.get("bootable"), p["type"]) for p in parts] == [(2048, True, "83")]
        assert "/boot/efi" not in debugfs(image, root["offset"], "cat /etc/fstab")  # no ESP, nothing to mount
        assert "Type: directory" not in debugfs(image, root["offset"], "stat /boot/efi")
        assert [f["mountpoint"] for f in manifest["filesystems"]] == ["/"]
    else:
        assert label == "gpt"
        types = [p["type"] for p in parts]
        want = [{"bios-boot": BIOS_BOOT, "esp": ESP}[kind] for kind in spec.firmware_parts]
        assert types[:-1] == want and parts[-1]["name"] == "root"
        assert all(p["start"] % 2048 == 0 for p in parts)
    if spec.esp:
        esp = next(p for p in parts if p["type"] == ESP)
        assert esp["name"] == "EFI System" and esp["size"] == 128 * 2048
        offset = esp["start"] * 512
        listing = subprocess.run(["mdir", "-b", "-i", f"{image}@@{offset}", "::/EFI/BOOT"], capture_output=True,
                                 text=True, check=True).stdout
        assert listing.split() == ["::/EFI/BOOT/BOOTX64.EFI"]
        efi = tmp_path / "BOOTX64.EFI"
        subprocess.run(["mcopy", "-i", f"{image}@@{offset}", "::/EFI/BOOT/BOOTX64.EFI", efi], check=True)
        kind = subprocess.run(["file", "-b", efi], capture_output=True, text=True).stdout
        assert kind.startswith("PE32+ executable (EFI application) x86-64"), kind
        assert blkid(image, offset, "TYPE") == "vfat"
        assert blkid(image, offset, "UUID") == manifest["partitions"][types.index(ESP)]["filesystem"]["uuid"]
        fat = tmp_path / "esp.fat"
        with open(image, "rb") as f:
            f.seek(offset)
            fat.write_bytes(f.read(esp["size"] * 512))
        subprocess.run(["fsck.fat", "-n", fat], check=True, capture_output=True)
        assert_esp_mounted(image, manifest, root["offset"], offset, "LABEL")
    else:  # no ESP, nothing to mount
        assert "/boot/efi" not in debugfs(image, root["offset"], "cat /etc/fstab")
        assert "Type: directory" not in debugfs(image, root["offset"], "stat /boot/efi")
    if Firmware.BIOS in spec.firmwares:
        assert_grub_mbr(image)
        core = next(p["start"] for p in parts if p["type"] == BIOS_BOOT) if label == "gpt" else 1
        mbr = image.read_bytes()[:512]
        assert int.from_bytes(mbr[0x5C:0x64], "little") == core  # boot.img points at core.img
        with open(image, "rb") as f:
            f.seek(core * 512)
            first = f.read(512)
        assert int.from_bytes(first[500:508], "little") == core + 1  # diskboot.img's blocklist: the rest
    else:
        assert b"GRUB" not in image.read_bytes()[:440]  # UEFI only: the protective MBR has no boot code


def test_hvm_separate_boot(small_recipe: Callable[..., Path], tmp_path: Path) -> None:
    """/boot on its own partition: grub.cfg is grub/grub.cfg there, kernel paths relative to it."""
    image = tmp_path / "b.img"
    manifest = build(small_recipe(layout="gpt-hybrid", extra=BOOTPART), image)
    _, parts = partitions(image)
    assert [p["name"] for p in parts] == ["BIOS boot", "EFI System", "boot", "root"]
    boot = next(f for f in manifest["filesystems"] if f["mountpoint"] == "/boot")
    assert_grub_cfg(image, manifest, boot["offset"], boot["uuid"], "")
    assert "\tlinux /vmlinuz-" in manifest["grub_cfg"]["text"]
    e2fsck(image, boot["offset"])
    root, esp = manifest["filesystems"][-1], manifest["filesystems"][0]
    assert [f["mountpoint"] for f in manifest["filesystems"]] == ["/boot/efi", "/boot", "/"]
    assert_esp_mounted(image, manifest, root["offset"], esp["offset"], "LABEL", boot["offset"], "/efi")
    fstab = manifest["fstab"]
    assert fstab.index("\t/boot\t") < fstab.index("\t/boot/efi\t")  # /boot/efi lies on /boot


def test_hvm_esp_by_uuid(small_recipe: Callable[..., Path], tmp_path: Path) -> None:
    """kernel.root = "uuid": fstab names every filesystem by UUID, the ESP by its FAT volume id (XXXX-XXXX),
    decided before mkfs: with SOURCE_DATE_EPOCH the same one every build."""
    recipe = small_recipe(layout="gpt-uefi", extra='root = "uuid"\n')
    env = {"SOURCE_DATE_EPOCH": "1767225600"}
    ids = []
    for name in ("a.img", "b.img"):
        proc = run_imagekit("build", recipe, "-o", tmp_path / name, "--json", "--no-lint", env=env)
        assert proc.returncode == 0, proc.stderr
        manifest = json.loads(proc.stdout)
        root, esp = manifest["filesystems"][-1], manifest["filesystems"][0]
        assert f"UUID={root['uuid']}\t/\t" in manifest["fstab"]
        assert_esp_mounted(tmp_path / name, manifest, root["offset"], esp["offset"], "UUID")
        assert re.fullmatch(r"[0-9A-F]{4}-[0-9A-F]{4}", esp["uuid"])
        ids.append(esp["uuid"])
    assert ids[0] == ids[1]


def test_pv_fstab_has_no_esp(small_recipe: Callable[..., Path], tmp_path: Path) -> None:
    manifest = build(small_recipe(layout="hd00"), tmp_path / "pv.img")
    assert "/boot/efi" not in manifest["fstab"]
    assert [f["mountpoint"] for f in manifest["filesystems"]] == ["/"]
    assert "Type: directory" not in debugfs(tmp_path / "pv.img", 1 << 20, "stat /boot/efi")


@pytest.mark.parametrize(("layout", "extra", "key", "message"), [
    ("mbr-bios", '[filesystems.esp]\nsize = "64M"\n', "filesystems.esp",
     "layout mbr-bios has no EFI system partition (gpt-uefi and gpt-hybrid have one)"),
    ("hd00", '[filesystems.esp]\nsize = "64M"\n', "filesystems.esp",
     "layout hd00 has no EFI system partition (gpt-uefi and gpt-hybrid have one)"),
    ("gpt-uefi", '[filesystems.esp]\nsize = "32M"\n', "filesystems.esp.size",
     "size 32 MiB is too small for FAT32 (at least 33 MiB)"),
    ("gpt-hybrid", '[filesystems.esp]\nlabel = "efi part"\n', "filesystems.esp.label",
     "label 'efi part' must be 1-11 characters of A-Z 0-9 _ - (a FAT label)"),
    ("hd0", BOOTPART, "filesystems.boot",
     'a separate /boot needs a partition table: use layout = "hd00" (PV) or an HVM layout'),
], ids=["esp-on-mbr-bios", "esp-on-hd00", "esp-too-small", "esp-label", "boot-on-hd0"])
def test_bad_hvm_recipe(small_recipe: Callable[..., Path], tmp_path: Path, layout: str, extra: str, key: str,
                        message: str) -> None:
    recipe = small_recipe(layout=layout, extra=extra)
    proc = run_imagekit("build", recipe, "-o", tmp_path / "x.img")
    assert proc.returncode == 2
    assert proc.stderr == f"error: {recipe}: {key}: {message}\n"
    assert not (tmp_path / "x.img").exists()


def test_layout_option_overrides_recipe(small_recipe: Callable[..., Path], tmp_path: Path) -> None:
    """One PV recipe, two images: --layout picks the HVM layout and the HVM command line follows it."""
    recipe = small_recipe(layout="hd00")
    pv = build(recipe, tmp_path / "pv.img")
    hvm = build(recipe, tmp_path / "hvm.img", "--layout", "gpt-hybrid")
    assert (pv["layout"], pv["virtualization"], pv["boot_mode"]) == ("hd00", "paravirtual", None)
    assert (hvm["layout"], hvm["virtualization"], hvm["boot_mode"]) == ("gpt-hybrid", "hvm", "uefi-preferred")
    assert pv["cmdline"] == "root=LABEL=root ro console=tty0 console=hvc0"
    assert hvm["cmdline"] == ("root=LABEL=root ro console=tty0 console=ttyS0,115200 "
                              "nvme_core.io_timeout=4294967295 net.ifnames=0")
    assert "grub_cfg" not in pv and "partitions" not in pv
    assert hvm["menu_lst"] is None and partitions(tmp_path / "hvm.img")[0] == "gpt"


def test_layout_option_checked_like_the_recipe(small_recipe: Callable[..., Path], tmp_path: Path) -> None:
    recipe = small_recipe(layout="mbr-bios", extra=BOOTPART)
    proc = run_imagekit("build", recipe, "-o", tmp_path / "x.img", "--layout", "hd0")
    assert proc.returncode == 2
    assert proc.stderr == (f"error: --layout hd0: {recipe}: filesystems.boot: a separate /boot needs a partition "
                           'table: use layout = "hd00" (PV) or an HVM layout\n')
    proc = run_imagekit("build", recipe, "-o", tmp_path / "x.img", "--layout", "gpt")
    assert proc.returncode == 2 and "Invalid value for '--layout': 'gpt' is not one of" in proc.stderr


def test_reproducible_hvm_images(small_recipe: Callable[..., Path], tmp_path: Path) -> None:
    """SOURCE_DATE_EPOCH: the same bytes twice (GPT GUIDs, FAT volume id and times, GRUB images)."""
    recipe = small_recipe(layout="gpt-hybrid")
    env = {"SOURCE_DATE_EPOCH": "1767225600"}
    for name in ("a.img", "b.img"):
        proc = run_imagekit("build", recipe, "-o", tmp_path / name, "--no-lint", env=env)
        assert proc.returncode == 0, proc.stderr
    assert filecmp.cmp(tmp_path / "a.img", tmp_path / "b.img", shallow=False)


SENTINEL = b"imagekit-small-init"


@pytest.mark.slow
@pytest.mark.parametrize(("layout", "firmware"), [("mbr-bios", "seabios"), ("gpt-uefi", "ovmf"),
                                                  ("gpt-hybrid", "seabios"), ("gpt-hybrid", "ovmf")])
def test_firmware_boot(small_recipe: Callable[..., Path], tmp_path: Path, layout: str, firmware: str) -> None:
    """The real firmware path: SeaBIOS runs boot.img/core.img, OVMF runs BOOTX64.EFI; GRUB's grub.cfg
    boots the kernel on ttyS0 and the busybox init prints the sentinel."""
    image = tmp_path / f"{layout}.img"
    build(small_recipe(layout=layout), image)
    out = boot_firmware(image, firmware, tmp_path / "serial.log", SENTINEL)
    assert b"GNU GRUB" in out, out[-2000:]
    assert b"Command line: BOOT_IMAGE=/boot/vmlinuz-" in out and b"console=ttyS0,115200" in out, out[-2000:]
    assert SENTINEL in out, out[-2000:]


def test_esp_on_a_big_disk(small_recipe: Callable[..., Path], tmp_path: Path) -> None:
    """mkfs.fat sizes clusters by the whole file: a 2 GiB disk must still get a valid FAT32 ESP."""
    image = tmp_path / "big.img"
    build(small_recipe(layout="gpt-uefi", size="2G", extra='[filesystems.esp]\nsize = "40M"\n'), image)
    _, parts = partitions(image)
    esp = next(p for p in parts if p["type"] == ESP)
    assert esp["size"] == 40 * 2048
    fat = tmp_path / "esp.fat"
    with open(image, "rb") as f:
        f.seek(esp["start"] * 512)
        fat.write_bytes(f.read(esp["size"] * 512))
    check = subprocess.run(["fsck.fat", "-n", fat], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "Number of clusters" not in check.stdout + check.stderr
    out = subprocess.run(["mdir", "-b", "-i", fat, "::/EFI/BOOT"], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["::/EFI/BOOT/BOOTX64.EFI"]


def test_diff_names_a_changed_grub_cfg(tmp_path: Path) -> None:
    base = {"packages": [], "menu_lst": None, "grub_cfg": {"text": "set default=0\n"}, "cmdline": "ro"}
    (tmp_path / "a.json").write_text(json.dumps(base))
    (tmp_path / "b.json").write_text(json.dumps({**base, "grub_cfg": {"text": "set default=1\n"}}))
    proc = run_imagekit("diff", tmp_path / "a.json", tmp_path / "b.json")
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[0] == "~ boot grub.cfg" and "+set default=1" in proc.stdout


FALLBACK = """\
[boot]
default = 0
fallback = 1
timeout = 0
[[boot.entries]]
title = "broken: not a kernel"
kernel = "not-a-kernel"
[[boot.entries]]
title = "good"
args = "imagekit.entry=good"
"""


@pytest.mark.slow
def test_grub_falls_back_when_the_default_cannot_load(tmp_path: Path) -> None:
    """GRUB 2 keeps menu.lst's semantics: entry 0's kernel is not a kernel, so GRUB boots `fallback` 1."""
    tree = make_small_tree(tmp_path / "tree")
    (tree / "boot/not-a-kernel").write_bytes(b"this is not a bzImage\n" * 64)
    recipe = tmp_path / "fallback.toml"
    recipe.write_text(SMALL_RECIPE.format(name="fallback", layout="mbr-bios", size="256M", extra="") + FALLBACK)
    image = tmp_path / "fallback.img"
    manifest = build(recipe, image)
    cfg = manifest["grub_cfg"]["text"]
    assert "set default=0\nset fallback=1\nset timeout=0\n" in cfg
    assert cfg.index("menuentry 'broken: not a kernel'") < cfg.index("menuentry 'good'")
    out = boot_firmware(image, "seabios", tmp_path / "serial.log", SENTINEL)
    assert b"imagekit.entry=good" in out and SENTINEL in out, out[-2000:]
