"""Paths in a staged tree resolve inside it, as a chroot at the tree would (real files and symlinks)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imagekit.rootfs.tree_paths import (
    TreePathError,
    copy_into_tree,
    make_directory_in_tree,
    read_in_tree,
    resolve_in_tree,
    write_in_tree,
)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A tree beside a 'host' directory it must never write to; /var/run -> /run as in Debian."""
    root = tmp_path / "tree"
    for d in ("etc", "run", "var", "srv"):
        (root / d).mkdir(parents=True)
    (root / "var/run").symlink_to("/run")
    (tmp_path / "host").mkdir()
    return root


def test_absolute_symlink_resolves_in_the_tree(tree: Path) -> None:
    assert resolve_in_tree(tree, "/var/run/x") == tree / "run/x"
    written = write_in_tree(tree, "/var/run/x", b"in the image\n")
    assert written == tree / "run/x" and written.read_bytes() == b"in the image\n"


def test_dotdot_stops_at_the_tree_root(tree: Path) -> None:
    assert resolve_in_tree(tree, "/../../../../srv/escaped") == tree / "srv/escaped"
    assert resolve_in_tree(tree, "/etc/../../..") == tree
    (tree / "etc/up").symlink_to("../../../../host")  # a relative link climbing out stays at the root
    assert resolve_in_tree(tree, "/etc/up/x") == tree / "host/x"
    write_in_tree(tree, "/etc/up/x", b"x")
    assert not (tree.parent / "host/x").exists() and (tree / "host/x").read_bytes() == b"x"


def test_symlink_to_the_host_by_absolute_path_stays_inside(tree: Path) -> None:
    host = tree.parent / "host"
    (tree / "boot").symlink_to(host)  # what the host path means inside the image
    copy_into_tree(tree, "/boot/vmlinuz-1", Path(__file__), 0o644)
    assert list(host.iterdir()) == []
    assert (tree / str(host).lstrip("/") / "vmlinuz-1").is_file()


def test_final_symlink_is_replaced_not_followed(tree: Path) -> None:
    (tree / "etc/resolv.conf").symlink_to("/run/resolv.conf")
    write_in_tree(tree, "/etc/resolv.conf", b"nameserver 10.0.0.2\n")
    assert not (tree / "etc/resolv.conf").is_symlink()
    assert (tree / "etc/resolv.conf").read_bytes() == b"nameserver 10.0.0.2\n"
    assert not (tree / "run/resolv.conf").exists()


def test_a_file_replaced_is_a_new_inode(tree: Path) -> None:
    cached = tree.parent / "cached-hostname"
    cached.write_text("cache\n")
    os.link(cached, tree / "etc/hostname")  # as a tree staged from the bootstrap cache with cp -al
    write_in_tree(tree, "/etc/hostname", b"small\n", 0o600)
    assert cached.read_text() == "cache\n"
    assert (tree / "etc/hostname").stat().st_mode & 0o777 == 0o600


def test_symlink_loop_is_one_error(tree: Path) -> None:
    (tree / "etc/loop").symlink_to("/etc/loop")
    with pytest.raises(TreePathError, match="too many levels of symbolic links"):
        write_in_tree(tree, "/etc/loop/x", b"x")
    (tree / "etc/a").symlink_to("b")
    (tree / "etc/b").symlink_to("a")
    with pytest.raises(TreePathError, match="too many levels"):
        make_directory_in_tree(tree, "/etc/a")


def test_file_in_the_way_and_directory_target(tree: Path) -> None:
    (tree / "etc/file").write_text("x")
    with pytest.raises(TreePathError, match=r"/etc/file is not a directory in the image"):
        write_in_tree(tree, "/etc/file/x", b"x")
    with pytest.raises(TreePathError, match=r"/etc is a directory in the image"):
        write_in_tree(tree, "/etc", b"x")
    (tree / "etc/rundir").symlink_to("/run")
    with pytest.raises(TreePathError, match=r"/run is a directory in the image"):
        write_in_tree(tree, "/etc/rundir", b"x")


def test_planted_temp_name_is_never_written_through(tree: Path) -> None:
    victim = tree.parent / "host/victim"
    victim.write_text("host file\n")
    for name in (".hostname.imagekit", ".hostname"):  # the names the old writer used
        (tree / "etc" / name).symlink_to(victim)
    write_in_tree(tree, "/etc/hostname", b"small\n")
    assert victim.read_text() == "host file\n"
    assert [p.name for p in (tree / "etc").iterdir() if p.name.endswith(".imagekit") and not p.is_symlink()] == []


def test_directories_made_inside(tree: Path) -> None:
    made = make_directory_in_tree(tree, "/var/run/a/b")
    assert made == tree / "run/a/b" and made.is_dir()


def test_read_follows_links_inside_only(tree: Path) -> None:
    secret = tree.parent / "host/status"
    secret.write_text("Package: host\n")
    (tree / "var/lib").symlink_to(tree.parent / "host")  # absolute: means tree/<host path> in the image
    assert read_in_tree(tree, "/var/lib/status") is None
    os.mkfifo(tree / "etc/fifo")
    assert read_in_tree(tree, "/etc/fifo") is None  # never blocks


def test_nul_is_refused(tree: Path) -> None:
    with pytest.raises(TreePathError, match="NUL"):
        resolve_in_tree(tree, "/etc/a\0b")
