"""Data volumes (seed 000) and LVM recipes: validation, the fstab and drop-ins the image gets, volume
images made with the real mke2fs (read back with debugfs, blkid and e2fsck), and a real build."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest

from imagekit.recipe.load import load_recipe
from imagekit.rootfs.bootstrap import Tree
from imagekit.rootfs.volumes import make_volume_images, service_dropins, split_mounts, volume_fstab_line
from imagekit.util.errors import RecipeError
from tests.util import RECIPES, run_imagekit

BASE = """\
name = "t"
size = "2G"
layout = "hd00"
[rootfs]
source = "bootstrap"
[kernel]
profile = "debian-cloud-amd64"
"""
BOOT = '[filesystems.boot]\ntype = "ext2"\nlabel = "boot"\nsize = "128M"\n'
VOLUME = """\
[[volumes]]
name = "pgdata"
mountpoint = "/var/lib/postgresql"
device = "/dev/sdh"
size = "1G"
label = "pgdata"
services = ["postgresql.service", "postgresql@.service"]
"""
LVM = """\
[lvm]
[[lvm.volumes]]
name = "root"
mountpoint = "/"
size = "1G"
[[lvm.volumes]]
name = "swap"
type = "swap"
label = "swap"
size = "64M"
[[lvm.volumes]]
name = "var"
mountpoint = "/var"
type = "ext4"
label = "var"
"""


def debugfs(image: Path, request: str) -> str:
    return subprocess.run(["debugfs", "-R", request, image], capture_output=True, text=True, check=True).stdout


def names(image: Path, directory: str) -> list[str]:
    """A directory's entries (without . and ..), read by debugfs."""
    lines = debugfs(image, f"ls -p {directory}").splitlines()
    return sorted(n for n in (line.split("/")[5] for line in lines if line.startswith("/")) if n not in (".", ".."))


def test_postgres_recipe_volume() -> None:
    recipe = load_recipe(RECIPES / "debian-12-postgres-datavol.toml")
    (vol,) = recipe.volumes
    assert (vol.mountpoint, vol.device, vol.label, vol.initial) == ("/var/lib/postgresql", "/dev/sdh", "pgdata", "copy")
    assert "postgresql" in recipe.packages and not vol.delete_on_termination
    assert volume_fstab_line(vol) == ("LABEL=pgdata\t/var/lib/postgresql\text4\t"
                                      "defaults,nofail,x-systemd.device-timeout=20s\t0\t2")
    assert service_dropins(recipe) == {
        f"/etc/systemd/system/{unit}.d/imagekit-volumes.conf":
            "# Written by imagekit: start only once the data volume is mounted (never on an empty directory).\n"
            "[Unit]\nRequiresMountsFor=/var/lib/postgresql\n"
        for unit in ("postgresql.service", "postgresql@.service")
    }


def test_lvm_recipe() -> None:
    recipe = load_recipe(RECIPES / "debian-12-lvm.toml")
    assert recipe.lvm is not None and recipe.filesystems.boot is not None
    assert [(lv.name, lv.mountpoint, lv.type) for lv in recipe.lvm.volumes] == [
        ("root", "/", None), ("swap", None, "swap"), ("var", "/var", "ext4")]
    assert "lvm2" in recipe.packages  # the initrd needs LVM to find root


BAD = [
    (BASE + BOOT + VOLUME.replace("/dev/sdh", "/dev/sdb"), "volumes.0.device: device '/dev/sdb' is not an EC2 data "
     "volume device (/dev/sdc ... /dev/sdz; sda is the root volume, sdb the instance store)"),
    (BASE + BOOT + VOLUME.replace('"/var/lib/postgresql"', '"var/lib"'),
     "volumes.0.mountpoint: mountpoint 'var/lib' must be an absolute path"),
    (BASE + BOOT + VOLUME.replace('label = "pgdata"', 'label = "boot"'),
     "volumes.0.label: label 'boot' is also filesystems.boot.label"),
    (BASE + BOOT + VOLUME.replace('"postgresql.service", ', '"postgres", '),
     "volumes.0.services: services 'postgres' is not a systemd unit name"),
    (BASE + BOOT + VOLUME + VOLUME.replace("sdh", "xvdh").replace('label = "pgdata"', 'label = "x"')
     .replace('"/var/lib/postgresql"', '"/srv"').replace('"pgdata"', '"two"'),
     "volumes.1.device: /dev/xvdh is also volumes.0.device"),
    (BASE + BOOT + VOLUME.replace('size = "1G"\n', ""), "volumes.0.size: required key is missing"),
    (BASE + BOOT + VOLUME + 'initial = "seed"\n', "volumes.0.initial: 'seed' is not one of empty, copy"),
    (BASE + LVM, 'lvm: LVM needs layout = "hd00" and a separate /boot partition ([filesystems.boot]): '
     "PV-GRUB cannot read logical volumes (seed 002)"),
    (BASE.replace('"hd00"', '"hd0"') + LVM, "lvm: LVM needs layout"),
    (BASE + BOOT + LVM.replace('size = "1G"', 'size = "3G"'),
     "size: the logical volumes need 3136 MiB, the physical volume has about 1912 MiB"),
    (BASE + BOOT + LVM.replace('mountpoint = "/"\n', ""), "lvm.volumes.0.type: type is required"),
    (BASE + BOOT + LVM.replace('type = "swap"\n', 'type = "swap"\nmountpoint = "/swap"\n'),
     "lvm.volumes.1.mountpoint: mountpoint must be left out for swap"),
    (BASE + BOOT + LVM.replace('name = "swap"', 'name = "root"'), "lvm.volumes: volumes hold two logical volumes"),
    (BASE + BOOT + LVM.replace('label = "var"', 'label = "boot"'),
     "lvm.volumes.2.label: label 'boot' is also filesystems.boot.label"),
    (BASE + BOOT + LVM + VOLUME.replace('"/var/lib/postgresql"', '"/var"'),
     "volumes.0.mountpoint: /var is mounted twice"),
    (BASE + BOOT + LVM.replace('name = "root"\nmountpoint = "/"\n', 'name = "root"\nmountpoint = "/"\nlabel = "r"\n'),
     "lvm.volumes.0.type: type and label of the root volume come from [filesystems.root]"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[f"{n}-{m.split(':')[0]}" for n, (_, m) in enumerate(BAD)])
def test_bad_storage_recipe_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "x.toml"
    path.write_text(text)
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(err.value).startswith(f"{path}: {message}"), str(err.value)


def test_split_mounts_and_volume_images(tmp_path: Path) -> None:
    """initial = "copy" moves the tree's files onto the volume (owner kept); "empty" gets an empty filesystem."""
    path = tmp_path / "r.toml"
    copy = VOLUME + 'initial = "copy"\n'
    empty = VOLUME.replace("pgdata", "scratch").replace("/var/lib/postgresql", "/srv/scratch").replace("sdh", "sdi")
    path.write_text(BASE + BOOT + LVM + copy + empty.replace('size = "1G"', 'size = "64M"'))
    recipe = load_recipe(path)
    tree = Tree(tmp_path / "root")
    pg = tree.path / "var/lib/postgresql/15/main"
    pg.mkdir(parents=True)
    (pg / "PG_VERSION").write_text("15\n")
    os.chown(tree.path / "var/lib/postgresql", 105, 109)
    os.chmod(tree.path / "var/lib/postgresql", 0o750)
    (tree.path / "var/log").mkdir()
    work = tmp_path / "work"
    work.mkdir()

    trees = split_mounts(recipe, tree, work)
    assert sorted(trees) == ["/var", "/var/lib/postgresql"]
    assert (trees["/var/lib/postgresql"].path / "15/main/PG_VERSION").is_file()
    assert sorted(p.name for p in (trees["/var"].path).iterdir()) == ["lib", "log"]
    assert list((trees["/var"].path / "lib/postgresql").iterdir()) == []  # the mount point stays, empty
    assert list((tree.path / "var").iterdir()) == []

    with ExitStack() as stack:
        made = make_volume_images(recipe, tmp_path / "out.img", trees, work, None, stack)
        for img in made:
            os.replace(img.partial, img.path)
    pgdata, scratch = (tmp_path / "out.img.pgdata.img", tmp_path / "out.img.scratch.img")
    assert pgdata.stat().st_size == 1 << 30 and scratch.stat().st_size == 64 << 20
    for image, label in ((pgdata, "pgdata"), (scratch, "scratch")):
        subprocess.run(["e2fsck", "-fn", image], check=True, capture_output=True)
        blkid = subprocess.run(["blkid", "-o", "export", image], capture_output=True, text=True).stdout
        assert f"LABEL={label}\n" in blkid and "TYPE=ext4\n" in blkid
    assert debugfs(pgdata, "cat /15/main/PG_VERSION") == "15\n"
    root = debugfs(pgdata, "stat /")
    assert "User:   105   Group:   109" in root and "Mode:  0750" in root
    assert names(scratch, "/") == ["lost+found"]
    assert names(pgdata, "/") == ["15", "lost+found"]


@pytest.mark.slow
def test_build_with_data_volumes(small_recipe: Callable[..., Path], tmp_path: Path, small_tree: Path) -> None:
    """A real build (hd0): fstab by LABEL with nofail, drop-ins, one copied and one empty volume image."""
    data = tmp_path / "tree-data"
    subprocess.run(["cp", "-a", f"{small_tree}/.", data], check=True)
    (data / "srv/app").mkdir(parents=True)
    (data / "srv/app/state").write_text("kept\n")
    extra = ('[[volumes]]\nname = "app"\nmountpoint = "/srv/app"\ndevice = "/dev/sdh"\nsize = "32M"\nlabel = "app"\n'
             'initial = "copy"\nservices = ["app.service"]\ndelete_on_termination = true\n'
             '[[volumes]]\nname = "logs"\nmountpoint = "/var/log/app"\ndevice = "/dev/sdi"\nsize = "16M"\n'
             'type = "ext2"\nlabel = "logs"\ndevice_timeout = 5\nservices = ["app.service"]\n')
    recipe = small_recipe(extra=extra)
    recipe.write_text(recipe.read_text().replace('path = "tree"', f'path = "{data}"'))
    image = tmp_path / "out" / "v.img"
    proc = run_imagekit("build", recipe, "-o", image, "--json")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)
    assert sorted(p.name for p in image.parent.iterdir()) == ["v.img", "v.img.app.img", "v.img.logs.img",
                                                             "v.img.manifest.json"]
    app, logs = manifest["data_volumes"]
    assert {k: app[k] for k in ("name", "mountpoint", "label", "type", "size", "device", "image",
                                "delete_on_termination", "services")} == {
        "name": "app", "mountpoint": "/srv/app", "label": "app", "type": "ext4", "size": 32 << 20,
        "device": "/dev/sdh", "image": "v.img.app.img", "delete_on_termination": True, "services": ["app.service"]}
    assert (logs["type"], logs["image"], logs["delete_on_termination"]) == ("ext2", "v.img.logs.img", False)

    fstab = debugfs(image, "cat /etc/fstab").splitlines()
    assert "LABEL=app\t/srv/app\text4\tdefaults,nofail,x-systemd.device-timeout=30s\t0\t2" in fstab
    assert "LABEL=logs\t/var/log/app\text2\tdefaults,nofail,x-systemd.device-timeout=5s\t0\t2" in fstab
    dropin = debugfs(image, "cat /etc/systemd/system/app.service.d/imagekit-volumes.conf")
    assert dropin.endswith("[Unit]\nRequiresMountsFor=/srv/app /var/log/app\n")
    assert names(image, "/srv/app") == []  # the files went to the volume
    assert debugfs(image.parent / "v.img.app.img", "cat /state") == "kept\n"
    uuid = subprocess.run(["blkid", "-o", "value", "-s", "UUID", image.parent / "v.img.logs.img"],
                          capture_output=True, text=True).stdout.strip()
    assert uuid == logs["uuid"]
