"""Staging the cached bootstrap where hard links cannot work, unwritable caches, concurrent cold caches
and a full host disk (issue 13, items 4, 5 and 11).

Real mmdebstrap (a cheap `variant = "extract"` of base-files and busybox: seconds, not a minute),
real cp, tar, fakeroot and mke2fs; a second filesystem is a tmpfs, a read-only cache a read-only bind
mount (both need root: skipped otherwise). The rootless case drops to `nobody` with setpriv.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.util import IMAGEKIT, REPO, make_small_tree, run_imagekit

NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs or a read-only bind mount needs root")
needs_setpriv = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                                   reason="needs root to drop to an unprivileged user with setpriv")
pytestmark = as_root

TINY_RECIPE = """\
name = "tiny"
size = "256M"
layout = "hd0"
hostname = "tiny"
[rootfs]
source = "bootstrap"
tool = "mmdebstrap"
variant = "extract"
packages = ["base-files", "busybox"]
[kernel]
profile = "host-cloud-amd64"
"""


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@pytest.fixture
def mounts() -> Iterator[Callable[..., Path]]:
    """mount(target, *options): mount something for the test; everything is unmounted afterwards."""
    done: list[Path] = []

    def do(target: Path, *args: str) -> Path:
        target.mkdir(parents=True, exist_ok=True)
        mount(*args, str(target))
        done.append(target)
        return target

    yield do
    for target in reversed(done):
        subprocess.run(["umount", "-l", str(target)], check=False)


def tmpfs(mounts: Callable[..., Path], target: Path, size: str) -> Path:
    return mounts(target, "-t", "tmpfs", "-o", f"size={size},mode=1777", "imagekit-test")


def read_only_view(mounts: Callable[..., Path], source: Path, target: Path) -> Path:
    """A read-only bind mount of source (same filesystem, same st_dev: hard links still refused)."""
    mounts(target, "--bind", str(source))
    mount("-o", "remount,ro,bind", str(target))
    return target


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(recipe, cache dir) with the tiny recipe bootstrapped, unpacked and cached (one real mmdebstrap)."""
    base = tmp_path_factory.mktemp("tiny")
    recipe = base / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    cache = base / "cache"
    run_imagekit("build", recipe, "-o", base / "warm.img", "--no-lint", env={"IMAGEKIT_CACHE_DIR": str(cache)},
                 check=True)
    return recipe, cache


def debugfs(image: Path, request: str) -> str:
    return subprocess.run(["debugfs", "-R", request, image], capture_output=True, text=True).stdout


def assert_built(proc: subprocess.CompletedProcess[str], image: Path) -> None:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Type: regular" in debugfs(image, "stat /bin/busybox")
    subprocess.run(["e2fsck", "-fn", image], check=True, capture_output=True)
    assert sorted(p.name for p in image.parent.iterdir()) == [image.name, image.name + ".manifest.json"]


# --- item 4: staging across filesystems, from read-only and unwritable caches ---------------------

@pytest.mark.slow  # tiny_cache: a real mmdebstrap from the archive
@pytest.mark.network
def test_stage_onto_another_filesystem_copies(tiny_cache: tuple[Path, Path], mounts: Callable[..., Path],
                                              tmp_path: Path) -> None:
    """Output (and so the work dir) on a tmpfs, the cache on the root filesystem: cp -al cannot link."""
    recipe, cache = tiny_cache
    out = tmpfs(mounts, tmp_path / "tmpfs", "512m")
    proc = run_imagekit("build", recipe, "-o", out / "x.img", "--no-lint", env={"IMAGEKIT_CACHE_DIR": str(cache)})
    assert_built(proc, out / "x.img")
    assert "stage the bootstrap (copy)" in proc.stderr
    assert "(cached bootstrap; copied: cache on another filesystem)" in proc.stderr


@pytest.mark.slow  # tiny_cache: a real mmdebstrap from the archive
@pytest.mark.network
def test_stage_from_read_only_cache_copies(tiny_cache: tuple[Path, Path], mounts: Callable[..., Path],
                                           tmp_path: Path) -> None:
    """A read-only bind mount of a warm cache: same st_dev, but link(2) across mounts is EXDEV."""
    recipe, cache = tiny_cache
    view = read_only_view(mounts, cache, tmp_path / "ro-cache")
    assert os.stat(view).st_dev == os.stat(tmp_path).st_dev  # only the real link attempt can tell
    (tmp_path / "out").mkdir()
    proc = run_imagekit("build", recipe, "-o", tmp_path / "out/x.img", "--no-lint",
                        env={"IMAGEKIT_CACHE_DIR": str(view)})
    assert_built(proc, tmp_path / "out/x.img")
    assert "(cached bootstrap; copied: cache on another mount)" in proc.stderr
    assert "warning" not in proc.stderr  # nothing had to be written to the cache


@pytest.mark.slow  # tiny_cache: a real mmdebstrap from the archive
@pytest.mark.network
def test_empty_read_only_cache_warns_and_builds(tiny_cache: tuple[Path, Path], mounts: Callable[..., Path],
                                                tmp_path: Path) -> None:
    """Nothing cached and the cache cannot be written: a warning, a bootstrap in the work dir, a build."""
    recipe, _ = tiny_cache
    empty = tmp_path / "empty"
    empty.mkdir()
    view = read_only_view(mounts, empty, tmp_path / "ro-cache")
    (tmp_path / "out").mkdir()
    proc = run_imagekit("build", recipe, "-o", tmp_path / "out/x.img", "--no-lint",
                        env={"IMAGEKIT_CACHE_DIR": str(view)})
    assert_built(proc, tmp_path / "out/x.img")
    assert f"warning: bootstrap cache {view}/rootfs: cannot create it (Read-only file system)" in proc.stderr
    assert "==> bootstrap mmdebstrap" in proc.stderr and "(fresh bootstrap, not cached)" in proc.stderr
    assert list(empty.iterdir()) == []


def _as_nobody(argv: list[str], home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {"PATH": os.environ["PATH"], "HOME": str(home), "PYTHONPATH": str(REPO), **env}
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                           str(REPO / ".venv/bin/python"), *argv], capture_output=True, text=True, env=full_env,
                          cwd=home)


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A scratch directory `nobody` can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="imagekit-staging-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def _seed_cache(recipe: Path, cache: Path) -> Path:
    """Put a bootstrap tarball where imagekit looks for the recipe's (a file owned by uid 1000 and a
    character device, which only fakeroot can give an unprivileged build); returns the tarball."""
    from imagekit.recipe.kernel_profiles import load_profile
    from imagekit.recipe.load import load_recipe
    from imagekit.rootfs.bootstrap import bootstrap_entry

    with pytest.MonkeyPatch.context() as mp:  # the worker's own IMAGEKIT_CACHE_DIR (if any) comes back after
        mp.setenv("IMAGEKIT_CACHE_DIR", str(cache))
        loaded = load_recipe(recipe)
        tarball = bootstrap_entry(loaded, load_profile(loaded.kernel.profile, recipe_path=loaded.path)).tarball
    tree = make_small_tree(cache.parent / "seed-tree")
    (tree / "etc/owned-by-1000").write_text("x\n")

    def owner(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid, info.gid = (1000, 1000) if info.name.endswith("etc/owned-by-1000") else (0, 0)
        return info

    tarball.parent.mkdir(parents=True)
    with tarfile.open(tarball, "w") as tar:
        tar.add(tree, arcname=".", filter=owner)
        console = tarfile.TarInfo("./dev/console")
        console.type, console.devmajor, console.devminor, console.mode = tarfile.CHRTYPE, 5, 1, 0o600
        tar.addfile(console)
    return tarball


@needs_setpriv
@pytest.mark.slow  # a build as another user through setpriv: ~7 s (the fast loop: README, Tests)
def test_rootless_copy_fallback_keeps_fakeroot_state(open_tmp: Path, mounts: Callable[..., Path]) -> None:
    """As `nobody`: the cached tree (unpacked under fakeroot) is copied onto a tmpfs, its fakeroot state
    replayed, and the image still holds root-owned files, uid 1000's file and the device node."""
    work = open_tmp / "user"
    work.mkdir()
    recipe = work / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    _seed_cache(recipe, work / "cache")
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", work], check=True)
    out = tmpfs(mounts, open_tmp / "tmpfs", "256m")
    proc = _as_nobody(["-m", "imagekit", "build", str(recipe), "-o", str(out / "x.img"), "--no-lint"], work,
                      IMAGEKIT_CACHE_DIR=str(work / "cache"), IMAGEKIT_ACCEL="tcg")
    assert proc.returncode == 0, proc.stderr
    assert "(cached bootstrap; copied: cache on another filesystem)" in proc.stderr
    image = out / "x.img"
    assert image.stat().st_uid == NOBODY
    assert "Type: character special" in debugfs(image, "stat /dev/console")
    assert "Device major/minor number: 05:01" in debugfs(image, "stat /dev/console")
    assert "User:  1000   Group:  1000" in debugfs(image, "stat /etc/owned-by-1000")
    assert "User:     0   Group:     0" in debugfs(image, "stat /bin/busybox")
    subprocess.run(["e2fsck", "-fn", image], check=True, capture_output=True)
    assert sorted(p.name for p in out.iterdir()) == ["x.img", "x.img.manifest.json"]


@needs_setpriv
def test_unwritable_kvm_probe_cache_warns_once(open_tmp: Path) -> None:
    """The KVM-probe cache is best-effort: a cache dir the user cannot write costs a warning, once."""
    cache = open_tmp / "root-owned-cache"
    cache.mkdir(mode=0o755)
    code = ("from imagekit.util.accel import detect\n"
            "print(detect().name, detect().name)\n")
    proc = _as_nobody(["-c", code], open_tmp, IMAGEKIT_CACHE_DIR=str(cache))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["tcg", "tcg"]  # nobody is not in group kvm: /dev/kvm is not accessible
    assert proc.stderr.count("warning: cannot cache the KVM probe") == 1, proc.stderr
    assert "Traceback" not in proc.stderr and list(cache.iterdir()) == []


# --- item 5: concurrent builds on a cold cache -----------------------------------------------------

@pytest.mark.slow
@pytest.mark.network
def test_concurrent_cold_cache_builds_bootstrap_once(tmp_path: Path) -> None:
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    cache = tmp_path / "cache"
    env = {**os.environ, "IMAGEKIT_CACHE_DIR": str(cache), "SOURCE_DATE_EPOCH": "1700000000"}
    procs = [subprocess.Popen([*IMAGEKIT, "build", str(recipe), "-o", str(tmp_path / f"out{i}/tiny.img"), "--no-lint"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
             for i in (1, 2)]
    results = [(p.wait(timeout=900), *p.communicate()) for p in procs]
    for rc, _, err in results:
        assert rc == 0, err
        assert "Traceback" not in err
    errs = "\n".join(err for _, _, err in results)
    assert errs.count("==> bootstrap mmdebstrap") == 1, errs
    assert errs.count("==> wait for another imagekit bootstrapping the same rootfs (pid ") == 1, errs
    assert "(cached bootstrap, made by another imagekit)" in errs
    entries = sorted(p.name for p in (cache / "rootfs").iterdir())
    assert [e.rsplit(".tar", 1)[1] for e in entries] == ["", ".lock", ".tree"], entries  # no partials
    one, two = (tmp_path / f"out{i}/tiny.img" for i in (1, 2))
    assert one.read_bytes() == two.read_bytes()


@pytest.mark.slow
@pytest.mark.network
def test_killed_lock_holder_frees_the_entry(tmp_path: Path) -> None:
    """The bootstrapping build is SIGKILLed (its whole process group, mmdebstrap too): the kernel drops
    its flock, the waiting build takes over (removing any partials of the dead one) and bootstraps itself."""
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY_RECIPE)
    cache = tmp_path / "cache"
    env = {**os.environ, "IMAGEKIT_CACHE_DIR": str(cache)}

    def build(name: str) -> subprocess.Popen[str]:
        return subprocess.Popen([*IMAGEKIT, "build", str(recipe), "-o", str(tmp_path / name), "--no-lint"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
                                start_new_session=True)

    first = build("first.img")
    assert first.stderr is not None
    assert first.stderr.readline().startswith("==> bootstrap mmdebstrap")  # it holds the lock now
    second = build("second.img")
    time.sleep(2)  # the second is waiting
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=60)
    _, err = second.communicate(timeout=600)
    assert second.returncode == 0, err
    assert f"==> wait for another imagekit bootstrapping the same rootfs (pid {first.pid})" in err
    assert "==> bootstrap mmdebstrap" in err and "(fresh bootstrap)" in err
    entries = sorted(p.name for p in (cache / "rootfs").iterdir())
    assert [e.rsplit(".tar", 1)[1] for e in entries] == ["", ".lock", ".tree"], entries


def test_lock_wait_is_bounded_and_names_the_holder(tmp_path: Path) -> None:
    """A live holder that never lets go: the waiter gives up after its bound, naming the lock and the pid."""
    lock = tmp_path / "entry.tar.lock"
    code = ("import sys, contextlib\nfrom pathlib import Path\nfrom imagekit.util.cache import locked\n"
            "from imagekit.util.errors import ImagekitError\n"
            "waiting = lambda who: (print('waiting for', who), contextlib.nullcontext())[1]\n"
            "try:\n    with locked(Path(sys.argv[1]), waiting, wait=1.0):\n        print('held')\n"
            "except ImagekitError as exc:\n    print(exc.message)\n")
    holder = subprocess.Popen([sys.executable, "-c", code.replace("print('held')", "print('held', flush=True); "
                                                                   "import time; time.sleep(30)"), str(lock)],
                              stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        proc = subprocess.run([sys.executable, "-c", code, str(lock)], capture_output=True, text=True, cwd=REPO,
                              timeout=60)
    finally:
        holder.kill()
        holder.wait()
    assert proc.stdout.splitlines() == [f"waiting for pid {holder.pid}",
                                        f"gave up after 1s waiting for {lock} (held by pid {holder.pid})"]


@needs_setpriv
def test_lock_file_of_another_user_still_locks(open_tmp: Path) -> None:
    """A shared cache: root made the lock file (0644); `nobody` cannot write it but still takes the flock."""
    lock = open_tmp / "entry.tar.lock"
    lock.write_text("")
    code = ("import sys, contextlib\nfrom pathlib import Path\nfrom imagekit.util.cache import locked\n"
            "with locked(Path(sys.argv[1]), lambda who: contextlib.nullcontext()):\n    print('held')\n")
    proc = _as_nobody(["-c", code, str(lock)], open_tmp)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "held\n"


# --- item 11: the host's disk is full ------------------------------------------------------------

@pytest.mark.parametrize("size", ["20m", "40m"], ids=["staging-fails", "image-fails"])
def test_host_disk_full_is_not_the_recipes_size(small_recipe: Callable[..., Path], mounts: Callable[..., Path],
                                                tmp_path: Path, size: str) -> None:
    """A 256 MiB image of a ~34 MiB tree fits the recipe, not a small tmpfs: 20m fills up while staging
    (the kernel copy), 40m in mke2fs writing the image. Exit 1, the host's disk named, nothing left."""
    out = tmpfs(mounts, tmp_path / "tmpfs", size)
    proc = run_imagekit("build", small_recipe(), "-o", out / "small.img", "--no-lint")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "does not fit" not in proc.stderr and ": size:" not in proc.stderr
    total = shutil.disk_usage(out).total >> 20
    assert (f"error: the host's disk is full: No space left on device while building small.img "
            f"({out}: {total} MiB free of {total} MiB once the partial build is removed)") in proc.stderr
    assert list(out.iterdir()) == []


@pytest.mark.slow  # tiny_cache: a real mmdebstrap from the archive
@pytest.mark.network
def test_full_cache_disk_names_the_cache(tiny_cache: tuple[Path, Path], mounts: Callable[..., Path],
                                         tmp_path: Path) -> None:
    """The cache's filesystem fills up unpacking the cached tarball: the cache is named, no partial kept."""
    recipe, warm = tiny_cache
    cache = tmpfs(mounts, tmp_path / "cache", "24m")
    tarball = next((warm / "rootfs").glob("*.tar"))
    (cache / "rootfs").mkdir()
    shutil.copyfile(tarball, cache / "rootfs" / tarball.name)
    (tmp_path / "out").mkdir()
    proc = run_imagekit("build", recipe, "-o", tmp_path / "out/x.img", "--no-lint",
                        env={"IMAGEKIT_CACHE_DIR": str(cache)})
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert (f"error: the host's disk is full: No space left on device while unpacking {tarball.name} into "
            f"the cache ({cache}/rootfs: ") in proc.stderr
    assert sorted(p.name for p in (cache / "rootfs").iterdir()) == [tarball.name, tarball.name + ".lock"]
    assert list((tmp_path / "out").iterdir()) == []
