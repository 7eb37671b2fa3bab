"""The native reader (imagekit/lint/native.py) on small hostile images, no appliance: symlink loops,
relative paths, `..` above the root, a sparse file over the bound, a FAT cluster chain that loops."""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

import pytest
from image_factory import MiB, mkext, mkvfat

from imagekit.lint.native import open_native
from imagekit.lint.view import UnreadableFile, open_view
from imagekit.util.errors import UsageError
from tests.util import run_imagekit


@pytest.fixture(scope="module")
def ext_image(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("native")
    tree = tmp / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "boot").mkdir()
    (tree / "etc" / "fstab").write_text("LABEL=root / ext4 defaults 0 1\n")
    os.symlink("/loop-b", tree / "loop-a")
    os.symlink("loop-a", tree / "loop-b")
    os.symlink("../../../../../etc/fstab", tree / "boot" / "up")
    os.symlink("/etc", tree / "etc-link")
    with open(tree / "boot" / "sparse", "wb") as f:
        f.truncate(3 * 1024 * MiB)
    image = tmp / "ext.img"
    mkext(image, tree, 16 * MiB)
    return image


def test_paths_resolve_inside_the_filesystem(ext_image: Path) -> None:
    with open_native(ext_image) as view:
        assert view.reader == "native" and view.parttype is None
        assert [f.type for f in view.filesystems] == ["ext4"] and view.filesystems[0].label == "root"
        assert view.read_text("/dev/sda", "/boot/up") == "LABEL=root / ext4 defaults 0 1\n"  # .. stops at /
        assert view.exists("/dev/sda", "/etc-link/fstab") and view.is_dir("/dev/sda", "/etc-link")
        assert not view.exists("/dev/sda", "/etc/fstab/x") and view.read("/dev/sda", "/missing") is None
        assert "fstab" in view.ls("/dev/sda", "/etc") and view.kind("/dev/sda", "/etc-link") == "link"


@pytest.mark.parametrize(("path", "reason"), [("/loop-a", "symbolic links"), ("boot/up", "not an absolute path"),
                                              ("/etc/\0fstab", "NUL")])
def test_hostile_paths_are_unreadable(ext_image: Path, path: str, reason: str) -> None:
    with open_native(ext_image) as view, pytest.raises(UnreadableFile, match=reason):
        view.exists("/dev/sda", path)


def test_a_sparse_file_over_the_bound_is_refused_unread(ext_image: Path) -> None:
    with open_native(ext_image) as view:
        assert view.size("/dev/sda", "/boot/sparse") == 3 * 1024 * MiB
        with pytest.raises(UnreadableFile, match="over the"):
            view.fetch("/dev/sda", "/boot/sparse", 64 * MiB)


@pytest.mark.timeout(120)
def test_a_looping_fat_cluster_chain_is_unreadable(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "kernel").write_bytes(os.urandom(8192))
    image = tmp_path / "fat.img"
    mkvfat(image, tree, 16 * MiB, fat=16)
    with open_native(image) as view:
        assert view.ls("/dev/sda", "/") == ["kernel"]  # an 8.3 name mcopy flagged lower case, as Linux shows it
        first = next(e for e in view._tree("/dev/sda").fs.root.iterdir() if e.name.lower() == "kernel").cluster
        fat_at = view._tree("/dev/sda").fs.bpb.BPB_RsvdSecCnt * 512
    with open(image, "r+b") as f:  # the file's first cluster names itself as the next one
        f.seek(fat_at + 2 * first)
        f.write(struct.pack("<H", first))
    with open_native(image) as view, pytest.raises(UnreadableFile, match="cluster chain"):
        view.read("/dev/sda", "/kernel", 64 * 1024)


def test_reader_native_refuses_what_it_cannot_open(tmp_path: Path) -> None:
    image = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", image, "64M"], check=True)
    proc = run_imagekit("lint", image, "--format", "qcow2", "--reader", "native")
    assert proc.returncode == 2, proc.stderr
    assert "--reader native cannot read it: a qcow2 image" in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(UsageError, match="--reader"), open_view(image, reader="fast"):
        pass


def test_odd_partition_tables_are_left_to_libguestfs(tmp_path: Path) -> None:
    """An extended MBR partition (an EBR chain dissect would follow, maybe in a loop) and a GPT header
    claiming 2**32-1 entries (dissect would walk them all) are NotNative: auto reads them through libguestfs."""
    from imagekit.lint.native import NotNative

    dos = tmp_path / "dos.img"
    with open(dos, "wb") as f:
        f.truncate(8 * MiB)
    subprocess.run(["sfdisk", "-q", dos], input=b"label: dos\nsize=4MiB, type=5\n", check=True)
    with pytest.raises(NotNative, match="extended"):
        open_native(dos)
    gpt = tmp_path / "gpt.img"
    with open(gpt, "wb") as f:
        f.truncate(8 * MiB)
    subprocess.run(["sfdisk", "-q", gpt], input=b"label: gpt\nsize=4MiB\n", check=True)
    with open(gpt, "r+b") as f:
        f.seek(512 + 80)
        f.write(struct.pack("<I", 2**32 - 1))
    with pytest.raises(NotNative, match="GPT of 4294967295 entries"):
        open_native(gpt)
