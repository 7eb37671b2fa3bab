"""A boot's filesystems edited without an appliance: debugfs (e2fsprogs) on a raw copy of the image.

`ExtTree` answers the part of the libguestfs API that the probe, console and mounts edits use
(probe.py, hvm.py, mounts.py, metadata.py, direct.py), on ext2/3/4 filesystems inside a raw disk file:
the root filesystem at `/` and, for a separate /boot, the boot filesystem at `/boot`. Each filesystem is
reached through unix_io's `FILE?offset=BYTES` (a partition), so nothing is mounted and nothing needs root.
Every call is one debugfs run (a few milliseconds); debugfs reports a failed command on stderr only, so
any stderr line besides its banner is an error (`ExtFsError`, a RuntimeError as libguestfs raises).
Files written are root's (uid 0, gid 0), as libguestfs writes them; an existing file keeps its mode
and owner. Symlinks are followed as the guest would, within one filesystem.

`partitions` reads the MBR or GPT (image/disklabel.py's reader); `is_ext` the superblock magic; `sparse_copy`
copies a raw image's data extents only (SEEK_DATA/SEEK_HOLE, copy_file_range: in the kernel, holes stay holes).
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import tempfile
from dataclasses import dataclass
from pathlib import Path

from imagekit.image.disklabel import MBR_GPT_PROTECTIVE, read_head
from imagekit.image.disklabel import Partition as Partition  # the fast path names partitions as the label does
from imagekit.util.errors import CommandFailed
from imagekit.util.run import run

SECTOR = 512
EXT_MAGIC = b"\x53\xef"  # s_magic, at byte 56 of the superblock (which starts at byte 1024)
MAX_LINKS = 40  # as Linux's MAXSYMLINKS


class ExtFsError(RuntimeError):
    """A debugfs command failed (a RuntimeError, as libguestfs' errors are, so callers treat both alike)."""


def partitions(image: Path) -> tuple[str | None, list[Partition]]:
    """The partition table ("dos", "gpt" or None) and its partitions (image/disklabel.py reads them). An
    extended partition (logical ones inside) raises ExtFsError: the fast path does not follow EBR chains."""
    label = read_head(image)
    if not label.mbr:
        return None, []
    if MBR_GPT_PROTECTIVE in label.mbr_types:
        if not label.gpt_header:
            raise ExtFsError("a protective MBR without a GPT header")
        return "gpt", list(label.partitions)
    if label.extended:
        raise ExtFsError("an extended partition (logical partitions are not read without libguestfs)")
    return ("dos", list(label.partitions)) if label.partitions else (None, [])


def is_ext(image: Path, offset: int) -> bool:
    """An ext2/3/4 superblock at `offset`."""
    with open(image, "rb") as f:
        f.seek(offset + 1024 + 56)
        return f.read(2) == EXT_MAGIC


def is_lvm(image: Path, offset: int) -> bool:
    """An LVM physical volume label (LABELONE, in one of the first four sectors) at `offset`."""
    with open(image, "rb") as f:
        f.seek(offset)
        head = f.read(4 * SECTOR)
    return any(head[i * SECTOR:i * SECTOR + 8] == b"LABELONE" for i in range(4))


def sparse_copy(source: Path, dest: Path) -> int:
    """Copy a raw image's data extents only (holes stay holes); the bytes copied."""
    copied = 0
    with open(source, "rb") as src, open(dest, "wb") as out:
        size = os.fstat(src.fileno()).st_size
        out.truncate(size)
        offset = 0
        while offset < size:
            try:
                data = os.lseek(src.fileno(), offset, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            hole = os.lseek(src.fileno(), data, os.SEEK_HOLE)
            while data < hole:
                n = os.copy_file_range(src.fileno(), out.fileno(), hole - data, data, data)
                if n == 0:
                    break
                data += n
                copied += n
            offset = hole
    return copied


def _quote(path: str) -> str:
    if '"' in path or "\n" in path:
        raise ExtFsError(f"{path!r}: a path debugfs cannot quote")
    return f'"{path}"'


@dataclass(frozen=True)
class Stat:
    type: str  # "regular", "directory", "symlink", ...
    mode: int  # permission bits
    uid: int
    gid: int
    link: str | None  # a symlink's target


class ExtFs:
    """One ext2/3/4 filesystem in a raw disk file, at a byte offset."""

    def __init__(self, image: Path, offset: int = 0, writable: bool = False) -> None:
        self.spec = f"{image}?offset={offset}" if offset else str(image)
        self.writable = writable

    def debugfs(self, commands: list[str], write: bool = False) -> bytes:
        """Run debugfs commands; stdout (a single command's output alone). Any stderr line but the banner is
        an ExtFsError: debugfs exits 0 when a command fails."""
        if write and not self.writable:
            raise ExtFsError(f"{self.spec}: opened read-only")
        mode = ["-w"] if write else []
        with tempfile.NamedTemporaryFile("w", suffix=".debugfs") as script:
            script.write("\n".join(commands) + "\n")
            script.flush()
            # -R: one request, its output alone on stdout; -f echoes each command before its output
            request = ["-R", commands[0]] if len(commands) == 1 else ["-f", script.name]
            try:
                proc = run(["debugfs", *mode, *request, self.spec])
            except CommandFailed as exc:
                raise ExtFsError(str(exc)) from None
        errors = [line for line in proc.stderr.decode(errors="replace").splitlines()
                  if line.strip() and not line.startswith("debugfs ")]
        if errors:
            raise ExtFsError(f"debugfs on {self.spec}: {errors[0]}")
        return proc.stdout

    def stat(self, path: str) -> Stat | None:
        """The inode at path (intermediate symlinks followed by debugfs, the last one not); None if missing."""
        try:
            out = self.debugfs([f"stat {_quote(path)}"]).decode(errors="replace")
        except ExtFsError:
            return None
        fields: dict[str, str] = {}
        for line in out.splitlines():
            for key in ("Type", "Mode", "User", "Group"):
                if f"{key}:" in line:
                    fields[key] = line.split(f"{key}:", 1)[1].split()[0]
            if line.startswith("Fast link dest:"):
                fields["link"] = line.split(":", 1)[1].strip().strip('"')
        if "Type" not in fields:
            return None
        link = fields.get("link")
        if fields["Type"] == "symlink" and link is None:  # a slow symlink: its target is in a data block
            link = self.debugfs([f"cat {_quote(path)}"]).decode(errors="replace")
        return Stat(fields["Type"], int(fields.get("Mode", "0"), 8), int(fields.get("User", "0")),
                    int(fields.get("Group", "0")), link)

    def list_dir(self, path: str) -> list[tuple[str, int]]:
        """(name, mode with type bits) of a directory's entries, without . and .."""
        out = self.debugfs([f"ls -p {_quote(path)}"]).decode(errors="replace")
        entries = []
        for line in out.splitlines():
            parts = line.split("/")
            if len(parts) >= 7 and parts[5] not in (".", "..", ""):
                entries.append(("/".join(parts[5:-2]), int(parts[2], 8)))
        return entries


class ExtTree:
    """The guest's tree as libguestfs would mount it: root at /, a separate boot filesystem at /boot."""

    def __init__(self, root: ExtFs, boot: ExtFs | None = None) -> None:
        self.root = root
        self.boot = boot

    def _route(self, path: str) -> tuple[ExtFs, str]:
        path = posixpath.normpath("/" + path.lstrip("/"))
        if self.boot is not None and (path == "/boot" or path.startswith("/boot/")):
            return self.boot, path.removeprefix("/boot") or "/"
        return self.root, path

    def _resolve(self, path: str) -> tuple[str, Stat | None]:
        """The path with its last component's symlinks followed (the guest's view), and its inode."""
        path = posixpath.normpath("/" + path.lstrip("/"))
        for _ in range(MAX_LINKS):
            fs, inner = self._route(path)
            st = fs.stat(inner)
            if st is None or st.type != "symlink" or st.link is None:
                return path, st
            path = posixpath.normpath(posixpath.join(posixpath.dirname(path), st.link))
        raise ExtFsError(f"{path}: too many levels of symbolic links")

    # --- reads (libguestfs' names and behaviour) ---

    def realpath(self, path: str) -> str:
        resolved, st = self._resolve(path)
        if st is None:
            raise ExtFsError(f"realpath: {path}: No such file or directory")
        return resolved

    def exists(self, path: str) -> bool:
        return self._resolve(path)[1] is not None

    def is_file(self, path: str, followsymlinks: bool = False) -> bool:
        st = self._resolve(path)[1] if followsymlinks else self._stat(path)
        return st is not None and st.type == "regular"

    def is_dir(self, path: str) -> bool:
        st = self._resolve(path)[1]
        return st is not None and st.type == "directory"

    def is_symlink(self, path: str) -> bool:
        st = self._stat(path)
        return st is not None and st.type == "symlink"

    def _stat(self, path: str) -> Stat | None:
        fs, inner = self._route(path)
        return fs.stat(inner)

    def cat(self, path: str) -> str:
        return self.read_file(path).decode(errors="replace")

    def read_file(self, path: str) -> bytes:
        resolved, st = self._resolve(path)
        if st is None or st.type != "regular":
            raise ExtFsError(f"{path}: not a regular file")
        fs, inner = self._route(resolved)
        return fs.debugfs([f"cat {_quote(inner)}"])

    def download(self, path: str, dest: str) -> None:
        resolved, st = self._resolve(path)
        if st is None or st.type != "regular":
            raise ExtFsError(f"{path}: not a regular file")
        fs, inner = self._route(resolved)
        fs.debugfs([f"dump {_quote(inner)} {_quote(dest)}"])

    def glob_expand(self, pattern: str) -> list[str]:
        """Paths matching a pattern whose wildcards are in the last two components (what mounts.py asks)."""
        parent, dirs, names = pattern.rsplit("/", 2)
        found = []
        if not self.is_dir(parent):
            return []
        for name, mode in self._list(parent):
            if fnmatch.fnmatchcase(name, dirs) and (mode & 0o170000) == 0o040000:
                found += [f"{parent}/{name}/{n}" for n, _ in self._list(f"{parent}/{name}")
                          if fnmatch.fnmatchcase(n, names)]
        return sorted(found)

    def _list(self, path: str) -> list[tuple[str, int]]:
        resolved, _ = self._resolve(path)
        fs, inner = self._route(resolved)
        return fs.list_dir(inner)

    # --- writes ---

    def mkdir_p(self, path: str) -> None:
        path = posixpath.normpath("/" + path.lstrip("/"))
        if path == "/" or self.is_dir(path):
            return
        self.mkdir_p(posixpath.dirname(path))
        parent = self.realpath(posixpath.dirname(path))
        fs, inner = self._route(posixpath.join(parent, posixpath.basename(path)))
        fs.debugfs([f"mkdir {_quote(inner)}"], write=True)

    def write(self, path: str, content: bytes) -> None:
        """Create or replace a file; a replaced one keeps its mode and owner, a new one is root's, 0644."""
        resolved, st = self._resolve(path)
        fs, inner = self._route(resolved)
        mode, uid, gid = (st.mode, st.uid, st.gid) if st is not None else (0o644, 0, 0)
        with tempfile.NamedTemporaryFile(prefix="imagekit-extfs-") as local:
            local.write(content)
            local.flush()
            commands = [f"rm {_quote(inner)}"] if st is not None else []
            commands += [f"write {_quote(local.name)} {_quote(inner)}", *_owner(inner, 0o100000 | mode, uid, gid)]
            fs.debugfs(commands, write=True)

    def chmod(self, mode: int, path: str) -> None:
        resolved, st = self._resolve(path)
        if st is None:
            raise ExtFsError(f"chmod: {path}: No such file or directory")
        fs, inner = self._route(resolved)
        kind = {"regular": 0o100000, "directory": 0o040000}.get(st.type, 0o100000)
        fs.debugfs([f"sif {_quote(inner)} mode 0{kind | mode:o}"], write=True)

    def ln_sf(self, target: str, linkname: str) -> None:
        fs, inner = self._route(linkname)
        commands = [f"rm {_quote(inner)}"] if fs.stat(inner) is not None else []
        fs.debugfs([*commands, f"symlink {_quote(inner)} {_quote(target)}"], write=True)

    def mv(self, src: str, dest: str) -> None:
        """A rename within one filesystem: a new name for the inode, the old one removed (link counts kept)."""
        fs, inner_src = self._route(src)
        fs_dest, inner_dest = self._route(dest)
        if fs is not fs_dest:
            raise ExtFsError(f"mv {src} {dest}: across filesystems")
        fs.debugfs([f"ln {_quote(inner_src)} {_quote(inner_dest)}", f"unlink {_quote(inner_src)}"], write=True)


def _owner(path: str, mode: int, uid: int, gid: int) -> list[str]:
    return [f"sif {_quote(path)} mode 0{mode:o}", f"sif {_quote(path)} uid {uid}", f"sif {_quote(path)} gid {gid}"]
