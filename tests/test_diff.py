"""Reproducible builds and `imagekit diff`: same inputs give the same bytes; a changed file is named."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.util import run_imagekit, sha256

EPOCH = {"SOURCE_DATE_EPOCH": "1767225600"}
BOOTPART = '[filesystems.boot]\ntype = "ext2"\nlabel = "boot"\nsize = "64M"\n'


@pytest.mark.parametrize(("layout", "extra"), [
    ("hd0", ""),
    pytest.param("hd00", "", marks=pytest.mark.slow),  # three builds each: hd0 alone keeps it in the fast loop
    pytest.param("hd00", BOOTPART, marks=pytest.mark.slow),
], ids=["hd0", "hd00", "hd00-bootpart"])
def test_same_epoch_same_bytes(small_recipe: Callable[..., Path], tmp_path: Path, layout: str, extra: str) -> None:
    recipe = small_recipe(layout=layout, extra=extra)
    for name in ("a", "b"):
        proc = run_imagekit("build", recipe, "-o", tmp_path / f"{name}.img", "--no-lint", env=EPOCH)
        assert proc.returncode == 0, proc.stderr
    assert sha256(tmp_path / "a.img") == sha256(tmp_path / "b.img")
    run_imagekit("build", recipe, "-o", tmp_path / "c.img", "--no-lint", check=True)  # no epoch: differs
    assert sha256(tmp_path / "a.img") != sha256(tmp_path / "c.img")


@pytest.mark.slow
def test_diff_names_the_changed_file(small_recipe: Callable[..., Path], tmp_path: Path) -> None:
    motd = tmp_path / "motd"
    recipe = small_recipe(extra='[[files]]\nsrc = "motd"\ndest = "/etc/motd"\n')
    motd.write_text("one\n")
    run_imagekit("build", recipe, "-o", tmp_path / "a.img", "--no-lint", env=EPOCH, check=True)
    motd.write_text("two, longer\n")
    run_imagekit("build", recipe, "-o", tmp_path / "b.img", "--no-lint", env=EPOCH, check=True)

    proc = run_imagekit("diff", tmp_path / "a.img", tmp_path / "b.img", "--json")
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["schema"], doc["same"]) == ("imagekit.diff/1", False)
    assert doc["changes"] == [{"kind": "file", "change": "changed", "name": "/etc/motd", "old": "4 B", "new": "12 B"}]
    text = run_imagekit("diff", tmp_path / "a.img", tmp_path / "b.img").stdout
    assert text == "~ file /etc/motd 4 B -> 12 B\n"


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["hd0", "hd00"])
def test_diff_readers_agree(small_recipe: Callable[..., Path], tmp_path: Path, layout: str) -> None:
    """The native reader and libguestfs see the same changes: files added, removed and changed (with
    sizes), a symlink retargeted, the boot configuration."""
    (tmp_path / "motd").write_text("one\n")
    (tmp_path / "extra").write_text("only in b\n")
    common = '[[files]]\nsrc = "motd"\ndest = "/etc/motd"\n'
    a = small_recipe("a", layout=layout, extra=common)
    b = small_recipe("b", layout=layout, extra=common + '[[files]]\nsrc = "extra"\ndest = "/etc/extra"\n')
    run_imagekit("build", a, "-o", tmp_path / "a.img", "--no-lint", env=EPOCH, check=True)
    (tmp_path / "motd").write_text("two, longer\n")
    run_imagekit("build", b, "-o", tmp_path / "b.img", "--no-lint", env=EPOCH, check=True)

    by_reader = {}
    for reader in ("native", "guestfs"):
        proc = run_imagekit("diff", tmp_path / "a.img", tmp_path / "b.img", "--json", "--reader", reader)
        assert proc.returncode == 1, proc.stderr
        by_reader[reader] = json.loads(proc.stdout)["changes"]
    assert by_reader["native"] == by_reader["guestfs"]
    names = {(c["change"], c["name"]) for c in by_reader["native"]}
    assert {("changed", "/etc/motd"), ("added", "/etc/extra")} <= names, names


@pytest.mark.slow  # two builds and a diff: ~7 s (the fast loop: README, Tests)
def test_diff_manifests_packages_and_boot(tmp_path: Path) -> None:
    base = {"packages": [{"name": "bash", "version": "5.2-1"}, {"name": "vim", "version": "9.0"}],
            "menu_lst": {"text": "default 0\n"}, "cmdline": "root=LABEL=root ro"}
    other = {"packages": [{"name": "bash", "version": "5.2-2"}, {"name": "curl", "version": "7.88"}],
             "menu_lst": {"text": "default 0\n"}, "cmdline": "root=LABEL=root ro quiet"}
    (tmp_path / "a.json").write_text(json.dumps(base))
    (tmp_path / "b.json").write_text(json.dumps(other))
    proc = run_imagekit("diff", tmp_path / "a.json", tmp_path / "b.json")
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[:4] == [
        "~ package bash 5.2-1 -> 5.2-2", "+ package curl 7.88", "- package vim 9.0", "~ boot cmdline"]
    same = run_imagekit("diff", tmp_path / "a.json", tmp_path / "a.json")
    assert same.returncode == 0 and same.stdout == ""


def test_diff_refuses_mixed_inputs(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "b.img").write_bytes(b"")
    proc = run_imagekit("diff", tmp_path / "a.json", tmp_path / "b.img")
    assert proc.returncode == 2
    assert proc.stderr == "error: diff: give two images or two manifests, not one of each\n"


@pytest.mark.parametrize(("printed", "path"), [("./etc/motd", "/etc/motd"), ("etc/motd", "/etc/motd"),
                                               ("/boot/vmlinuz", "/boot/vmlinuz"), ("//boot/grub", "/boot/grub"),
                                               ("./.hidden", "/.hidden"), (".hidden", "/.hidden")])
def test_image_paths_are_joined_once(printed: str, path: str) -> None:
    """sha256sum prints ./x, find prints x or /x: every path in a diff starts with exactly one slash."""
    from imagekit.diff.compare import image_path

    assert image_path(printed) == path


def test_diff_of_two_bad_manifests_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps({"packages": [{"name": "bash", "version": 5}]}))
    (tmp_path / "b.json").write_text("{}")
    proc = run_imagekit("diff", tmp_path / "a.json", tmp_path / "b.json")
    assert proc.returncode == 2
    assert proc.stderr == f"error: {tmp_path / 'a.json'}: packages.0.version: Input should be a valid string\n"
