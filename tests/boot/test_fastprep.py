"""Boot preparation without an appliance (imagekit/boot/fastprep.py, extfs.py) on small real images made with
sfdisk and mkfs.ext4 -d: the probe and console edits as debugfs makes them in a copy, checked with debugfs
and e2fsck; the image byte-identical; the cache hit and its invalidation; the fallbacks to libguestfs.
No QEMU and no appliance here (a second or so in all); the boots are in test_boot_*.py.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from imagekit.boot import probe
from imagekit.boot.extfs import ExtFs, ExtTree, sparse_copy
from imagekit.boot.fastprep import CACHE, MAX_ENTRIES, FastPathUnavailable, prepare_disk, pv_layout
from imagekit.boot.harness import BootOptions, pv_job
from imagekit.boot.overlay import image_file
from imagekit.boot.pvgrub import Variant
from imagekit.manifest import DataVolumeRecord, Manifest
from imagekit.util.accel import Accel, detect
from tests.util import sha256

MIB = 1 << 20
MENU = "default 0\ntimeout 1\ntitle small\n\troot (hd0,0)\n\tkernel /vmlinuz root=LABEL=root ro console=hvc0\n"


def systemd_tree(root: Path) -> None:
    """A merged-/usr root whose /sbin/init is systemd through two symlinks, as Debian 12's."""
    for d in ("etc/systemd/system/multi-user.target.wants", "usr/sbin", "usr/lib/systemd", "usr/bin", "boot"):
        (root / d).mkdir(parents=True)
    (root / "sbin").symlink_to("usr/sbin")
    (root / "lib").symlink_to("usr/lib")
    (root / "bin").symlink_to("usr/bin")
    (root / "usr/lib/systemd/systemd").write_text("#!/bin/sh\n")
    (root / "usr/sbin/init").symlink_to("/lib/systemd/systemd")
    (root / "usr/bin/sh").write_text("#!/bin/sh\n")
    dropin = root / "etc/systemd/system/postgresql@.service.d"
    dropin.mkdir()
    (dropin / "mounts.conf").write_text("[Unit]\nRequiresMountsFor=/var/lib/postgresql\n")


def busybox_tree(root: Path) -> None:
    for d in ("etc", "bin", "sbin"):
        (root / d).mkdir(parents=True)
    (root / "bin/sh").write_text("#!/bin/sh\n")
    (root / "sbin/init").write_text("#!/bin/sh\necho own init\n")
    (root / "sbin/init").chmod(0o750)


def partitioned(dest: Path, root_tree: Path, kinds: tuple[str, str] = ("83", "83")) -> Path:
    """An MBR disk: partition 1 a /boot filesystem with menu.lst, partition 2 the root filesystem."""
    boot = dest.with_suffix(".boot")
    (boot / "grub").mkdir(parents=True)
    (boot / "grub/menu.lst").write_text(MENU)
    (boot / "boot").symlink_to(".")  # PV-GRUB's hd00 reads /boot/grub/menu.lst on partition 1
    with open(dest, "wb") as f:
        f.truncate(34 * MIB)
    script = f"label: dos\nstart=1MiB, size=16MiB, type={kinds[0]}\nsize=16MiB, type={kinds[1]}\n"
    subprocess.run(["sfdisk", "-q", str(dest)], input=script.encode(), check=True)
    for tree, offset, label in ((boot, 1, "boot"), (root_tree, 17, "root")):
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", label, "-d", str(tree), "-E", f"offset={offset * MIB}",
                        str(dest), "16M"], check=True)
    return dest


def fsck(raw: Path, offset: int) -> None:
    proc = subprocess.run(["e2fsck", "-fn", f"{raw}?offset={offset}"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="session")
def accel() -> Accel:
    return detect(None)  # before `cache` points IMAGEKIT_CACHE_DIR elsewhere: accel.json is warm


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IMAGEKIT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / CACHE


def test_init_hook_and_menu_lst_edited_in_a_cached_copy(tmp_path: Path, accel: Accel, cache: Path) -> None:
    tree = tmp_path / "root"
    busybox_tree(tree)
    image = image_file(partitioned(tmp_path / "disk.img", tree))
    before = sha256(image.path)
    job = pv_job(image, BootOptions(image.path), "pvgrub", tmp_path, lambda: None, None)
    with prepare_disk(image, tmp_path, job, accel) as (disk, prepared):
        assert disk.suffix == ".qcow2" and prepared.prepared_with == "debugfs"
        assert (prepared.disk.variant, prepared.disk.boot_device, prepared.disk.root_device) == (
            Variant.HD00, "/dev/sda1", "/dev/sda2")
        assert prepared.kind is probe.ProbeKind.INIT_HOOK
        assert any("console=ttyS0 put first on 1 kernel line(s)" in a for a in prepared.added)
    assert sha256(image.path) == before
    [entry] = list(cache.iterdir())
    copy = entry / "disk.raw"
    root, boot = ExtTree(ExtFs(copy, 17 * MIB)), ExtTree(ExtFs(copy, MIB))
    assert root.cat(probe.INIT) == probe.HOOK_INIT and root.cat(probe.INIT_ORIG) == "#!/bin/sh\necho own init\n"
    init, orig = ExtFs(copy, 17 * MIB).stat(probe.INIT), ExtFs(copy, 17 * MIB).stat(probe.INIT_ORIG)
    assert init is not None and (init.type, init.mode, init.uid, init.gid) == ("regular", 0o755, 0, 0)
    assert orig is not None and orig.mode == 0o750  # the image's own init, moved: the same inode
    assert root.cat(probe.PROBE_SCRIPT) == probe.HOOK_SCRIPT
    assert boot.cat("/boot/grub/menu.lst") == probe.add_serial_console(MENU)[0]
    fsck(copy, MIB)
    fsck(copy, 17 * MIB)

    with prepare_disk(image, tmp_path, job, accel) as (_, again):  # the same image: the cached copy
        assert again.prepared_with == "debugfs-cached" and again.added == prepared.added
    os.utime(image.path)  # the image "changed": its entry is stale and never used
    with prepare_disk(image, tmp_path, job, accel) as (_, fresh):
        assert fresh.prepared_with == "debugfs"
    assert [e.name for e in cache.iterdir()] != [entry.name] and len(list(cache.iterdir())) == 1


def test_systemd_probe_through_symlinks(tmp_path: Path, accel: Accel, cache: Path) -> None:
    tree = tmp_path / "root"
    systemd_tree(tree)
    image = image_file(partitioned(tmp_path / "disk.img", tree))
    manifest = Manifest(data_volumes=[DataVolumeRecord(services=["postgresql@15-main.service"])])
    job = pv_job(image, BootOptions(image.path), "pvgrub097", tmp_path, lambda: None, manifest)
    with prepare_disk(image, tmp_path, job, accel, use_cache=False) as (_, prepared):
        assert prepared.kind is probe.ProbeKind.SYSTEMD and prepared.prepared_with == "debugfs"
    assert not cache.exists()  # use_cache=False: the copy lived in the workdir
    [copy] = tmp_path.glob("prepared-*/disk.raw")
    root = ExtTree(ExtFs(copy, 17 * MIB))
    assert root.cat(probe.UNIT) == probe.SYSTEMD_UNIT
    assert root.realpath(probe.WANTS) == probe.UNIT
    mounts = root.cat("/usr/local/libexec/imagekit-probe-mounts")
    assert "for pattern in postgresql@15-main.service 'postgresql@*.service'; do" in mounts  # the drop-in found
    assert ExtTree(ExtFs(copy, MIB)).cat("/boot/grub/menu.lst") == MENU  # pvgrub097: GRUB 0.97 read the image's
    fsck(copy, 17 * MIB)


@pytest.mark.parametrize(("kinds", "why"), [
    (("83", "8e"), "LVM on /dev/sda2"),
    (("83", "83-empty"), "/dev/sda2: a Linux filesystem that is not ext2/3/4 (xfs, btrfs, ...)"),
])
def test_what_the_fast_path_leaves_to_libguestfs(tmp_path: Path, kinds: tuple[str, str], why: str) -> None:
    tree = tmp_path / "root"
    busybox_tree(tree)
    image = partitioned(tmp_path / "disk.img", tree, (kinds[0], kinds[1].split("-")[0]))
    if kinds[1].endswith("-empty"):
        with open(image, "r+b") as f:  # no filesystem on partition 2 any more
            f.seek(17 * MIB)
            f.write(bytes(4 * MIB))
    with pytest.raises(FastPathUnavailable, match=why.replace("(", r"\(").replace(")", r"\)")):
        pv_layout(image_file(image), None)


def test_a_qcow2_image_is_left_to_libguestfs(tmp_path: Path) -> None:
    tree = tmp_path / "root"
    busybox_tree(tree)
    raw = partitioned(tmp_path / "disk.img", tree)
    qcow2 = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(qcow2)], check=True)
    with pytest.raises(FastPathUnavailable, match="a qcow2 image"):
        pv_layout(image_file(qcow2), None)


def test_sparse_copy_keeps_holes(tmp_path: Path) -> None:
    source = tmp_path / "sparse.img"
    with open(source, "wb") as f:
        f.truncate(64 * MIB)
        f.seek(10 * MIB)
        f.write(b"x" * MIB)
    copied = sparse_copy(source, tmp_path / "copy.img")
    assert copied <= 2 * MIB and (tmp_path / "copy.img").read_bytes() == source.read_bytes()
    assert os.stat(tmp_path / "copy.img").st_blocks * 512 <= 2 * MIB


def test_a_cached_copy_in_use_is_not_evicted(tmp_path: Path, accel: Accel, cache: Path) -> None:
    """A boot's backing file is a cache entry: while one boot holds it (its prepare_disk block is open, as
    QEMU runs), other boots' eviction passes it by, and takes it once that boot has ended (seen under
    xdist: `qemu-img create -b overlay.qcow2`: "Could not open backing image")."""
    tree = tmp_path / "root"
    busybox_tree(tree)
    first = partitioned(tmp_path / "disk0.img", tree)
    images = [first] + [tmp_path / f"disk{i}.img" for i in range(1, MAX_ENTRIES + 2)]
    for copy in images[1:]:
        sparse_copy(first, copy)

    def prepare(path: Path) -> Any:  # each boot has its own work dir, as each `imagekit boot` has
        image, work = image_file(path), tmp_path / f"work-{path.stem}"
        work.mkdir(exist_ok=True)
        return prepare_disk(image, work, pv_job(image, BootOptions(path), "pvgrub", work, lambda: None, None), accel)

    with prepare(first) as (disk, _):
        [held] = list(cache.iterdir())
        for other in images[1:]:  # each stores its copy and evicts all but the newest MAX_ENTRIES
            with prepare(other):
                pass
        assert held.exists() and len(list(cache.iterdir())) == MAX_ENTRIES + 1
        info = subprocess.run(["qemu-img", "info", "--backing-chain", str(disk)], capture_output=True, text=True)
        assert info.returncode == 0 and str(held / "disk.raw") in info.stdout, info.stderr
    with prepare(images[1]):  # the held copy is now the oldest, and no boot holds it
        pass
    assert not held.exists() and len(list(cache.iterdir())) == MAX_ENTRIES
