"""The LVM layout (seeds 001, 002), built for real and read back independently: sfdisk (partition table),
the LVM metadata on the disk, libguestfs (LVs, labels, files on each filesystem), e2fsck; and the lint
rule that an LVM image without a separate /boot is an error, on a hand-made image."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from imagekit.image.filesystem import NewFilesystem, make_filesystem
from imagekit.image.layout import Placement
from imagekit.image.lvm_metadata import logical_extents, parse_config
from imagekit.image.partition import write_mbr
from imagekit.image.sparse import copy_range
from imagekit.recipe.model import Filesystem
from imagekit.rootfs.bootstrap import Tree
from tests.util import SMALL_RECIPE, make_small_tree, run_imagekit

MiB = 1 << 20
EXTRA = """\
[filesystems.boot]
type = "ext2"
label = "boot"
size = "64M"
[lvm]
vg = "vgsmall"
[[lvm.volumes]]
name = "root"
mountpoint = "/"
size = "200M"
[[lvm.volumes]]
name = "swap"
type = "swap"
label = "swap"
size = "32M"
[[lvm.volumes]]
name = "var"
mountpoint = "/var"
type = "ext4"
label = "var"
"""


@pytest.fixture(scope="module")
def lvm_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The small busybox tree (with a /var/lib/app file) built as hd00 + LVM, once for the module."""
    base = tmp_path_factory.mktemp("lvm")
    tree = make_small_tree(base / "tree")
    (tree / "var/lib/app").mkdir(parents=True)
    (tree / "var/lib/app/state").write_text("on the var LV\n")
    recipe = base / "lvm.toml"
    recipe.write_text(SMALL_RECIPE.format(name="small-lvm", layout="hd00", size="400M", extra=EXTRA))
    image = base / "out" / "lvm.img"
    proc = run_imagekit("build", recipe, "-o", image, "--json")
    assert proc.returncode == 0, proc.stderr
    return image, json.loads(proc.stdout)


def guestfs_handle(image: Path, readonly: bool = True):  # type: ignore[no-untyped-def]
    import guestfs

    g = guestfs.GuestFS(python_return_dict=True)
    g.add_drive_opts(str(image), readonly=readonly, format="raw")
    g.launch()
    return g


@pytest.mark.slow
def test_lvm_layout(lvm_build: tuple[Path, dict]) -> None:
    image, manifest = lvm_build
    table = json.loads(subprocess.run(["sfdisk", "--json", image], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]
    boot_part, pv_part = table["partitions"]
    assert boot_part["bootable"] is True and boot_part["start"] == 2048 and boot_part["type"] == "83"
    assert pv_part["type"] == "8e" and pv_part["start"] * 512 == MiB + 64 * MiB

    # The LVM metadata as written on the disk, read on the host, agrees with the manifest.
    extents = logical_extents(image, pv_part["start"] * 512)
    assert [e.name for e in extents.values()] == ["root", "swap", "var"]
    by_lv = {f["lvm"]["lv"]: f for f in manifest["filesystems"] if "lvm" in f}
    for name, ext in extents.items():
        assert (by_lv[name]["offset"], by_lv[name]["size"]) == (ext.offset, ext.size)
    assert extents["root"].size == 200 * MiB and extents["swap"].size == 32 * MiB
    for f in manifest["filesystems"]:
        if f["type"] == "ext4":
            subprocess.run(["e2fsck", "-fn", f"{image}?offset={f['offset']}"], check=True, capture_output=True)
    assert manifest["lint"]["errors"] == 0
    assert not any(f["rule"].startswith("disk-") for f in manifest["lint"]["findings"])

    g = guestfs_handle(image)
    try:
        assert g.vgs() == ["vgsmall"]
        assert g.lvs() == ["/dev/vgsmall/root", "/dev/vgsmall/swap", "/dev/vgsmall/var"]
        # the kernel's device-mapper (LVM in the appliance) maps each LV where the manifest says it is:
        # its size, and its first and last 64 KiB are the image's bytes at the manifest's offset
        with open(image, "rb") as raw:
            for name, f in by_lv.items():
                dev = f"/dev/vgsmall/{name}"
                assert g.blockdev_getsize64(dev) == f["size"]
                for at in (0, f["size"] - 65536):
                    raw.seek(f["offset"] + at)
                    assert g.pread_device(dev, 65536, at) == raw.read(65536), (name, at)
        fss = g.list_filesystems()
        assert fss["/dev/sda1"] == "ext2" and fss["/dev/vgsmall/root"] == "ext4"
        assert fss["/dev/vgsmall/swap"] == "swap" and fss["/dev/vgsmall/var"] == "ext4"
        assert g.vfs_label("/dev/vgsmall/root") == "root" and g.vfs_label("/dev/vgsmall/swap") == "swap"
        g.mount_ro("/dev/vgsmall/root", "/")
        g.mount_ro("/dev/vgsmall/var", "/var")
        g.mount_ro("/dev/sda1", "/boot")
        fstab = g.cat("/etc/fstab")
        assert g.cat("/var/lib/app/state") == "on the var LV\n"
        assert g.exists("/boot/boot/grub/menu.lst")  # seed 002: menu.lst on the /boot partition
        assert any(n.startswith("vmlinuz-") for n in g.ls("/boot"))
    finally:
        g.shutdown()
        g.close()
    assert "LABEL=root\t/\text4\t" in fstab and "LABEL=boot\t/boot\text2\t" in fstab
    assert "LABEL=var\t/var\text4\tdefaults\t0\t2" in fstab and "LABEL=swap\tnone\tswap\tsw\t0\t0" in fstab


def test_parse_lvm_text_format() -> None:
    text = ('vg0 {\nid = "abc"\nextent_size = 8192\nstatus = ["READ", "WRITE"] # comment\n'
            'logical_volumes {\nroot {\nsegment1 {\nstart_extent = 0\nstripes = [\n"pv0", 12\n]\n}\n}\n}\n}\n'
            'contents = "Text Format Volume Group"\nversion = 1\n')
    config = parse_config(text)
    assert config["vg0"]["status"] == ["READ", "WRITE"] and config["vg0"]["extent_size"] == 8192
    assert config["vg0"]["logical_volumes"]["root"]["segment1"]["stripes"] == ["pv0", 12]
    assert config["version"] == 1


@pytest.mark.slow
def test_lint_fails_lvm_without_boot(lvm_build: tuple[Path, dict], tmp_path: Path) -> None:
    """Seed 002: the built image's LVM physical volume alone on a disk (no /boot partition), with the
    kernel and menu.lst inside the root logical volume. Made on the host: no libguestfs launch."""
    good, manifest = lvm_build
    pv_offset = MiB + 64 * MiB
    pv_size = good.stat().st_size - pv_offset
    tree = make_small_tree(tmp_path / "tree")
    shutil.copy(next(Path("/boot").glob("vmlinuz-*")), tree / "boot" / "vmlinuz-6.1.0-test")
    (tree / "boot/grub").mkdir()
    (tree / "boot/grub/menu.lst").write_text("default 0\ntimeout 1\ntitle t\nroot (hd0,0)\n"
                                             "kernel /boot/vmlinuz-6.1.0-test root=LABEL=root\n")
    image = tmp_path / "lvm-without-boot.img"
    with open(image, "wb") as f:
        f.truncate(MiB + pv_size)
    fs = Filesystem(label="root")
    write_mbr(image, [Placement("/", fs, 1, MiB, pv_size)])
    copy_range(good, image, src_offset=pv_offset, length=pv_size, dst_offset=MiB)
    root = logical_extents(image, MiB)["root"]
    built_root = next(f for f in manifest["filesystems"] if f.get("lvm", {}).get("lv") == "root")
    assert root.offset == built_root["offset"] - 64 * MiB  # the same LV, found through the copied metadata
    make_filesystem(NewFilesystem(Placement("/", fs, 1, root.offset, root.size), Tree(tree), str(uuid.uuid4()),
                                  boot=True), image, tmp_path)

    proc = run_imagekit("lint", image, "--json")
    assert proc.returncode == 1, proc.stderr
    findings = {f["rule"]: f for f in json.loads(proc.stdout)["findings"]}
    assert findings["disk-lvm-without-boot"]["severity"] == "error"
    assert findings["disk-lvm-without-boot"]["object"] == "partition 1 (hd0,0)"
