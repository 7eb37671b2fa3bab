"""Paths in a staged tree, resolved as a chroot at the tree would: nothing imagekit writes leaves it.

A staged tree is a host directory that holds the image's root. Its symlinks are the image's, so they
are resolved with the tree as `/`: the image's `/var/run -> /run` means tree/run (never the host's
/run), and `..` stops at the tree's root as it does in a chroot. Every write into a tree (configure,
volumes, the kernel copy) goes through this module:

    write_in_tree(tree.path, "/etc/hostname", b"small\\n")      # tree/etc/hostname, a new inode
    copy_into_tree(tree.path, "/var/run/x", src, 0o644)          # tree/run/x when /var/run -> /run
    make_directory_in_tree(tree.path, "/boot/efi")               # each missing directory made, 0755

Written files replace what has their name: the final component is not followed, even when it is a
symlink (as dpkg and install(1) do, and as `mv` would). Following it, as `cp` does, would put the
content wherever the link points (Debian's /etc/resolv.conf -> /run/...: a tmpfs hides it at boot),
not at the path the recipe names. Directories on the way are followed, as any path lookup in the
image would. A new file is made with O_EXCL under a random name beside its target and renamed over
it, so a symlink planted at the temp name is never written through, and a hard link into the
bootstrap cache is never changed in place. The tree is ours (staged by us), so resolving first and
then writing is enough: no other process races us for it.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from imagekit.util.errors import UsageError

MAX_SYMLINKS = 40  # as Linux's path lookup (ELOOP beyond it)


class TreePathError(UsageError):
    """A path in the image that cannot be resolved, or written, inside its tree."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"the image's {path}: {reason}")
        self.path = path
        self.reason = reason


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def resolve_in_tree(root: Path, path: str, *, follow_final: bool = True) -> Path:
    """The host path of the image's `path`, its symlinks resolved with `root` as `/`.

    Components that do not exist yet are kept as named (a writer makes them); `follow_final=False`
    leaves a final symlink as it is (a writer replaces it).
    """
    if "\0" in path:
        raise TreePathError(repr(path), "a NUL byte in the path")
    todo = _parts(path)
    done: list[str] = []
    links = 0
    while todo:
        name = todo.pop(0)
        if name == "..":
            if done:
                done.pop()  # the tree's root is its own parent, as in a chroot
            continue
        here = root.joinpath(*done, name)
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            done.append(name)  # made by the writer, with everything after it
            continue
        except OSError as exc:
            raise TreePathError(path, exc.strerror or str(exc)) from None
        if stat.S_ISLNK(st.st_mode) and (todo or follow_final):
            links += 1
            if links > MAX_SYMLINKS:
                raise TreePathError(path, f"too many levels of symbolic links (more than {MAX_SYMLINKS})")
            target = os.readlink(here)
            if target.startswith("/"):
                done = []  # an absolute link starts again at the tree's root
            todo = _parts(target) + todo
            continue
        if todo and not stat.S_ISDIR(st.st_mode):
            raise TreePathError(path, f"/{'/'.join([*done, name])} is not a directory in the image")
        done.append(name)
    return root.joinpath(*done)


def image_path(root: Path, host: Path) -> str:
    """The image's path of a host path inside the tree: tree/run/x -> /run/x."""
    return "/" + host.relative_to(root).as_posix() if host != root else "/"


def _make_directories(root: Path, directory: Path, path: str) -> None:
    """Make each missing directory from root down to `directory` (already resolved: no symlinks on it)."""
    here = root
    for name in directory.relative_to(root).parts:
        here = here / name
        try:
            os.mkdir(here, 0o755)
            continue
        except FileExistsError:
            pass
        except OSError as exc:
            raise TreePathError(path, f"cannot make {image_path(root, here)}: {exc.strerror}") from None
        st = os.lstat(here)
        if not stat.S_ISDIR(st.st_mode):  # a symlink or a file appeared since it was resolved
            raise TreePathError(path, f"{image_path(root, here)} is not a directory in the image")


def make_directory_in_tree(root: Path, path: str) -> Path:
    """The image's directory `path` (made, with its parents, where missing); its host path."""
    resolved = resolve_in_tree(root, path)
    _make_directories(root, resolved, path)
    return resolved


def _target(root: Path, path: str) -> Path:
    dest = resolve_in_tree(root, path, follow_final=False)
    if dest == root:
        raise TreePathError(path, "is the image's root directory")
    followed = resolve_in_tree(root, path)  # a link to a directory is not replaced by a file
    if os.path.isdir(followed) and not os.path.islink(followed):
        raise TreePathError(path, f"{image_path(root, followed)} is a directory in the image")
    _make_directories(root, dest.parent, path)
    return dest


def _replace(dest: Path, path: str, fill: Callable[[BinaryIO], object], mode: int) -> None:
    """Write a temp file beside dest (O_EXCL, never through a link) with `fill(file)`, rename it over dest."""
    try:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name[:200]}.", suffix=".imagekit")
    except OSError as exc:
        raise TreePathError(path, f"cannot write in {dest.parent.name or '/'}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, dest)
    except BaseException:
        os.unlink(tmp)
        raise


def write_in_tree(root: Path, path: str, data: bytes, mode: int = 0o644) -> Path:
    """Replace the image's file `path` with `data` (a new inode); its host path."""
    dest = _target(root, path)
    _replace(dest, path, lambda f: f.write(data), mode)
    return dest


def copy_into_tree(root: Path, path: str, src: Path, mode: int) -> Path:
    """Replace the image's file `path` with a copy of the host file `src` (a new inode); its host path."""
    dest = _target(root, path)
    with open(src, "rb") as source:
        _replace(dest, path, lambda f: shutil.copyfileobj(source, f, 1 << 20), mode)
    return dest


def read_in_tree(root: Path, path: str) -> str | None:
    """The image's text file `path` (symlinks resolved in the tree), or None when it is not a file."""
    data = read_bytes_in_tree(root, path)
    return None if data is None else data.decode(errors="replace")


def read_bytes_in_tree(root: Path, path: str) -> bytes | None:
    """The image's file `path` (symlinks resolved in the tree), or None when it is not a file."""
    resolved = resolve_in_tree(root, path)
    try:
        fd = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO never blocks
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EISDIR):
            return None
        raise TreePathError(path, exc.strerror or str(exc)) from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        return f.read()


def is_file_in_tree(root: Path, path: str) -> bool:
    """Whether the image's `path` is a regular file (symlinks resolved in the tree)."""
    try:
        resolved = resolve_in_tree(root, path)
    except TreePathError:
        return False
    return stat.S_ISREG(os.lstat(resolved).st_mode) if os.path.lexists(resolved) else False
