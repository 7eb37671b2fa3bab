"""A hostile recipe or rootfs never makes a build write on the host (issue 13, item 1): real builds.

The small busybox tree gets the image's absolute symlinks (`/var/run -> /run`, and a `/boot` pointing at
a host directory); `files.dest` names paths through them. Each file lands inside the image (read back
with debugfs from the raw hd0 image) or the build stops at load with exit 2 naming `files.0.dest`; the
host paths they would have reached do not exist afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.util import REPO, SMALL_RECIPE, make_small_tree, run_imagekit


def debugfs(image: Path, request: str) -> str:
    return subprocess.run(["debugfs", "-R", request, image], capture_output=True, text=True).stdout


def recipe_for(tmp_path: Path, tree: Path, files: str) -> Path:
    path = tmp_path / "r.toml"
    text = SMALL_RECIPE.format(name="safe", layout="hd0", size="256M", extra="")
    path.write_text(text.replace('path = "tree"', f'path = "{tree}"') + files)
    return path


def files_entry(dest: str, src: str = "payload") -> str:
    return f'[[files]]\nsrc = "{src}"\ndest = "{dest}"\n'


@pytest.fixture
def tag() -> str:
    return f"imagekit-escape-{uuid.uuid4().hex[:12]}"


@pytest.mark.slow
def test_dest_through_image_symlinks_lands_in_the_image(tmp_path: Path, tag: str) -> None:
    host_boot = tmp_path / "host-boot"  # a host directory the tree's /boot points at (absolute)
    host_boot.mkdir()
    tree = make_small_tree(tmp_path / "tree")
    (tree / "var").mkdir()
    (tree / "var/run").symlink_to("/run")
    (tree / "boot").rmdir()
    (tree / "boot").symlink_to(host_boot)
    (tmp_path / "payload").write_text("inside the image\n")
    recipe = recipe_for(tmp_path, tree, files_entry(f"/var/run/{tag}"))
    image = tmp_path / "out.img"

    proc = run_imagekit("build", recipe, "-o", image, "--no-lint")

    assert proc.returncode == 0, proc.stderr
    assert not Path(f"/run/{tag}").exists()  # the old copy followed the host's /run
    assert list(host_boot.iterdir()) == []  # the kernel, initrd and menu.lst went into the image
    assert debugfs(image, f"cat /run/{tag}") == "inside the image\n"
    assert "Type: symlink" in debugfs(image, "stat /var/run")
    boot_in_image = str(host_boot)  # /boot -> <that path>, resolved inside the image
    listing = debugfs(image, f"ls -l {boot_in_image}")
    assert "vmlinuz-" in listing and "grub" in listing, listing
    assert "LABEL=root" in debugfs(image, f"cat {boot_in_image}/grub/menu.lst")


@pytest.mark.parametrize("dest", ["/../../../../../../../../srv/{tag}", "/etc/../../srv/{tag}", "/dev/{tag}",
                                  "/proc/{tag}", "/sys/{tag}", "/etc//{tag}", "/etc/./{tag}"])
def test_hostile_dest_refused_at_load(tmp_path: Path, tag: str, dest: str) -> None:
    dest = dest.format(tag=tag)
    (tmp_path / "payload").write_text("x\n")
    recipe = recipe_for(tmp_path, make_small_tree(tmp_path / "tree"), files_entry(dest))
    proc = run_imagekit("build", recipe, "-o", tmp_path / "out.img")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {recipe}: files.0.dest: "), proc.stderr
    assert not Path(f"/srv/{tag}").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["payload", "r.toml", "tree"]


def test_dest_into_a_symlink_loop_is_one_line(tmp_path: Path) -> None:
    tree = make_small_tree(tmp_path / "tree")
    (tree / "etc/loop").symlink_to("/etc/loop")
    (tmp_path / "payload").write_text("x\n")
    recipe = recipe_for(tmp_path, tree, files_entry("/etc/loop/x"))
    proc = run_imagekit("build", recipe, "-o", tmp_path / "out.img", "--no-lint")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {recipe}: files.0.dest: /etc/loop/x: too many levels of symbolic links (more than 40)")
    assert not (tmp_path / "out.img").exists()


def test_dest_through_a_symlink_into_proc_is_refused(tmp_path: Path) -> None:
    tree = make_small_tree(tmp_path / "tree")
    (tree / "etc/kernel").symlink_to("/proc/sys/kernel")
    (tmp_path / "payload").write_text("x\n")
    recipe = recipe_for(tmp_path, tree, files_entry("/etc/kernel/hostname"))
    proc = run_imagekit("build", recipe, "-o", tmp_path / "out.img", "--no-lint")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"error: {recipe}: files.0.dest: /etc/kernel/hostname is /proc/sys/kernel/hostname in the image"), proc.stderr


NOBODY = 65534


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root to drop to an unprivileged user with setpriv")
def test_dest_through_image_symlink_rootless(tag: str) -> None:
    """The same resolution as an ordinary user (fakeroot tree): /var/run/x lands at /run/x in the image."""
    work = Path(tempfile.mkdtemp(prefix="imagekit-safe-rootless-"))
    try:
        work.chmod(0o755)
        tree = make_small_tree(work / "tree")
        (tree / "var").mkdir()
        (tree / "var/run").symlink_to("/run")
        (work / "payload").write_text("rootless, inside the image\n")
        recipe = recipe_for(work, tree, files_entry(f"/var/run/{tag}", src=str(work / "payload")))
        for p in [work, *work.rglob("*")]:
            os.lchown(p, NOBODY, NOBODY)
        env = {"PATH": os.environ["PATH"], "HOME": str(work), "IMAGEKIT_CACHE_DIR": str(work / "cache"),
               "PYTHONPATH": str(REPO), "IMAGEKIT_ACCEL": "tcg"}
        proc = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                               str(REPO / ".venv/bin/python"), "-m", "imagekit", "build", str(recipe),
                               "-o", str(work / "out.img"), "--no-lint"],
                              capture_output=True, text=True, env=env, cwd=work)
        assert proc.returncode == 0, proc.stderr
        assert not Path(f"/run/{tag}").exists()
        assert debugfs(work / "out.img", f"cat /run/{tag}") == "rootless, inside the image\n"
        assert "User:     0   Group:     0" in debugfs(work / "out.img", f"stat /run/{tag}")
    finally:
        shutil.rmtree(work)
