"""Stage 2: the root filesystem tree, from a bootstrap (cached), a tarball or a directory.

A bootstrap (mmdebstrap, or debootstrap as root) writes a tarball into the cache under a key hashed
from everything that decides its contents, so a rebuild with unchanged inputs never bootstraps again.
Every source then lands as a staging tree the image stage populates filesystems from.

Rootless: when imagekit does not run as root, ownership, modes and device nodes are recorded by
fakeroot in a state file (`Tree.fakeroot_state`) that the mkfs step replays, so the image holds
root-owned files without imagekit ever being root. mmdebstrap's unshare mode bootstraps as a user.
"""

from __future__ import annotations

import errno
import os
import platform
import pwd
import shlex
import shutil
import stat
import tempfile
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from imagekit.recipe.arch import ARCHES, ArchSpec
from imagekit.recipe.kernel_profiles import KernelProfile
from imagekit.recipe.model import Bootstrap, Directory, Recipe, Tarball
from imagekit.util.cache import cache_dir, key_of, locked, unwritable
from imagekit.util.errors import RecipeError, UsageError
from imagekit.util.hostdisk import host_disk
from imagekit.util.progress import Progress
from imagekit.util.run import Arg, run, run_lines

BOOTSTRAP_FORMAT = 2  # bump when the way imagekit bootstraps changes what lands in the tarball
KERNEL_IMAGE = "linux-image-"  # Debian names its kernel image packages so (kernel_last)
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
FOREIGN_HINT = ("apt-get install qemu-user-static binfmt-support arch-test (scripts/setup does; qemu-user-static "
                "registers its binfmt_misc handlers on the host; `scripts/setup --foreign` also mounts binfmt_misc "
                "and enables the handler, saying so)")
DISK_HINT = "free space there (or point IMAGEKIT_CACHE_DIR, TMPDIR or -o elsewhere); the recipe's size is not at fault"


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
    # the profile's pv_packages for every layout: one bootstrap serves a recipe's PV and HVM images (the
    # layout is not in the cache key); an HVM image carries the tool unused
    return sorted({*recipe.rootfs.packages, *recipe.packages, *profile.packages, *profile.pv_packages})


def bootstrap_key(recipe: Recipe, profile: KernelProfile) -> str:
    src = recipe.rootfs
    assert isinstance(src, Bootstrap)
    return key_of({
        "format": BOOTSTRAP_FORMAT, "tool": src.tool, "suite": src.suite, "variant": src.variant,
        "mirror": src.source_url, "components": list(src.components), "arch": recipe.arch.value,
        "packages": bootstrap_packages(recipe, profile),
    })


class BootstrapPhases:
    """mmdebstrap's --verbose output as the bootstrap's phase: download, unpack and configure counts
    (apt's `Get:`, dpkg's `Unpacking` and `Setting up` lines), and its own `I:` steps between them."""

    def __init__(self, show: Callable[[str], None]) -> None:
        self.show = show
        self.counts = {"download": 0, "unpack": 0, "configure": 0}

    def line(self, text: str) -> None:
        if text.startswith("Get:"):
            self._count("download")
        elif text.startswith("Unpacking "):
            self._count("unpack")
        elif text.startswith("Setting up "):
            self._count("configure")
        elif text.startswith("I: ") and not text.startswith("I: running"):
            self.show(text[3:].rstrip(". "))

    def _count(self, what: str) -> None:
        self.counts[what] += 1
        self.show(", ".join(f"{k} {n}" for k, n in self.counts.items() if n))


def kernel_last(packages: Sequence[str]) -> tuple[list[str], list[str]]:
    """(the rest, the kernel images): Debian's `linux-image-*` packages (and their metapackages) go in after
    everything else, on their own. Installed together, the kernel's postinst makes the initrd
    (`update-initramfs -c`) and the initramfs-tools trigger then makes it again (`-u`) once the batch is set
    up: measured here ~19 s each for the amd64 cloud kernel (a test run beside it), 78 s each for arm64 under
    qemu-user. Installed last, every package with an initramfs hook (lvm2, udev, ...) is already set up, the
    trigger has run (with no kernel: nothing to do), and the one initrd is made with every hook in place."""
    kernels = [p for p in packages if p.startswith(KERNEL_IMAGE)]
    return [p for p in packages if p not in kernels], kernels


def _mmdebstrap(src: Bootstrap, arch: str, packages: list[str], out: Path,
                show: Callable[[str], None] | None = None) -> None:
    argv: list[Arg] = ["mmdebstrap", f"--variant={src.variant}", f"--architectures={arch}",
                       f"--components={','.join(src.components)}", "--format=tar"]
    first, kernels = kernel_last(packages)
    if first:
        argv.append(f"--include={','.join(first)}")
    if not is_root():
        argv.append("--mode=unshare")
    if kernels:  # inside the chroot (under qemu-user for a foreign arch), before the hook below drops resolv.conf
        argv.append("--customize-hook=chroot \"$1\" env DEBIAN_FRONTEND=noninteractive apt-get install --yes "
                    f"--no-install-recommends -- {' '.join(shlex.quote(k) for k in kernels)}")
    # Drop what must not ship in an image: apt lists, the host's resolv.conf, a machine-id.
    argv += ["--aptopt=Acquire::Languages \"none\"",
             "--customize-hook=rm -f \"$1\"/etc/resolv.conf; : > \"$1\"/etc/machine-id",
             # `--` ends the options (Getopt::Long): a suite or mirror can never be read as one. The
             # recipe loader checks both as well (recipe.Bootstrap), which is what debootstrap relies on.
             "--", src.suite, out, src.source_url]
    if show is None:
        run(argv)
        return
    argv.insert(1, "--verbose")  # apt's and dpkg's lines: what the progress display counts
    run_lines(argv, BootstrapPhases(show).line)


def check_foreign_host(spec: ArchSpec, binfmt_dir: Path = BINFMT_DIR) -> None:
    """A bootstrap for a foreign architecture runs its maintainer scripts under qemu-user through the
    kernel's binfmt_misc: UsageError naming the host piece that is missing (mmdebstrap's arch-test, binfmt_misc
    itself, the handler, its interpreter), before any download."""
    if not spec.foreign:
        return
    what = f"bootstrapping {spec.debian} on this {platform.machine()} host"
    if shutil.which("arch-test") is None:
        raise UsageError(f"{what}: arch-test is not installed (mmdebstrap needs it for a foreign architecture)",
                         hint=FOREIGN_HINT)
    if not (binfmt_dir / "status").is_file():
        raise UsageError(f"{what}: binfmt_misc is not mounted at {binfmt_dir}", hint=f"mount -t binfmt_misc "
                         f"binfmt_misc {binfmt_dir} (as root, once per boot; systemd does it), then {FOREIGN_HINT}")
    entry = binfmt_dir / spec.qemu_user
    try:
        lines = entry.read_text().splitlines()
    except OSError:
        raise UsageError(f"{what}: no {spec.qemu_user} handler registered in {binfmt_dir} (qemu-user runs the "
                         f"{spec.debian} maintainer scripts)", hint=FOREIGN_HINT) from None
    if "enabled" not in lines:
        raise UsageError(f"{what}: the binfmt_misc handler {entry} is disabled",
                         hint=f"update-binfmts --enable {spec.qemu_user} (as root)")
    interpreter = next((line.partition(" ")[2] for line in lines if line.startswith("interpreter ")), "")
    flags = next((line.partition(":")[2] for line in lines if line.startswith("flags:")), "")
    if "F" not in flags and not Path(interpreter).is_file():
        raise UsageError(f"{what}: {entry}'s interpreter {interpreter or '(none)'} is missing", hint=FOREIGN_HINT)


SUBID_FILES = (Path("/etc/subuid"), Path("/etc/subgid"))
SUBID_RANGE = 65536  # uids 0..65535 inside: base-passwd's nobody is 65534
UIDMAP_HINT = "apt-get install uidmap (as root; scripts/setup does)"


def check_rootless_host(files: Sequence[Path] = SUBID_FILES) -> None:
    """mmdebstrap's unshare mode (a bootstrap as a user) maps the chroot's root to a range of the user's
    subordinate ids through the setuid newuidmap/newgidmap: UsageError naming what is missing (the tools, the
    user's line in /etc/subuid or /etc/subgid, a range too small), before any download. adduser makes the
    lines for a new user; a user made otherwise may have none."""
    what = "a rootless bootstrap (mmdebstrap --mode=unshare)"
    for tool in ("newuidmap", "newgidmap"):
        if shutil.which(tool) is None:
            raise UsageError(f"{what}: {tool} is not installed", hint=UIDMAP_HINT)
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        raise UsageError(f"{what}: uid {os.getuid()} has no name in the passwd database (mmdebstrap looks up "
                         "the user's subordinate ids by name)") from None
    fix = (f"as root: usermod --add-subuids 100000-{100000 + SUBID_RANGE - 1} "
           f"--add-subgids 100000-{100000 + SUBID_RANGE - 1} {user}")
    for path in files:
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise UsageError(f"{what}: cannot read {path}: {exc.strerror}", hint=fix) from None
        counts = [fields[2] for fields in (line.split(":") for line in lines) if len(fields) == 3 and fields[0] == user]
        if not counts:
            raise UsageError(f"{what}: {path} has no range for {user}", hint=fix)
        if not counts[0].isdigit() or int(counts[0]) < SUBID_RANGE:
            raise UsageError(f"{what}: {path} gives {user} {counts[0]} ids; the chroot needs {SUBID_RANGE} "
                             "(its nobody is uid 65534)", hint=fix)


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


@dataclass(frozen=True)
class CacheEntry:
    """A recipe's bootstrap in the cache: NAME.tar, unpacked beside it as NAME.tar.tree (plus
    NAME.tar.tree.state when rootless), made under the lock NAME.tar.lock."""

    tarball: Path

    @property
    def tree(self) -> Path:
        return self.tarball.with_name(self.tarball.name + ".tree")

    @property
    def state(self) -> Path | None:
        return None if is_root() else self.tarball.with_name(self.tarball.name + ".tree.state")

    @property
    def lock(self) -> Path:
        return self.tarball.with_name(self.tarball.name + ".lock")

    def remove_partials(self) -> None:
        """Remove what a killed holder of the lock left (only a holder writes partials: call it holding it)."""
        for partial in self.tarball.parent.glob(f".{self.tarball.name}.*.partial*"):
            if partial.is_dir() and not partial.is_symlink():
                shutil.rmtree(partial, ignore_errors=True)
            else:
                partial.unlink(missing_ok=True)

    def unpacked(self) -> Tree | None:
        """The cached tree when it is complete (renamed into place with its fakeroot state)."""
        if self.tree.is_dir() and (self.state is None or self.state.is_file()):
            return Tree(self.tree, self.state)
        return None


def bootstrap_entry(recipe: Recipe, profile: KernelProfile) -> CacheEntry:
    src = recipe.rootfs
    assert isinstance(src, Bootstrap)
    return CacheEntry(cache_dir() / "rootfs" / f"{src.suite}-{bootstrap_key(recipe, profile)}.tar")


def bootstrap(recipe: Recipe, profile: KernelProfile, out: Path, progress: Progress) -> None:
    """Bootstrap the recipe's root filesystem into the tarball `out`, written under a temporary name beside it."""
    src = recipe.rootfs
    assert isinstance(src, Bootstrap)
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    packages = bootstrap_packages(recipe, profile)
    spec = ARCHES[recipe.arch]
    arch = spec.debian
    if spec.foreign and src.tool == "debootstrap":
        raise RecipeError(recipe.path, "rootfs.tool", f"debootstrap bootstraps {arch} on this host only in two "
                          "stages: use tool = \"mmdebstrap\" (qemu-user, rootless)")
    check_foreign_host(spec)
    if src.tool == "mmdebstrap" and not is_root():
        check_rootless_host()
    scratch = [out.parent, Path(tempfile.gettempdir())]  # mmdebstrap and debootstrap work in TMPDIR too
    try:
        with progress.stage("bootstrap", f"{src.tool} {src.suite} ({len(packages)} packages)") as stage, \
                host_disk(f"bootstrapping into {out.parent}", scratch, hint=DISK_HINT):
            if src.tool == "mmdebstrap":
                _mmdebstrap(src, arch, packages, partial, stage.phase if progress.mode == "tty" else None)
            else:
                _debootstrap(src, arch, packages, partial)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)


def _extract(tarball: Path, dest: Path, state: Path | None) -> None:
    argv: list[Arg] = ["tar", "--numeric-owner", "-xpf", tarball, "-C", dest]
    if state is None:
        argv[1:1] = ["--xattrs", "--xattrs-include=*"]
        run(argv)
    else:
        run(["fakeroot", "-s", state, "--", *argv])


def unpack_into_cache(entry: CacheEntry, progress: Progress) -> Tree:
    """The cached tarball unpacked once, beside it (`NAME.tree`, plus `NAME.tree.state` when rootless).

    Builds stage it with hard links (`cp -al`), which takes a fraction of unpacking; nothing in a
    build writes to a staged file in place (files are replaced, see configure._write), so the
    cached tree never changes. Called under the entry's lock: no other imagekit renames into place.
    """
    tarball, state = entry.tarball, entry.state
    partial = tarball.with_name(f".{tarball.name}.tree.{os.getpid()}.partial")
    partial_state = None if state is None else partial.with_name(partial.name + ".state")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        with progress.stage("rootfs", f"unpack {tarball.name} into the cache"), \
                host_disk(f"unpacking {tarball.name} into the cache", [tarball.parent], hint=DISK_HINT):
            partial.mkdir(parents=True)
            if partial_state is not None:
                partial_state.touch()
            _extract(tarball, partial, partial_state)
        if partial_state is not None and state is not None:
            partial_state.replace(state)
        partial.replace(entry.tree)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        if partial_state is not None:
            partial_state.unlink(missing_ok=True)
    return Tree(entry.tree, state)


def cached_tree(entry: CacheEntry, recipe: Recipe, profile: KernelProfile, progress: Progress) -> tuple[Tree, str]:
    """The entry's unpacked tree and how it came to be ('cached bootstrap', 'fresh bootstrap').

    A missing entry is made under its lock: of concurrent builds of the same bootstrap one
    bootstraps and unpacks, the others wait (a progress stage says so) and then reuse it.
    """
    ready = entry.unpacked()
    if ready is not None:
        return ready, "cached bootstrap"

    def waiting(holder: str) -> AbstractContextManager[object]:
        return progress.stage("wait", f"for another imagekit bootstrapping the same rootfs ({holder})")

    with locked(entry.lock, waiting):
        ready = entry.unpacked()
        if ready is not None:
            return ready, "cached bootstrap, made by another imagekit"
        entry.remove_partials()
        fresh = not entry.tarball.is_file()
        if fresh:
            bootstrap(recipe, profile, entry.tarball, progress)
        return unpack_into_cache(entry, progress), "fresh bootstrap" if fresh else "cached bootstrap"


def stage_uncached(entry: CacheEntry, recipe: Recipe, profile: KernelProfile, dest: Tree, problem: str,
                   progress: Progress) -> None:
    """No usable cache (read-only, not ours): bootstrap into the work dir, or unpack a cached tarball, into dest."""
    progress.warn(f"bootstrap cache {entry.tarball.parent}: {problem}; building without caching")
    tarball, note = entry.tarball, "cached bootstrap, read-only cache"
    if not tarball.is_file():
        tarball, note = dest.path.parent / "bootstrap.tar", "fresh bootstrap, not cached"
        bootstrap(recipe, profile, tarball, progress)
    with progress.stage("rootfs", f"unpack {tarball.name}") as st:
        st.set_note(note)
        _extract(tarball, dest.path, dest.fakeroot_state)
    if tarball != entry.tarball:
        tarball.unlink()


def _first_file(root: Path) -> Path | None:
    """A regular file in root (to try a hard link with)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            if stat.S_ISREG(path.lstat().st_mode):
                return path
    return None


LINK_REFUSED = {
    errno.EXDEV: "cache on another mount",
    errno.EPERM: "cache files owned by another user (fs.protected_hardlinks)",
    errno.EACCES: "cache files not accessible for hard links",
    errno.EROFS: "cache on a read-only filesystem",
}


def copy_reason(cached: Path, dest: Path) -> str | None:
    """Why the cached tree cannot be hard-linked into dest (so must be copied), or None when it can.

    Hard links need one filesystem (st_dev), one mount (a bind mount, read-only or not, has the
    same st_dev but refuses with EXDEV) and, rootless, files the user owns (fs.protected_hardlinks):
    after the st_dev check one real link of a cached file into dest's parent answers the rest.
    """
    if os.stat(cached).st_dev != os.stat(dest).st_dev:
        return "cache on another filesystem"
    sample = _first_file(cached)
    if sample is None:
        return None
    probe = dest.parent / f".link-probe.{os.getpid()}"
    try:
        os.link(sample, probe)
    except OSError as exc:
        return LINK_REFUSED.get(exc.errno or 0, f"hard links refused ({exc.strerror})")
    probe.unlink()
    return None


def _cp_tree(src: Path, dest: Path, state: Path | None, replay: Path | None, *how: str) -> None:
    """cp src's contents into dest; rootless, under fakeroot replaying `replay` (if any) and recording `state`."""
    argv: list[Arg] = ["cp", *how, f"{src}/.", dest]
    if state is None:
        run(argv)
    elif replay is None:
        run(["fakeroot", "-s", state, "--", *argv])
    else:
        run(["fakeroot", "-i", replay, "-s", state, "--", *argv])


def stage_tree(cached: Tree, dest: Tree, note: str, progress: Progress) -> None:
    """Stage a cached tree by hard links, or by a copy (reflinks where the filesystem has them) when
    links cannot work; rootless, the cached tree's fakeroot state is replayed and the copy's recorded."""
    reason = copy_reason(cached.path, dest.path)
    how = ("-al",) if reason is None else ("-a", "--reflink=auto")
    with progress.stage("rootfs", f"stage the bootstrap ({'hard links' if reason is None else 'copy'})") as st:
        st.set_note(note if reason is None else f"{note}; copied: {reason}")
        _cp_tree(cached.path, dest.path, dest.fakeroot_state, cached.fakeroot_state, *how)


def stage_bootstrap(recipe: Recipe, profile: KernelProfile, dest: Tree, progress: Progress) -> None:
    """The recipe's bootstrap staged into dest: from the cache (made first when missing), or without
    the cache when it cannot be written (a warning: the cache is an optimisation)."""
    src = recipe.rootfs
    assert isinstance(src, Bootstrap)
    if shutil.which(src.tool) is None:
        raise UsageError(f"rootfs.tool: {src.tool} is not installed", hint="run scripts/setup")
    entry = bootstrap_entry(recipe, profile)
    if entry.unpacked() is None:
        problem = unwritable(entry.tarball.parent)
        if problem is not None:
            stage_uncached(entry, recipe, profile, dest, problem, progress)
            return
    with host_disk(f"caching the bootstrap in {entry.tarball.parent}", [entry.tarball.parent], hint=DISK_HINT):
        cached, note = cached_tree(entry, recipe, profile, progress)  # the lock file, too, can meet a full disk
    stage_tree(cached, dest, note, progress)


def prepare_rootfs(recipe: Recipe, profile: KernelProfile, workdir: Path, progress: Progress) -> Tree:
    """Stage the recipe's root filesystem under workdir/root."""
    dest = workdir / "root"
    dest.mkdir()
    state = None if is_root() else workdir / "fakeroot.state"
    if state is not None:
        state.touch()
    src = recipe.rootfs
    if isinstance(src, Bootstrap):
        stage_bootstrap(recipe, profile, Tree(dest, state), progress)
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
            _cp_tree(path, dest, state, None, "-a", "--reflink=auto")
    return Tree(dest, state)
