"""Build each layout for real (mke2fs, pyparted), then open the image independently and check it.

Independent readers: sfdisk --json (partition table), e2fsck -fn (clean filesystem), blkid -p (type, label,
UUID), debugfs (menu.lst, fstab, hostname, kernel and initrd) and a plain regex for menu.lst (not imagekit's
parser): no libguestfs appliance.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit.image.blockmap import BlockMap
from tests.publish.conftest import BLOCK, independent_block_map
from tests.util import (
    IMAGEKIT,
    REPO,
    SMALL_RECIPE,
    debugfs_cat,
    make_small_tree,
    menu_lst,
    processes_naming,
    run_imagekit,
)

BOOTPART = '[filesystems.boot]\ntype = "ext2"\nlabel = "boot"\nsize = "64M"\n'


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def sfdisk(image: Path) -> dict | None:
    proc = subprocess.run(["sfdisk", "--json", image], capture_output=True, text=True)
    return json.loads(proc.stdout)["partitiontable"] if proc.returncode == 0 and proc.stdout else None


def filesystems(image: Path) -> dict[int, dict[str, str]]:
    """Each filesystem's offset -> blkid -p's TYPE, LABEL and UUID: the whole disk, or each MBR partition
    (offsets from sfdisk)."""
    table = sfdisk(image)
    offsets = [0] if table is None else [p["start"] * 512 for p in table["partitions"]]
    found = {}
    for offset in offsets:
        out = subprocess.run(["blkid", "-p", "-O", str(offset), "-o", "export", image], capture_output=True,
                             text=True, check=True).stdout
        found[offset] = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return found


def independent_read(image: Path) -> dict[str, object]:
    """What e2fsprogs and util-linux see, none of imagekit's readers: filesystems (blkid), the boot files
    (debugfs), the default entry of menu.lst by a plain regex (tests/util.menu_lst)."""
    fss = filesystems(image)
    boot = min(fss)  # the first filesystem: /boot's (hd00-bootpart) or the root's
    menu = debugfs_cat(image, "/boot/grub/menu.lst", boot)
    head, entries = menu_lst(menu)
    entry = entries[int(head.get("default", "0"))]
    paths = (entry["kernel"].split()[0], entry["initrd"])
    device = f"{image}?offset={boot}" if boot else str(image)
    stats = {p: subprocess.run(["debugfs", "-R", f"stat {p}", device], capture_output=True, text=True).stdout
             for p in paths}
    root = next(offset for offset, info in fss.items() if info.get("LABEL") == "root")
    return {"fs": fss, "menu": menu, "entry": entry, "files": {p: "Type: regular" in out for p, out in stats.items()},
            "fstab": debugfs_cat(image, "/etc/fstab", root), "hostname": debugfs_cat(image, "/etc/hostname", root)}


@pytest.mark.slow
@pytest.mark.parametrize(("layout", "extra", "root_dev", "parts"),
                         [("hd0", "", "(hd0)", 0), ("hd00", "", "(hd0,0)", 1), ("hd00", BOOTPART, "(hd0,0)", 2)],
                         ids=["hd0", "hd00", "hd00-bootpart"])
def test_build_layout(small_recipe: Callable[..., Path], tmp_path: Path, layout: str, extra: str,
                      root_dev: str, parts: int) -> None:
    recipe = small_recipe(layout=layout, extra=extra)
    image = tmp_path / "out" / "img.raw"
    proc = run_imagekit("build", recipe, "-o", image, "--json")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    assert json.loads((tmp_path / "out" / "img.raw.manifest.json").read_text()) == {"schema": 1, **manifest}
    assert sorted(p.name for p in image.parent.iterdir()) == ["img.raw", "img.raw.manifest.json"]

    table = sfdisk(image)
    if parts == 0:
        assert table is None  # partitionless: the filesystem is the whole disk
        subprocess.run(["e2fsck", "-fn", image], check=True, capture_output=True)
    else:
        assert table["label"] == "dos"
        assert len(table["partitions"]) == parts
        assert table["partitions"][0]["bootable"] is True
        assert table["partitions"][0]["start"] == 2048

    seen = independent_read(image)
    entry = seen["entry"]
    assert isinstance(entry, dict)
    kernel, *args = entry["kernel"].split()
    assert entry["root"] == root_dev
    assert all(seen["files"].values()) and len(seen["files"]) == 2  # kernel and initrd exist, regular files
    # PV: the gzipped ELF vmlinux made of the host's LZ4 bzImage (pv_format = "auto"); the bzImage stays beside it
    prefix = "/" if parts == 2 else "/boot/"  # separate /boot: paths are relative to the boot filesystem
    assert kernel == manifest["kernel"]["path"] == f"{prefix}pvgrub-vmlinux-{manifest['kernel']['version']}.gz"
    assert manifest["kernel"]["original"] == f"{prefix}vmlinuz-{manifest['kernel']['version']}"
    labels = {i["LABEL"]: i for i in seen["fs"].values()}
    assert "root=LABEL=root" in args and labels["root"]["TYPE"] == "ext4"
    assert "LABEL=root\t/\text4" in str(seen["fstab"])
    if parts == 2:
        assert labels["boot"]["TYPE"] == "ext2"
        assert "LABEL=boot\t/boot\text2" in str(seen["fstab"])
    assert seen["hostname"] == "small\n"
    by_label = {f["label"]: f for f in manifest["filesystems"]}
    assert by_label["root"]["uuid"] == labels["root"]["UUID"]
    assert manifest["layout"] == layout
    assert manifest["menu_lst"]["text"] == seen["menu"]
    assert manifest["image"]["allocated"] < manifest["image"]["size"]  # sparse
    # the block map: every non-zero 512 KiB block and its SHA-256, read here with plain reads
    blocks = independent_block_map(image)
    rows = [[i, base64.b64encode(blocks[i]).decode()] for i in sorted(blocks)]
    assert manifest["image"]["block_map"]["blocks"] == rows
    assert manifest["image"]["id"] == BlockMap(manifest["image"]["size"], blocks).image_id
    assert 0 < len(blocks) < manifest["image"]["size"] // BLOCK


def test_root_by_uuid(small_recipe: Callable[..., Path], tmp_path: Path) -> None:
    path = small_recipe(extra='root = "uuid"')  # lands in the [kernel] table
    proc = run_imagekit("build", path, "-o", tmp_path / "u.img", "--json", "--no-lint")  # not about lint
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    uuid = manifest["filesystems"][0]["uuid"]
    assert f"root=UUID={uuid}" in manifest["cmdline"]
    blkid = subprocess.run(["blkid", "-o", "value", "-s", "UUID", tmp_path / "u.img"], capture_output=True, text=True)
    assert blkid.stdout.strip() == uuid


def test_image_too_small_fails_before_writing(small_recipe: Callable[..., Path], tmp_path: Path) -> None:
    recipe = small_recipe(size="24M")  # the host kernel and initrd alone need more
    out = tmp_path / "out"
    proc = run_imagekit("build", recipe, "-o", out / "x.img")
    assert proc.returncode == 2, proc.stderr
    assert last_line(proc.stderr).startswith(f"error: {recipe}: size: too small: / holds "), proc.stderr
    assert "short by" in proc.stderr and "Traceback" not in proc.stderr
    assert list(out.iterdir()) == []


def test_missing_kernel_profile_file(small_recipe: Callable[..., Path], tmp_path: Path) -> None:
    recipe = small_recipe()
    recipe.write_text(recipe.read_text().replace("host-cloud-amd64", "no-such-kernel"))
    proc = run_imagekit("build", recipe, "-o", tmp_path / "x.img")
    assert proc.returncode == 2
    error = next(line for line in proc.stderr.splitlines() if line.startswith("error: "))
    assert error.startswith(f"error: {recipe}: kernel.profile: no kernel profile 'no-such-kernel' (looked in ")
    assert not (tmp_path / "x.img").exists()


def test_missing_files_src(small_recipe: Callable[..., Path], tmp_path: Path) -> None:
    recipe = small_recipe(extra='[[files]]\nsrc = "nope.txt"\ndest = "/etc/motd"\n')
    proc = run_imagekit("build", recipe, "-o", tmp_path / "x.img")
    assert proc.returncode == 2
    assert last_line(proc.stderr) == f"error: {recipe}: files.0.src: no such file: {tmp_path / 'nope.txt'}"
    assert not (tmp_path / "x.img").exists()


def test_files_copied_with_mode(small_recipe: Callable[..., Path], tmp_path: Path) -> None:
    (tmp_path / "motd").write_text("hello from imagekit\n")
    recipe = small_recipe(extra='[[files]]\nsrc = "motd"\ndest = "/etc/motd"\nmode = "0600"\n')
    image = tmp_path / "x.img"
    run_imagekit("build", recipe, "-o", image, check=True)
    out = subprocess.run(["debugfs", "-R", "stat /etc/motd", image], capture_output=True, text=True).stdout
    assert "Mode:  0600" in out
    cat = subprocess.run(["debugfs", "-R", "cat /etc/motd", image], capture_output=True, text=True).stdout
    assert cat == "hello from imagekit\n"


def test_interrupted_build_leaves_nothing(small_recipe: Callable[..., Path], tmp_path: Path) -> None:
    """Ctrl-C in the middle of mkfs: exit 130, no image, no partial file, no staging area, no child left."""
    tree = make_small_tree(tmp_path / "bigtree")
    with open(tree / "big.bin", "wb") as f:  # slow the build down: 600 MB to copy into the filesystem
        for _ in range(600):
            f.write(os.urandom(1 << 20))
    recipe = tmp_path / "big.toml"
    recipe.write_text(SMALL_RECIPE.format(name="big", layout="hd00", size="1G", extra="").replace("tree", "bigtree"))
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([*IMAGEKIT, "build", recipe, "-o", out / "x.img"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = out / ".x.img.partial"
    deadline = time.monotonic() + 60
    while not partial.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert partial.exists(), "the build never reached image assembly"
    time.sleep(0.3)  # mke2fs is copying 600 MB in
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().endswith("interrupted")
    assert list(out.iterdir()) == []  # no image, no partial file, no staging area (.imagekit-build-*)
    assert processes_naming(out) == []  # no mke2fs (or anything else) still writing there
    assert "Traceback" not in err
