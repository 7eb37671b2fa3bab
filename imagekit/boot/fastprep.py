"""Boot preparation without an appliance: the probe and console edits made with debugfs on a raw copy.

    with prepare_disk(image, workdir, job, accel) as (disk, prepared): ...  # disk: a qcow2 for QEMU

The fast path (most images: raw, ext2/3/4 root and /boot on plain partitions or the whole disk):
1. the layout is read from the image itself (partition table, superblocks, debugfs read-only: the image
   is opened for reading only and never written, so its sha256 stays the same);
2. the image's data extents are copied (`extfs.sparse_copy`: SEEK_DATA/SEEK_HOLE and copy_file_range,
   holes stay holes; about 0.2 s for the default image's 390 MB) and the edits are made in the copy
   with `debugfs -w` (extfs.ExtTree, the same probe.py/hvm.py/mounts.py code libguestfs runs);
3. the edited copy is kept in the cache (`boot-prepared/`), keyed on the image's identity (device,
   inode, size, mtime and ctime, so a rebuilt or touched image never hits a stale entry) and on what the
   edits depend on (the kind of boot, loader, variant, user-data, the manifest, the source of the modules
   that make the edits); the next boot of the same image starts from it with no copy and no edit;
4. each boot gets a fresh qcow2 overlay on that copy (the guest writes there), as on the image before.
What a boot needs besides the edits (the direct loader's kernel, GRUB 0.97's files) is read per boot.

Anything else (a qcow2 image, LVM, an xfs or btrfs filesystem, a GPT on a PV image, no ext root found)
falls back to libguestfs on a qcow2 overlay, as before. The report's `prepared_with` says which path
was taken (`debugfs`, `debugfs-cached` or `libguestfs`) and a note says why libguestfs was needed.
A copy rather than editing a qcow2 overlay in place: debugfs reads raw files only, and exposing the
overlay as one needs FUSE (qemu-storage-daemon) or NBD, more moving parts than a 0.2 s copy once per image.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from imagekit.boot import guest
from imagekit.boot.extfs import ExtFs, ExtFsError, ExtTree, Partition, is_ext, is_lvm, partitions, sparse_copy
from imagekit.boot.guest import Disk
from imagekit.boot.hvm import GRUB_CFG
from imagekit.boot.overlay import ImageFile, overlay
from imagekit.boot.prepared import Prepared
from imagekit.boot.probe import ProbeKind
from imagekit.boot.pvgrub import Variant
from imagekit.image.disklabel import LINUX_GPT_TYPES, LVM_TYPE, MBR_LINUX, MBR_LVM
from imagekit.util.accel import Accel
from imagekit.util.cache import cache_dir

CACHE = "boot-prepared"
MAX_ENTRIES = 3  # prepared copies kept (each holds an image's data: the default image's is ~390 MB)
# partition types as boot/extfs.py names them: MBR "0x83", GPT the type GUID in lower case
LVM_TYPES = {f"0x{MBR_LVM:02x}", LVM_TYPE.lower()}
LINUX_TYPES = {f"0x{MBR_LINUX:02x}", *(t.lower() for t in LINUX_GPT_TYPES - {LVM_TYPE})}
FAST = "debugfs"
CACHED = "debugfs-cached"
SLOW = "libguestfs"


class FastPathUnavailable(Exception):
    """Why this image is prepared with libguestfs (one line, for the report's notes)."""


@dataclass(frozen=True)
class Layout:
    disk: Disk
    offsets: dict[str, int]  # libguestfs device name -> byte offset of its filesystem

    def tree(self, raw: Path, writable: bool) -> ExtTree:
        root = self.disk.root_device or self.disk.boot_device
        boot = ExtFs(raw, self.offsets[self.disk.boot_device], writable) if self.disk.separate_boot else None
        return ExtTree(ExtFs(raw, self.offsets[root], writable), boot)


@dataclass(frozen=True)
class Job:
    """One boot's preparation, both ways. `edit` and `slow` write; `finish` only reads (it runs on the
    cached copy too). `params`: what the edits depend on besides the image (the cache key)."""

    params: dict[str, Any]
    layout: Callable[[ImageFile], Layout]
    edit: Callable[[Any, Disk], Any]  # (tree, disk) -> Prepared: the edits, on the mounted tree
    finish: Callable[[Any, Any], Any]  # (tree, Prepared) -> Prepared: what each boot reads
    slow: Callable[[Any], Any]  # libguestfs handle -> Prepared: the whole preparation, as before


# --- layouts -------------------------------------------------------------------------------------


def _devices(image: ImageFile) -> tuple[str | None, list[Partition]]:
    if image.format != "raw":
        raise FastPathUnavailable(f"a {image.format} image (debugfs reads raw images)")
    try:
        table, parts = partitions(image.path)
    except ExtFsError as exc:
        raise FastPathUnavailable(str(exc)) from None
    if lvm := [p.device for p in parts if p.type in LVM_TYPES or is_lvm(image.path, p.start)]:
        raise FastPathUnavailable(f"LVM on {', '.join(lvm)}")
    if other := [p.device for p in parts if p.type in LINUX_TYPES and not is_ext(image.path, p.start)]:
        raise FastPathUnavailable(f"{', '.join(other)}: a Linux filesystem that is not ext2/3/4 (xfs, btrfs, ...)")
    return table, parts


def looks_like_root(tree: ExtTree) -> bool:
    """As guest.looks_like_root: /etc and a /sbin/init (file or symlink)."""
    return tree.is_dir("/etc") and (tree.exists("/sbin/init") or tree.is_symlink("/sbin/init"))


def _root(image: ImageFile, candidates: list[tuple[str, int]]) -> str:
    for device, offset in candidates:
        if looks_like_root(ExtTree(ExtFs(image.path, offset))):
            return device
    raise FastPathUnavailable("no ext2/3/4 filesystem with /etc and /sbin/init")


def pv_layout(image: ImageFile, variant: Variant | None) -> Layout:
    """The disk as PV-GRUB sees it (guest.find_disk's rules), for images the fast path can edit."""
    table, parts = _devices(image)
    if table == "gpt":
        raise FastPathUnavailable("a GPT disk")
    variant = variant or (Variant.HD00 if parts else Variant.HD0)
    devices = [(p.device, p.start) for p in parts] or [("/dev/sda", 0)]
    boot = ("/dev/sda", 0) if variant is Variant.HD0 else devices[0]
    if not is_ext(image.path, boot[1]):
        raise FastPathUnavailable(f"{boot[0]} (where PV-GRUB reads menu.lst) is not ext2/3/4")
    ext = [d for d in devices if d != boot and is_ext(image.path, d[1])]
    root = _root(image, [boot, *ext])
    offsets = dict([boot, *ext])
    return Layout(Disk(variant, boot[0], root, separate_boot=root != boot[0]), offsets)


def hvm_layout(image: ImageFile) -> Layout:
    """Root (the ext filesystem with /sbin/init) and the one holding grub.cfg (hvm.find_boot's rules)."""
    _, parts = _devices(image)
    devices = [(p.device, p.start) for p in parts] or [("/dev/sda", 0)]
    ext = sorted(d for d in devices if is_ext(image.path, d[1]))
    root = _root(image, ext)
    offsets = dict(ext)
    boot = next((d for d, off in ext if d != root
                 and ExtTree(ExtFs(image.path, off)).is_file(GRUB_CFG.removeprefix("/boot"), followsymlinks=True)),
                root)
    return Layout(Disk(None, boot, root, separate_boot=boot != root), offsets)


# --- the cache -----------------------------------------------------------------------------------


def identity(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"dev": st.st_dev, "ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns}


# the modules under boot/ whose code decides the edits cached with a copy (pv.py: edit_pv; harness.py: pv_job)
EDIT_SOURCES = ("extfs.py", "harness.py", "pv.py", "hvm.py", "metadata.py", "mounts.py", "probe.py")


@functools.cache
def source_digest() -> str:
    """The source of the modules whose code decides the edits: a changed probe never reuses an old copy.
    Read as files (their text is what counts; this module does not call the harness that calls it)."""
    h = hashlib.sha256()
    for name in EDIT_SOURCES:
        h.update((Path(__file__).parent / name).read_bytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()


def cache_key(image: ImageFile, params: dict[str, Any]) -> str:
    inputs = {"image": str(image.path), "identity": identity(image.path), "params": params,
              "source": source_digest()}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:32]


def to_json(prepared: Any) -> dict[str, Any]:
    disk = prepared.disk
    return {"disk": {**asdict(disk), "variant": str(disk.variant) if disk.variant else None},
            "menu_text": prepared.menu_text, "kind": str(prepared.kind), "added": list(prepared.added),
            "notes": list(prepared.notes), "grub_cfg": prepared.grub_cfg}


def from_json(data: dict[str, Any]) -> Any:
    d = data["disk"]
    disk = Disk(Variant(d["variant"]) if d["variant"] else None, d["boot_device"], d["root_device"],
                d["separate_boot"])
    return Prepared(disk, data["menu_text"], ProbeKind(data["kind"]), tuple(data["added"]), None,
                    tuple(data["notes"]), grub_cfg=data["grub_cfg"])


def hold(entry: Path) -> int | None:
    """A shared lock on a cache entry for as long as a boot reads it (the fd; close it to let go): eviction
    by another boot then passes it by. None when the entry is gone (evicted before the lock was taken)."""
    try:
        fd = os.open(entry / "prepared.json", os.O_RDONLY)
    except OSError:
        return None
    fcntl.flock(fd, fcntl.LOCK_SH)
    if not (entry / "disk.raw").is_file():  # removed between open and lock: an evicted entry's last link
        os.close(fd)
        return None
    return fd


def remove_unless_in_use(entry: Path) -> None:
    """Remove a cache entry unless a boot holds it (its QEMU reads disk.raw as a backing file)."""
    try:
        fd = os.open(entry / "prepared.json", os.O_RDONLY)
    except OSError:
        shutil.rmtree(entry, ignore_errors=True)  # no metadata: a broken entry nobody can hold
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # in use: the next eviction takes it
    else:
        shutil.rmtree(entry, ignore_errors=True)
    finally:
        os.close(fd)


def lookup(root: Path, key: str, image: ImageFile, held: ExitStack) -> tuple[Path, Any] | None:
    """A cached copy for this key, if its recorded identity is still the image's; held (shared lock) until
    `held` closes."""
    entry = root / key
    fd = hold(entry)
    if fd is None:
        return None
    try:
        meta = json.loads((entry / "prepared.json").read_text())
        if meta["identity"] != identity(image.path):
            raise ValueError("stale")
        os.utime(entry)  # most recently used
        found = entry / "disk.raw", from_json(meta["prepared"])
    except (OSError, ValueError, KeyError, TypeError):
        os.close(fd)
        return None
    held.callback(os.close, fd)
    return found


def evict(root: Path, keep: str) -> None:
    """Drop entries whose image changed or is gone (they can never hit), then all but the newest few; an
    entry a running boot holds stays."""
    entries = []
    for entry in root.iterdir():
        if entry.name.startswith(".") or entry.name == keep:
            continue
        try:
            meta = json.loads((entry / "prepared.json").read_text())
            if meta["identity"] != identity(Path(meta["image"])):
                raise ValueError("stale")
            entries.append((entry.stat().st_mtime, entry))
        except (OSError, ValueError, KeyError, TypeError):
            remove_unless_in_use(entry)
    for _, entry in sorted(entries, reverse=True)[MAX_ENTRIES - 1:]:
        remove_unless_in_use(entry)


def store(entry: Path, staging: Path, image: ImageFile, before: dict[str, int], prepared: Any,
          held: ExitStack) -> Path:
    """Move the edited copy into the cache (temp + rename), held until `held` closes; where it now is. Not
    kept if the image changed while it was copied, or another boot stored the same entry first."""
    (staging / "prepared.json").write_text(json.dumps({"image": str(image.path), "identity": before,
                                                       "prepared": to_json(prepared)}))
    if identity(image.path) != before:
        return staging / "disk.raw"
    fd = hold(staging)  # before the rename: another boot's eviction never sees it unheld
    if fd is None:
        return staging / "disk.raw"
    held.callback(os.close, fd)
    try:
        os.rename(staging, entry)
    except OSError:
        return staging / "disk.raw"
    evict(entry.parent, entry.name)
    return entry / "disk.raw"


def forget(image: Path) -> int:
    """Drop the cached copies of an image (scripts/bench-boot times a first boot); how many there were."""
    root, dropped = cache_dir() / CACHE, 0
    for entry in root.iterdir() if root.is_dir() else ():
        try:
            if json.loads((entry / "prepared.json").read_text())["image"] == str(image.resolve()):
                shutil.rmtree(entry, ignore_errors=True)
                dropped += 1
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return dropped


# --- preparing a disk ----------------------------------------------------------------------------


def edit_copy(image: ImageFile, layout: Layout, job: Job, staging: Path) -> Any:
    """Copy the image's data into `staging` and make the edits there; the Prepared the edits report."""
    raw = staging / "disk.raw"
    sparse_copy(image.path, raw)
    return job.edit(layout.tree(raw, writable=True), layout.disk)


def fast_copy(image: ImageFile, layout: Layout, job: Job, workdir: Path, held: ExitStack | None
              ) -> tuple[Path, Any, str]:
    """The edited copy (from the cache when it is there and `held` keeps it; None: no cache), its Prepared,
    and which of FAST/CACHED it was."""
    root = cache_dir() / CACHE
    key = cache_key(image, job.params)
    if held is not None and (hit := lookup(root, key, image, held)):
        return hit[0], hit[1], CACHED
    before = identity(image.path)
    staging = None
    if held is not None:
        try:
            root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
        except OSError:
            held = None  # no cache to store into: the copy lives in the boot's work dir
    if staging is None:
        staging = Path(tempfile.mkdtemp(prefix="prepared-", dir=workdir))
    try:
        prepared = edit_copy(image, layout, job, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if held is None:
        return staging / "disk.raw", prepared, FAST
    return store(root / key, staging, image, before, prepared, held), prepared, FAST


@contextmanager
def prepare_disk(image: ImageFile, workdir: Path, job: Job, accel: Accel,
                 use_cache: bool = True, fast: bool = True) -> Iterator[tuple[Path, Any]]:
    """The disk QEMU boots (a qcow2 overlay, removed when the block ends) and what was prepared on it. A
    cached copy is held (shared lock) until the block ends: another boot's eviction leaves it alone."""
    with ExitStack() as held:
        why = "the fast path was turned off"
        done: tuple[Path, Any, str, Layout] | None = None
        if fast:
            try:
                layout = job.layout(image)
                done = (*fast_copy(image, layout, job, workdir, held if use_cache else None), layout)
            except FastPathUnavailable as exc:
                why = str(exc)
            except ExtFsError as exc:  # debugfs refused an edit (an ext feature it cannot write, ...)
                why = f"debugfs could not edit the copy: {exc}"
        if done is None:
            with overlay(image, workdir) as ov:
                with guest.open_guest(ov, accel, image.path.name) as g:
                    prepared = job.slow(g)
                yield ov, replace(prepared, prepared_with=SLOW,
                                  notes=(*prepared.notes, f"prepared with libguestfs: {why}"))
            return
        raw, edits, how, layout = done
        prepared = job.finish(layout.tree(raw, writable=False), edits)
        note = "prepared without libguestfs: debugfs on a sparse raw copy of the image" + \
            (" (the copy cached from an earlier boot of the same image)" if how == CACHED else "")
        with overlay(ImageFile(raw, "raw", image.virtual_size), workdir) as ov:
            yield ov, replace(prepared, prepared_with=how, notes=(*prepared.notes, note))
