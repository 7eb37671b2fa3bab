"""Stage 2: the root filesystem tree, from a bootstrap (cached), a tarball or a directory.

A bootstrap (mmdebstrap, or debootstrap as root) writes a tarball into the cache under a key hashed
from everything that decides its contents, so a rebuild with unchanged inputs never bootstraps again.
Every source then lands as a staging tree the image stage populates filesystems from.

Rootless: when imagekit does not run as root, ownership, modes and device nodes are recorded by
fakeroot in a state file (`Tree.fakeroot_state`) that the mkfs step replays, so the image holds
root-owned files without imagekit ever being root. mmdebstrap's unshare mode bootstraps as a user.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from imagekit.cache import cache_dir, key_of
from imagekit.errors import RecipeError, UsageError
from imagekit.kernels import KernelProfile
from imagekit.progress import Progress
from imagekit.recipe import Arch, Bootstrap, Directory, Recipe, Tarball
from imagekit.run import Arg, run

BOOTSTRAP_FORMAT = 1  # bump when the way imagekit bootstraps changes what lands in the tarball
DEBIAN_ARCH = {Arch.X86_64: "amd64", Arch.I386: "i386"}


@dataclass(frozen=True)
class Tree:
    """A staging tree on disk; `fakeroot_state` is set when ownership is faked (rootless builds)."""

    path: Path
    fakeroot_state: Path | None = None

    def run(self, argv: Sequence[Arg], **kw: object) -> None:
        """Run a command that reads or changes the tree, under fakeroot when ownership is faked."""
        if self.fakeroot_state is None:
            run(argv, **kw)  # type: ignore[arg-type]
            return
        state = os.fspath(self.fakeroot_state)
        run(["fakeroot", "-i", state, "-s", state, "--", *argv], **kw)  # type: ignore[arg-type]


def is_root() -> bool:
    return os.geteuid() == 0


def bootstrap_packages(recipe: Recipe, profile: KernelProfile) -> list[str]:
    assert isinstance(recipe.rootfs, Bootstrap)
    return sorted({*recipe.rootfs.packages, *recipe.packages, *profile.packages})


def bootstrap_key(recipe: Recipe, profile: KernelProfile) -> str:
    src = recipe.rootfs
    assert isinstance(src, Bootstrap)
    return key_of({
        "format": BOOTSTRAP_FORMAT, "tool": src.tool, "suite": src.suite, "variant": src.variant,
        "mirror": src.source_url, "components": list(src.components), "arch": recipe.arch.value,
        "packages": bootstrap_packages(recipe, profile),
    })


def _mmdebstrap(src: Bootstrap, arch: str, packages: list[str], out: Path) -> None:
    argv: list[Arg] = ["mmdebstrap", f"--variant={src.variant}", f"--architectures={arch}",
                       f"--components={','.join(src.components)}", "--format=tar"]
    if packages:
        argv.append(f"--include={','.join(packages)}")
    if not is_root():
        argv.append("--mode=unshare")
    # Drop what must not ship in an image: apt lists, the host's resolv.conf, a machine-id.
    argv += ["--aptopt=Acquire::Languages \"none\"",
             "--customize-hook=rm -f \"$1\"/etc/resolv.conf; : > \"$1\"/etc/machine-id",
             # `--` ends the options (Getopt::Long): a suite or mirror can never be read as one. The
             # recipe loader checks both as well (recipe.Bootstrap), which is what debootstrap relies on.
             "--", src.suite, out, src.source_url]
    run(argv)


def _debootstrap(src: Bootstrap, arch: str, packages: list[str], out: Path) -> None:
    if not is_root():
        raise UsageError("rootfs.tool: debootstrap needs root; use tool = \"mmdebstrap\" (rootless)")
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".debootstrap-") as tmp:
        argv: list[Arg] = ["debootstrap", f"--variant={src.variant}", f"--arch={arch}",
                           f"--components={','.join(src.components)}"]
        if packages:
            argv.append(f"--include={','.join(packages)}")
        # No `--` here: debootstrap's option loop (a shell `case`) rejects it as "unrecognized or invalid
        # option". The loader's checks of suite and mirror (recipe.Bootstrap: a codename, a URL) carry it.
        run([*argv, src.suite, tmp, src.source_url])
        Path(tmp, "etc/machine-id").write_text("")
        run(["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-C", tmp, "-cf", out, "."])


def bootstrap_tarball(recipe: Recipe, profile: KernelProfile, progress: Progress) -> tuple[Path, bool]:
    """The cached tarball for the recipe's bootstrap; (path, True) when it came from the cache."""
    src = recipe.rootfs
    assert isinstance(src, Bootstrap)
    cached = cache_dir() / "rootfs" / f"{src.suite}-{bootstrap_key(recipe, profile)}.tar"
    if cached.is_file():
        return cached, True
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(f".{cached.name}.{os.getpid()}.partial")
    packages = bootstrap_packages(recipe, profile)
    arch = DEBIAN_ARCH[recipe.arch]
    try:
        with progress.stage("bootstrap", f"{src.tool} {src.suite} ({len(packages)} packages)"):
            if src.tool == "mmdebstrap":
                _mmdebstrap(src, arch, packages, partial)
            else:
                _debootstrap(src, arch, packages, partial)
        partial.replace(cached)
    finally:
        partial.unlink(missing_ok=True)
    return cached, False


def _extract(tarball: Path, dest: Path, state: Path | None) -> None:
    argv: list[Arg] = ["tar", "--numeric-owner", "-xpf", tarball, "-C", dest]
    if state is None:
        argv[1:1] = ["--xattrs", "--xattrs-include=*"]
        run(argv)
    else:
        run(["fakeroot", "-s", state, "--", *argv])


def unpacked_tree(tarball: Path, progress: Progress) -> Tree:
    """The cached tarball unpacked once, beside it (`NAME.tree`, plus `NAME.tree.state` when rootless).

    Builds stage it with hard links (`cp -al`), which takes a fraction of unpacking; nothing in a
    build writes to a staged file in place (files are replaced, see configure._write), so the
    cached tree never changes.
    """
    tree_dir = tarball.with_name(tarball.name + ".tree")
    state = None if is_root() else tarball.with_name(tarball.name + ".tree.state")
    if tree_dir.is_dir() and (state is None or state.is_file()):
        return Tree(tree_dir, state)
    partial = tarball.with_name(f".{tarball.name}.tree.{os.getpid()}.partial")
    partial_state = None if state is None else partial.with_name(partial.name + ".state")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        with progress.stage("rootfs", f"unpack {tarball.name} into the cache"):
            if partial_state is not None:
                partial_state.touch()
            _extract(tarball, partial, partial_state)
        if partial_state is not None and state is not None:
            partial_state.replace(state)
        partial.replace(tree_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        if partial_state is not None:
            partial_state.unlink(missing_ok=True)
    return Tree(tree_dir, state)


def _link_tree(cached: Tree, dest: Path, state: Path | None) -> None:
    """Stage a cached tree by hard links; rootless, replay its fakeroot state and record the copy's."""
    argv: list[Arg] = ["cp", "-al", f"{cached.path}/.", dest]
    if state is None or cached.fakeroot_state is None:
        run(argv)
    else:
        run(["fakeroot", "-i", cached.fakeroot_state, "-s", state, "--", *argv])


def _copy_directory(src: Path, dest: Path, state: Path | None) -> None:
    argv: list[Arg] = ["cp", "-a", "--reflink=auto", f"{src}/.", dest]
    if state is None:
        run(argv)
    else:
        run(["fakeroot", "-s", state, "--", *argv])


def prepare_rootfs(recipe: Recipe, profile: KernelProfile, workdir: Path, progress: Progress) -> Tree:
    """Stage the recipe's root filesystem under workdir/root."""
    dest = workdir / "root"
    dest.mkdir()
    state = None if is_root() else workdir / "fakeroot.state"
    if state is not None:
        state.touch()
    src = recipe.rootfs
    if isinstance(src, Bootstrap):
        if shutil.which(src.tool) is None:
            raise UsageError(f"rootfs.tool: {src.tool} is not installed", hint="run scripts/setup")
        tarball, cached = bootstrap_tarball(recipe, profile, progress)
        unpacked = unpacked_tree(tarball, progress)
        with progress.stage("rootfs", "stage the bootstrap (hard links)") as st:
            st.set_note("cached bootstrap" if cached else "fresh bootstrap")
            _link_tree(unpacked, dest, state)
    elif isinstance(src, Tarball):
        path = src.path if src.path.is_absolute() else recipe.directory / src.path
        if not path.is_file():
            raise RecipeError(recipe.path, "rootfs.path", f"no such tarball: {path}")
        with progress.stage("rootfs", f"unpack {path.name}"):
            _extract(path, dest, state)
    elif isinstance(src, Directory):
        path = src.path if src.path.is_absolute() else recipe.directory / src.path
        if not path.is_dir():
            raise RecipeError(recipe.path, "rootfs.path", f"no such directory: {path}")
        with progress.stage("rootfs", f"copy {path}"):
            _copy_directory(path, dest, state)
    return Tree(dest, state)
