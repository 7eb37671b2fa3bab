"""A build as an ordinary user: no root, no loop device, and still root-owned files and device nodes.

Run as root (to become `nobody` with setpriv): the tarball holds a file owned by uid 1000 and a
character device, which an unprivileged tar cannot create; fakeroot records them and mke2fs -d
replays the record into the image.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.util import REPO, SMALL_RECIPE, make_small_tree

NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                                reason="needs root to drop to an unprivileged user with setpriv")


def _tarball(tree: Path, dest: Path) -> None:
    def owner(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid, info.gid = (1000, 1000) if info.name.endswith("etc/owned-by-1000") else (0, 0)
        return info

    (tree / "etc" / "owned-by-1000").write_text("x\n")
    with tarfile.open(dest, "w") as tar:
        tar.add(tree, arcname=".", filter=owner)
        console = tarfile.TarInfo("./dev/console")
        console.type, console.devmajor, console.devminor, console.mode = tarfile.CHRTYPE, 5, 1, 0o600
        tar.addfile(console)


def debugfs(image: Path, request: str) -> str:
    return subprocess.run(["debugfs", "-R", request, image], capture_output=True, text=True).stdout


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A scratch directory an unprivileged user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="imagekit-rootless-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_build_as_nobody(open_tmp: Path) -> None:
    tmp_path = open_tmp
    work = tmp_path / "user"
    work.mkdir()
    _tarball(make_small_tree(tmp_path / "tree"), work / "rootfs.tar")
    recipe = work / "r.toml"
    recipe.write_text(SMALL_RECIPE.format(name="rootless", layout="hd0", size="256M", extra="").replace(
        'source = "directory"\npath = "tree"', 'source = "tarball"\npath = "rootfs.tar"'))
    shutil.chown(work, NOBODY, NOBODY)
    for p in work.iterdir():
        shutil.chown(p, NOBODY, NOBODY)
    env = {"PATH": os.environ["PATH"], "HOME": str(work), "IMAGEKIT_CACHE_DIR": str(work / "cache"),
           "PYTHONPATH": str(REPO), "IMAGEKIT_ACCEL": "tcg"}
    proc = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                           str(REPO / ".venv/bin/python"), "-m", "imagekit", "build", str(recipe),
                           "-o", str(work / "out.img"), "--no-lint"],
                          capture_output=True, text=True, env=env, cwd=work)
    assert proc.returncode == 0, proc.stderr
    image = work / "out.img"
    assert image.stat().st_uid == NOBODY
    assert "Type: character special" in debugfs(image, "stat /dev/console")
    assert "Device major/minor number: 05:01" in debugfs(image, "stat /dev/console")
    assert "User:  1000   Group:  1000" in debugfs(image, "stat /etc/owned-by-1000")
    assert "User:     0   Group:     0" in debugfs(image, "stat /bin/busybox")
    subprocess.run(["e2fsck", "-fn", image], check=True, capture_output=True)


def test_a_bootstrap_as_a_user_without_subordinate_ids_is_refused_before_mmdebstrap(open_tmp: Path) -> None:
    """mmdebstrap's unshare mode needs the user's line in /etc/subuid and /etc/subgid (nobody has none):
    exit 2 naming the file and the fix, before any download or stage."""
    work = open_tmp / "user"
    work.mkdir()
    shutil.chown(work, NOBODY, NOBODY)
    env = {"PATH": os.environ["PATH"], "HOME": str(work), "IMAGEKIT_CACHE_DIR": str(work / "cache"),
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                           str(REPO / ".venv/bin/python"), "-m", "imagekit", "build",
                           str(REPO / "recipes/debian-12-pvgrub-hd0.toml"), "-o", str(work / "out.img"), "--no-lint"],
                          capture_output=True, text=True, env=env, cwd=work)
    assert proc.returncode == 2, proc.stderr
    error, hint = proc.stderr.splitlines()
    assert re.match(r"error: a rootless bootstrap \(mmdebstrap --mode=unshare\): (cannot read )?/etc/subuid[: ]",
                    error), error  # login's postinst makes an empty /etc/subuid; a host may have none
    assert hint == "hint: as root: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 nobody"
    assert "==> bootstrap" not in proc.stdout + proc.stderr
    assert not [p for p in (work / "cache").rglob("*") if p.name.endswith((".tar", ".partial"))]


def test_subordinate_id_ranges_are_read_as_mmdebstrap_reads_them(tmp_path: Path) -> None:
    from imagekit.rootfs.bootstrap import check_rootless_host
    from imagekit.util.errors import UsageError

    user = pwd.getpwuid(os.getuid()).pw_name
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subgid.write_text(f"other:100000:65536\n{user}:200000:65536\n")
    for text, message in ((None, "cannot read .*subuid: No such file or directory"),
                          ("other:100000:65536\n", f"subuid has no range for {user}$"),
                          (f"{user}:100000:1000\n", f"subuid gives {user} 1000 ids; the chroot needs 65536")):
        if text is not None:
            subuid.write_text(text)
        with pytest.raises(UsageError, match=message):
            check_rootless_host((subuid, subgid))
    subuid.write_text(f"{user}:100000:65536\n")
    check_rootless_host((subuid, subgid))  # newuidmap and newgidmap: scripts/setup installs uidmap
