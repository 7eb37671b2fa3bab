"""Every writer of the configure stage stays inside a hostile tree: /etc, /boot and /var/lib are absolute
symlinks to host directories, which mean the image's paths of those names (tree/<host path>)."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagekit.bootloader.menulst import Entry, render_menu_lst
from imagekit.recipe.kernel_profiles import load_profile
from imagekit.recipe.load import load_recipe
from imagekit.rootfs.bootstrap import Tree
from imagekit.rootfs.configure import install_kernel, make_esp_mountpoint, split_boot, write_fstab, write_identity
from imagekit.rootfs.volumes import configure_volumes, split_mounts
from imagekit.util.errors import ImagekitError, UsageError

RECIPE = """\
name = "hostile"
size = "2G"
layout = "{layout}"
[rootfs]
source = "directory"
path = "tree"
[kernel]
profile = "host-cloud-amd64"
[[volumes]]
name = "pgdata"
mountpoint = "/var/lib/postgresql"
device = "/dev/sdh"
size = "64M"
label = "pgdata"
initial = "copy"
services = ["postgresql.service"]
"""


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """Host directories the tree's symlinks name; each must stay empty."""
    for d in ("etc", "boot", "lib"):
        (tmp_path / "host" / d).mkdir(parents=True)
    return tmp_path / "host"


def hostile_tree(tmp_path: Path, host: Path) -> Tree:
    root = tmp_path / "tree"
    (root / "var").mkdir(parents=True)
    (root / "etc").symlink_to(host / "etc")
    (root / "boot").symlink_to(host / "boot")
    (root / "var/lib").symlink_to(host / "lib")
    return Tree(root)


def inside(tree: Tree, host_path: Path) -> Path:
    return tree.path / str(host_path).lstrip("/")


def assert_host_untouched(host: Path) -> None:
    assert [p for p in host.rglob("*") if not p.is_dir()] == []
    assert sorted(p.name for p in host.iterdir()) == ["boot", "etc", "lib"]
    assert all(not any(d.iterdir()) for d in host.iterdir())


def test_configure_writers_stay_in_the_tree(tmp_path: Path, host: Path) -> None:
    (tmp_path / "r.toml").write_text(RECIPE.format(layout="gpt-uefi"))
    recipe = load_recipe(tmp_path / "r.toml")
    tree = hostile_tree(tmp_path, host)

    kernel = install_kernel(tree, load_profile("host-cloud-amd64", recipe_path=recipe.path))
    write_fstab(tree, "LABEL=root\t/\text4\tdefaults\t0\t1\n")
    make_esp_mountpoint(tree, recipe)
    configure_volumes(recipe, tree)
    write_identity(tree, recipe)

    assert_host_untouched(host)
    etc = inside(tree, host / "etc")
    assert (etc / "hostname").read_text() == "localhost\n"
    assert "LABEL=pgdata\t/var/lib/postgresql" in (etc / "fstab").read_text()
    assert (etc / "systemd/system/postgresql.service.d/imagekit-volumes.conf").is_file()
    assert (inside(tree, host / "boot") / kernel.kernel).is_file()
    assert (inside(tree, host / "boot") / "efi").is_dir()
    assert (inside(tree, host / "lib") / "postgresql").is_dir()

    work = tmp_path / "work"
    work.mkdir()
    trees = split_mounts(recipe, tree, work)
    assert_host_untouched(host)
    assert (inside(tree, host / "lib") / "postgresql").is_dir()  # the empty mount point stays
    assert trees["/var/lib/postgresql"].path.is_dir()


def test_split_boot_moves_the_trees_boot_not_the_hosts(tmp_path: Path, host: Path) -> None:
    tree = hostile_tree(tmp_path, host)
    (host / "boot/host-kernel").write_text("the host's\n")
    boot = inside(tree, host / "boot")
    (boot / "grub").mkdir(parents=True)
    (boot / "grub/menu.lst").write_text("default 0\n")
    work = tmp_path / "work"
    work.mkdir()
    boot_tree = split_boot(tree, work)
    assert (host / "boot/host-kernel").read_text() == "the host's\n"
    assert (boot_tree.path / "boot/grub/menu.lst").read_text() == "default 0\n"
    assert boot.is_dir() and not any(boot.iterdir())


def test_mount_point_through_a_link_to_root_is_refused(tmp_path: Path, host: Path) -> None:
    (tmp_path / "r.toml").write_text(RECIPE.format(layout="hd0"))
    recipe = load_recipe(tmp_path / "r.toml")
    root = tmp_path / "tree"
    (root / "var/lib").mkdir(parents=True)
    (root / "var/lib/postgresql").symlink_to("/")
    with pytest.raises(UsageError, match="symlink to the image's root directory"):
        split_mounts(recipe, Tree(root), tmp_path)
    assert (root / "var/lib/postgresql").is_symlink()


@pytest.mark.parametrize("entry", [Entry("a\nkernel /evil", kernel="/boot/vmlinuz-1"),
                                   Entry("a", kernel="/boot/vmlinuz-1", kernel_args="ro\ninitrd /evil"),
                                   Entry("", kernel="/boot/vmlinuz-1\r")])
def test_menu_lst_never_renders_a_line_break(entry: Entry) -> None:
    """The loader refuses such values; the renderer refuses them too (kernel versions come from the rootfs)."""
    with pytest.raises(ImagekitError, match="holds a line break"):
        render_menu_lst([entry], root_device="(hd0)")
