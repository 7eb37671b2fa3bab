"""The `ImageView` of a raw image read in this process: no appliance, no root, no kernel.

The partition table comes from dissect.volume (MBR, GPT), each filesystem's type, label and UUID from
`blkid -p` (the probe libguestfs itself runs, so both readers name filesystems alike), and files from
dissect.extfs (ext2/3/4) and dissect.fat (FAT12/16/32): pure-Python parsers, so a hostile image can make
them fail but not corrupt memory. Paths are resolved here, component by component, as the kernel would
inside the filesystem (absolute symlinks from its root, `..` stops at the root, at most MAX_HOPS links:
more is a loop), and every read is bounded: a file's size is checked before its bytes are touched, a
directory over MAX_DIR bytes or a FAT cluster chain longer than its file is UnreadableFile.

What it cannot open is `NotNative` (LVM, qcow2, an extended MBR partition, a filesystem type without a
reader here): `open_view` then falls back to libguestfs (reader auto) or refuses (reader native).
"""

from __future__ import annotations

import itertools
import os
import shutil
import stat
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from imagekit.lint.view_types import (
    MAX_TEXT,
    Filesystem,
    Partition,
    UnreadableFile,
    fetch_whole,
    filesystem_named,
    filesystem_on,
)
from imagekit.util.errors import CommandFailed
from imagekit.util.run import run

DISK = "/dev/sda"  # the names libguestfs gives: findings read the same through either reader
MAX_HOPS = 40  # symbolic links followed in one path (Linux's limit; more is ELOOP)
MAX_LINK = 4096  # bytes of one symlink's target (PATH_MAX)
MAX_DIR = 64 * 1024 * 1024  # bytes of one directory read to list or search it
CHUNK = 1024 * 1024
READABLE = ("ext2", "ext3", "ext4", "vfat")  # filesystems read here
INERT = ("swap", "unknown")  # listed, never mounted (libguestfs cannot mount them either)

# tune2fs -l's names for the ext feature bits (lib/e2p/feature.c): (compat, incompat, ro_compat)
EXT_FEATURES: tuple[dict[int, str], dict[int, str], dict[int, str]] = (
    {0x1: "dir_prealloc", 0x2: "imagic_inodes", 0x4: "has_journal", 0x8: "ext_attr", 0x10: "resize_inode",
     0x20: "dir_index", 0x40: "lazy_bg", 0x200: "sparse_super2", 0x400: "fast_commit", 0x800: "stable_inodes",
     0x1000: "orphan_file"},
    {0x1: "compression", 0x2: "filetype", 0x4: "needs_recovery", 0x8: "journal_dev", 0x10: "meta_bg",
     0x40: "extent", 0x80: "64bit", 0x100: "mmp", 0x200: "flex_bg", 0x400: "ea_inode", 0x1000: "dirdata",
     0x2000: "metadata_csum_seed", 0x4000: "large_dir", 0x8000: "inline_data", 0x10000: "encrypt",
     0x20000: "casefold"},
    {0x1: "sparse_super", 0x2: "large_file", 0x8: "huge_file", 0x10: "uninit_bg", 0x20: "dir_nlink",
     0x40: "extra_isize", 0x100: "quota", 0x200: "bigalloc", 0x400: "metadata_csum", 0x1000: "read-only",
     0x2000: "project", 0x4000: "shared_blocks", 0x8000: "verity", 0x10000: "orphan_present"},
)


class NotNative(Exception):
    """The native reader cannot open this image (libguestfs can be asked instead)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Node:
    """One inode or directory entry, as the tree it came from describes it."""

    kind: str  # "file", "dir", "link" or "other"
    size: int
    handle: Any


class Tree:
    """One mounted filesystem: the few questions path resolution asks of it."""

    root: Node

    def children(self, node: Node) -> dict[str, Node]:
        raise NotImplementedError

    def lookup(self, node: Node, name: str) -> Node | None:
        return self.children(node).get(name)

    def stream(self, node: Node) -> BinaryIO:
        raise NotImplementedError


class ExtTree(Tree):
    def __init__(self, fh: Window) -> None:
        from dissect.extfs import ExtFS

        self.fs = ExtFS(fh)
        sb = self.fs.sb
        blocks = sb.s_blocks_count_lo + ((sb.s_blocks_count_hi << 32) if sb.s_feature_incompat & 0x80 else 0)
        if blocks * self.fs.block_size > fh.size:  # as the kernel refuses to mount it ("bad geometry")
            raise OSError(f"{blocks} blocks of {self.fs.block_size} bytes do not fit in {fh.size} bytes")
        self.root = self._node(self.fs.root)

    @staticmethod
    def _node(inode: Any) -> Node:
        mode = stat.S_IFMT(inode.inode.i_mode)
        kind = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "link"}.get(mode, "other")
        return Node(kind, int(inode.size), inode)

    def children(self, node: Node) -> dict[str, Node]:
        return {name: self._node(child) for name, child in node.handle.listdir().items()
                if name not in (".", "..")}

    def stream(self, node: Node) -> BinaryIO:
        handle: BinaryIO = node.handle.open()
        return handle


class FatTree(Tree):
    """FAT: no symlinks, names compared without case (as Linux' vfat looks them up)."""

    def __init__(self, fh: Window) -> None:
        from dissect.fat import FATFS

        self.fs = FATFS(fh)
        self.clusters = max(1, self.fs.total_sectors // max(1, self.fs.bpb.BPB_SecPerClus))
        self.root = self._node(self.fs.root)

    def _node(self, entry: Any) -> Node:
        return Node("dir" if entry.is_directory() else "file", 0 if entry.is_directory() else int(entry.size),
                    entry)

    def _bound_chain(self, entry: Any) -> None:
        """Walk the entry's cluster chain once, at most as many clusters as it can have (a loop in the
        FAT would be followed forever), and hand dissect the run list so it never walks it itself."""
        from dissect.fat.fat import FREE_CLUSTER, RootDirectory

        if (isinstance(entry, RootDirectory) and entry.cluster is None) or entry._runlist is not None:
            return
        if entry.cluster == FREE_CLUSTER:
            entry._runlist = []
            return
        most = -(-int(entry.size) // self.fs.cluster_size) if not entry.is_directory() else self.clusters
        most = min(most, MAX_DIR // self.fs.cluster_size) if entry.is_directory() else most
        chain = list(itertools.islice(self.fs.fat.chain(entry.cluster), most + 1))
        if len(chain) > most:
            raise OSError(f"a FAT cluster chain longer than {most} clusters (a loop?)")
        runs: list[tuple[int, int]] = []
        for cluster in chain:
            if runs and runs[-1][0] + runs[-1][1] == cluster - 2:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((cluster - 2, 1))
        entry._runlist = runs

    def children(self, node: Node) -> dict[str, Node]:
        self._bound_chain(node.handle)
        out = {}
        for child in node.handle.iterdir():
            if child.is_volume_id() or child.name in (".", ".."):
                continue
            out[display_name(child)] = self._node(child)
        return out

    def lookup(self, node: Node, name: str) -> Node | None:
        folded = name.upper()
        return next((c for n, c in self.children(node).items()
                     if folded in (n.upper(), c.handle.short_name.upper())), None)

    def stream(self, node: Node) -> BinaryIO:
        self._bound_chain(node.handle)
        handle: BinaryIO = node.handle.open()
        return handle


def display_name(entry: Any) -> str:
    """A FAT entry's name as Linux shows it: the long name, else the 8.3 name with the lower-case flags
    (DIR_NTRes 0x08: the base, 0x10: the extension) that mtools and Windows set."""
    if entry.ldirents:
        return str(entry.name)
    flags = int(entry.dirent.DIR_NTRes)
    base, dot, ext = str(entry.short_name).partition(".")
    base = base.lower() if flags & 0x08 else base
    ext = ext.lower() if flags & 0x10 else ext
    return base + dot + ext


def open_tree(fstype: str, fh: Window) -> Tree:
    return FatTree(fh) if fstype == "vfat" else ExtTree(fh)


def resolve(tree: Tree, path: str, device: str, follow: bool = True) -> Node | None:
    """The node at absolute `path` (symlinks followed, the last one too unless `follow` is False), None
    when a component is missing or not a directory; a loop (over MAX_HOPS links) is UnreadableFile."""
    stack = [tree.root]
    pending = [p for p in path.split("/") if p][::-1]
    hops = 0
    while pending:
        name = pending.pop()
        if name == ".":
            continue
        if name == "..":
            if len(stack) > 1:
                stack.pop()
            continue
        if stack[-1].kind != "dir":
            return None
        child = tree.lookup(stack[-1], name)
        if child is None:
            return None
        if child.kind == "link" and (pending or follow):
            hops += 1
            if hops > MAX_HOPS:
                raise UnreadableFile(device, path, "Too many levels of symbolic links")
            if child.size > MAX_LINK:
                raise UnreadableFile(device, path, f"a symbolic link of {child.size} bytes")
            target = tree.stream(child).read(MAX_LINK).decode(errors="surrogateescape")
            if target.startswith("/"):
                stack = [tree.root]
            pending.extend([p for p in target.split("/") if p][::-1])
            continue
        stack.append(child)
    return stack[-1]


def id_of(node: Node) -> int:
    """A directory's identity within its filesystem: its inode number (ext), its first cluster (FAT)."""
    handle = node.handle
    return int(getattr(handle, "inum", None) or getattr(handle, "cluster", None) or id(handle))


class Window:
    """A read-only window of `size` bytes at `offset` of an open file: one partition, as a file."""

    def __init__(self, fh: BinaryIO, offset: int, size: int) -> None:
        self.fh, self.offset, self.size, self.pos = fh, offset, size, 0

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos, os.SEEK_END: self.size}[whence]
        self.pos = max(0, base + pos)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, n: int = -1) -> bytes:
        left = max(0, self.size - self.pos)
        n = left if n is None or n < 0 else min(n, left)
        self.fh.seek(self.offset + self.pos)
        data = self.fh.read(n)
        self.pos += len(data)
        return data


def probe(image: Path, offset: int, size: int | None) -> dict[str, str]:
    """blkid's low-level probe of the bytes at `offset` (TYPE, LABEL, UUID...); {} when it finds nothing."""
    argv: list[str | os.PathLike[str]] = ["blkid", "-p", "-o", "export", "-O", str(offset)]
    if size is not None:
        argv += ["-S", str(size)]
    try:
        proc = run([*argv, image], check=False)
    except CommandFailed as exc:  # blkid missing
        raise NotNative(f"blkid could not run ({exc})") from None
    if proc.returncode not in (0, 2):  # 2: nothing recognised
        raise NotNative(f"blkid failed on the image (exit {proc.returncode})")
    out = {}
    for line in proc.stdout.decode(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out


MAX_GPT_ENTRIES = 256  # parted's tables have 128; dissect walks every entry the header claims


def refuse_odd_tables(fh: BinaryIO) -> None:
    """NotNative for what dissect would walk without bound or number unlike parted: extended MBR
    partitions (a chain of EBRs, maybe a loop), a GPT header claiming more than MAX_GPT_ENTRIES entries."""
    fh.seek(0)
    head = fh.read(1024)
    if len(head) < 1024:
        return
    types = {head[446 + 16 * i + 4] for i in range(4)}
    if types & {0x05, 0x0F, 0x85}:
        raise NotNative("an extended MBR partition")
    if head[512:520] == b"EFI PART":
        count, entry_size = struct.unpack_from("<II", head, 512 + 80)
        if count > MAX_GPT_ENTRIES or entry_size < 128 or entry_size > 4096:
            raise NotNative(f"a GPT of {count} entries of {entry_size} bytes")


def read_partitions(fh: BinaryIO, whole: dict[str, str]) -> tuple[str | None, tuple[Partition, ...]]:
    """("msdos" | "gpt" | None, the partitions) as parted (and so libguestfs) lists them; `whole` is blkid's
    probe of the whole disk: a filesystem there (a bare FAT has an MBR's 0x55AA too) means no table."""
    from dissect.volume.disk.schemes import GPT, MBR

    if "TYPE" in whole or whole.get("PTTYPE") not in ("gpt", "dos", "PMBR"):
        return None, ()
    refuse_odd_tables(fh)
    fh.seek(0)
    try:
        gpt = GPT(fh)
    except Exception:  # dissect raises what the bytes make it raise: no valid GPT then
        gpt = None
    if gpt is not None:
        parts = []
        for p in gpt.partitions:
            if p.raw is None or not hasattr(p.raw, "last_lba"):
                continue  # a hybrid MBR's own entries: parted shows the GPT
            start, end = p.raw.first_lba * 512, (p.raw.last_lba + 1) * 512
            parts.append(Partition(p.number, f"{DISK}{p.number}", start, end - start, None,
                                   str(p.type).upper(), str(p.guid).lower()))
        return "gpt", tuple(parts)
    fh.seek(0)
    try:
        mbr = MBR(fh)
    except Exception:  # not an MBR: a partitionless image (or none parted would read)
        return None, ()
    parts = []
    for p in mbr.partitions:
        if p.number > 4 or p.type in (0x05, 0x0F, 0x85):
            raise NotNative("an extended MBR partition")
        parts.append(Partition(p.number, f"{DISK}{p.number}", p.offset, p.size, int(p.type), None))
    return "msdos", tuple(sorted(parts, key=lambda q: q.number))


class NativeView:
    """`ImageView` of a raw image, read in this process (module docstring)."""

    reader = "native"

    def __init__(self, fh: BinaryIO, image: Path) -> None:
        self.fh = fh
        self.image = image
        self.disk = DISK
        self.disk_size = os.fstat(fh.fileno()).st_size
        self.whole = probe(image, 0, None)
        try:
            self.parttype, self.partitions = read_partitions(fh, self.whole)
        except RecursionError:
            raise NotNative("a partition table dissect cannot walk") from None
        self.filesystems = self._filesystems()
        self.lvm_pvs: tuple[str, ...] = ()
        self._trees: dict[str, Tree | None] = {}

    def _filesystems(self) -> tuple[Filesystem, ...]:
        spans = ([(self.disk, 0, None, None)] if self.parttype is None else
                 [(p.device, p.start, p.size, p.number) for p in self.partitions])
        found = []
        for device, start, size, number in spans:
            info = self.whole if size is None else probe(self.image, start, size)
            fstype = info.get("TYPE", "unknown")
            if fstype not in READABLE + INERT:
                raise NotNative(f"{device} holds {fstype}, which the native reader does not read")
            found.append(Filesystem(device, fstype, info.get("LABEL", ""), info.get("UUID", ""), number, False))
        return tuple(sorted(found, key=lambda f: f.device))

    # --- structure --------------------------------------------------------------------------

    def filesystem(self, device: str) -> Filesystem | None:
        return filesystem_named(self.filesystems, device)

    def filesystem_on_partition(self, number: int | None) -> Filesystem | None:
        return filesystem_on(self.filesystems, self.disk, self.parttype, number)

    def disk_bytes(self, offset: int, count: int) -> bytes:
        self.fh.seek(offset)
        return self.fh.read(count)

    def _window(self, device: str) -> Window:
        part = next((p for p in self.partitions if p.device == device), None)
        if part is None:
            return Window(self.fh, 0, self.disk_size)
        return Window(self.fh, part.start, max(0, min(part.size, self.disk_size - part.start)))

    def ext_features(self, device: str) -> set[str]:
        fs = self.filesystem(device)
        if fs is None or not fs.type.startswith("ext"):
            return set()
        tree = self._tree(device)
        if not isinstance(tree, ExtTree):
            return set()
        sb = tree.fs.sb
        words = (sb.s_feature_compat, sb.s_feature_incompat, sb.s_feature_ro_compat)
        return {name for names, word in zip(EXT_FEATURES, words, strict=True)
                for bit, name in names.items() if word & bit}

    # --- files -------------------------------------------------------------------------------

    def _tree(self, device: str) -> Tree | None:
        """The filesystem on `device`, opened once; None when it cannot be (as a mount that fails)."""
        if device not in self._trees:
            fs = self.filesystem(device)
            tree = None
            if fs is not None and fs.type in READABLE:
                try:
                    tree = open_tree(fs.type, self._window(device))
                except Exception:  # hostile bytes: dissect raises what they make it raise; not mountable
                    tree = None
            self._trees[device] = tree
        return self._trees[device]

    def _node(self, device: str, path: str, follow: bool = True) -> tuple[Tree, Node] | None:
        if not path.startswith("/"):
            raise UnreadableFile(device, path, "not an absolute path")
        if "\0" in path:
            raise UnreadableFile(device, path, "the path holds a NUL byte")
        tree = self._tree(device)
        if tree is None:
            return None
        try:
            node = resolve(tree, path, device, follow)
        except UnreadableFile:
            raise
        except Exception as exc:  # hostile bytes under a valid superblock
            raise UnreadableFile(device, path, f"cannot read it: {exc}") from None
        return None if node is None else (tree, node)

    def kind(self, device: str, path: str) -> str | None:
        """What is at `path` itself (a symlink is "link"): file, dir, link, other; None when nothing."""
        found = self._node(device, path, follow=False)
        return None if found is None else found[1].kind

    def walk(self, device: str, top: str = "/") -> Iterator[tuple[str, Node]]:
        """Every path under directory `top` (not `top` itself) and its node, symlinks not followed; a
        directory met twice (a hostile hard link to an ancestor) is not entered again."""
        found = self._node(device, top, follow=False)
        if found is None or found[1].kind != "dir":
            return
        tree, start = found
        seen: set[int] = set()
        pending = [(top.rstrip("/"), start)]
        while pending:
            base, node = pending.pop()
            if id_of(node) in seen:
                continue
            seen.add(id_of(node))
            if node.size > MAX_DIR:
                raise UnreadableFile(device, base or "/", f"a directory of {node.size} bytes")
            try:
                children = sorted(tree.children(node).items())
            except Exception as exc:  # hostile bytes under a valid superblock
                raise UnreadableFile(device, base or "/", f"cannot list it: {exc}") from None
            for name, child in children:
                path = f"{base}/{name}"
                yield path, child
                if child.kind == "dir":
                    pending.append((path, child))

    def copy_out(self, device: str, path: str, node: Node, out: BinaryIO) -> None:
        """The bytes of `node` (a regular file met by walk) into `out`."""
        tree = self._tree(device)
        if tree is None:
            raise UnreadableFile(device, path, "its filesystem cannot be read")
        self._copy(device, path, tree, node, out)

    def exists(self, device: str, path: str) -> bool:
        found = self._node(device, path)
        return found is not None and found[1].kind == "file"

    def is_dir(self, device: str, path: str) -> bool:
        found = self._node(device, path)
        return found is not None and found[1].kind == "dir"

    def size(self, device: str, path: str) -> int | None:
        found = self._node(device, path)
        return found[1].size if found is not None and found[1].kind == "file" else None

    def _bounded(self, device: str, path: str, limit: int) -> tuple[Tree, Node] | None:
        found = self._node(device, path)
        if found is None or found[1].kind != "file":
            return None
        if found[1].size > limit:
            raise UnreadableFile(device, path, f"{found[1].size} bytes, over the {limit} bytes lint reads of it")
        return found

    def _copy(self, device: str, path: str, tree: Tree, node: Node, out: BinaryIO) -> None:
        try:
            src = tree.stream(node)
            left = node.size
            while left > 0:
                chunk = src.read(min(CHUNK, left))
                if not chunk:
                    break
                out.write(chunk)
                left -= len(chunk)
        except Exception as exc:  # hostile bytes: a block map past the end, a bad extent tree...
            raise UnreadableFile(device, path, f"cannot read it: {exc}") from None

    def read(self, device: str, path: str, limit: int = MAX_TEXT) -> bytes | None:
        found = self._bounded(device, path, limit)
        if found is None:
            return None
        with tempfile.SpooledTemporaryFile(max_size=limit + 1) as buf:
            self._copy(device, path, *found, buf)  # type: ignore[arg-type]
            buf.seek(0)
            data: bytes = buf.read()
        return data

    def read_text(self, device: str, path: str, limit: int = MAX_TEXT) -> str | None:
        data = self.read(device, path, limit)
        return None if data is None else data.decode("utf-8", "replace")

    def ls(self, device: str, path: str) -> list[str]:
        found = self._node(device, path)
        if found is None or found[1].kind != "dir":
            return []
        tree, node = found
        if node.size > MAX_DIR:
            raise UnreadableFile(device, path, f"a directory of {node.size} bytes")
        try:
            return sorted(tree.children(node))
        except Exception as exc:
            raise UnreadableFile(device, path, f"cannot list it: {exc}") from None

    @contextmanager
    def fetched(self, device: str, path: str, limit: int) -> Iterator[Path | None]:
        """A larger file of at most `limit` bytes as a temp file (None when there is none), copied out in
        chunks after its size was checked; removed on the way out."""
        found = self._bounded(device, path, limit)
        if found is None:
            yield None
            return
        with tempfile.TemporaryDirectory(prefix="imagekit-lint-") as tmp:
            local = Path(tmp) / "file"
            with open(local, "wb") as out:
                self._copy(device, path, *found, out)
            yield local

    def fetch(self, device: str, path: str, limit: int) -> bytes | None:
        return fetch_whole(self, device, path, limit)


@contextmanager
def _opened(fh: BinaryIO, view: NativeView) -> Iterator[NativeView]:
    try:
        yield view
    finally:
        fh.close()


def open_native(image: Path, fmt: str | None = None) -> Any:
    """A context manager of the NativeView of raw `image`; NotNative when it cannot be read here."""
    if fmt not in (None, "raw"):
        raise NotNative(f"a {fmt} image (the native reader reads raw images)")
    if shutil.which("blkid") is None:
        raise NotNative("blkid is not installed")
    fh = open(image, "rb")  # noqa: SIM115 - closed by _opened, or below when the view cannot be made
    try:
        view = NativeView(fh, image)
    except BaseException:
        fh.close()
        raise
    return _opened(fh, view)
