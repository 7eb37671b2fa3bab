"""Make and populate one filesystem from a staged tree with the host's mkfs, rootless.

ext2/3/4: `mke2fs -d` straight into the image at the filesystem's offset (no copy at all).
xfs: `mkfs.xfs -p` with a protofile; btrfs: `mkfs.btrfs --rootdir`; both into a scratch file that is
then copied into the image sparsely. Rootless builds replay the tree's fakeroot state so files are
owned by root in the image.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from imagekit.image.layout import FirmwarePart, Placement
from imagekit.image.sparse import copy_range
from imagekit.recipe.model import Filesystem, FsType
from imagekit.rootfs.bootstrap import Tree
from imagekit.util.errors import CommandFailed, ImagekitError
from imagekit.util.hostdisk import disk_full_reason
from imagekit.util.run import run

EXT = (FsType.EXT2, FsType.EXT3, FsType.EXT4)
# A filesystem PV-GRUB (GRUB 0.97 with Amazon's ext4 patches) reads /boot from: no 64-bit block
# numbers (an incompatible feature old GRUB does not know). GRUB 2 reads it either way.
PVGRUB_EXT4_FEATURES = "^64bit"
SECTOR = 512
FAT32_SERIAL = 0x43  # the volume id in a FAT32 boot sector
FAT32_BACKUP_SECTOR = 6  # mkfs.fat's backup boot sector


class TooSmall(ImagekitError):
    """mke2fs ran out of room inside the filesystem ("Could not allocate block/inode"): the recipe's size.
    A full host disk ("No space left on device" writing the image file) is not this (see hostdisk)."""


def mke2fs_env(epoch: int | None) -> dict[str, str]:
    env = {"MKE2FS_CONFIG": str(resources.files("imagekit") / "data" / "mke2fs.conf")}
    if epoch is not None:
        env["E2FSPROGS_FAKE_TIME"] = str(epoch)
    return env


def mke2fs_argv(fs: Filesystem, *, boot: bool) -> list[str]:
    """mke2fs and the options that decide the filesystem's geometry (shared with the size probe)."""
    features = fs.features or (PVGRUB_EXT4_FEATURES if boot and fs.type == FsType.EXT4 else None)
    return ["mke2fs", "-F", "-q", "-t", fs.type.value, *(["-O", features] if features else [])]


@dataclass(frozen=True)
class NewFilesystem:
    """A filesystem to make: where, from which tree, with which UUID; ext only: the geometry of one that
    holds /boot (PV-GRUB's features), the directory hash seed and the epoch of a reproducible build."""

    place: Placement
    tree: Tree
    uuid: str
    boot: bool = False
    hash_seed: str | None = None
    epoch: int | None = None


def make_ext(new: NewFilesystem, image: Path) -> None:
    place, tree, uuid, hash_seed = new.place, new.tree, new.uuid, new.hash_seed
    fs = place.fs
    extended = ["root_owner=0:0"]
    if place.offset:
        extended.append(f"offset={place.offset}")
    if hash_seed:
        extended.append(f"hash_seed={hash_seed}")
    argv = [*mke2fs_argv(fs, boot=new.boot), "-L", fs.label, "-U", uuid, "-E", ",".join(extended),
            "-d", os.fspath(tree.path), os.fspath(image), f"{place.size // 1024}k"]
    try:
        tree.run(argv, env=mke2fs_env(new.epoch))
    except CommandFailed as exc:
        if disk_full_reason(exc) is not None:  # the host's disk, not the image: build.py says so
            raise
        if "Could not allocate" in exc.output or "ext2fs_" in exc.output:
            raise TooSmall(f"{place.mountpoint}: the tree does not fit in {place.size // (1024 * 1024)} MiB "
                           f"({exc.output.strip().splitlines()[-1]})", hint="raise the recipe's size") from None
        raise


def _protofile(tree: Path) -> str:
    """An xfs protofile describing tree (owned by root: /boot holds nothing else)."""
    lines = ["/dev/null", "0 0", "d--755 0 0"]

    def walk(path: Path, depth: int) -> None:
        for entry in sorted(path.iterdir()):
            st = entry.lstat()
            perm = f"{stat.S_IMODE(st.st_mode):03o}"
            pad = " " * depth
            if entry.name != entry.name.strip() or " " in entry.name:
                raise ImagekitError(f"xfs: cannot describe {entry} in a protofile (space in name)")
            if stat.S_ISDIR(st.st_mode):
                lines.append(f"{pad}{entry.name} d--{perm} 0 0")
                walk(entry, depth + 1)
                lines.append(f"{pad}$")
            elif stat.S_ISLNK(st.st_mode):
                lines.append(f"{pad}{entry.name} l--{perm} 0 0 {os.readlink(entry)}")
            elif stat.S_ISREG(st.st_mode):
                lines.append(f"{pad}{entry.name} ---{perm} 0 0 {entry}")
    walk(tree, 1)
    lines.append("$")
    return "\n".join(lines) + "\n"


def make_other(place: Placement, image: Path, tree: Tree, uuid: str, scratch: Path) -> None:
    """xfs or btrfs into a scratch file, then copied into the image at the placement's offset."""
    fs = place.fs
    part = scratch / f"fs-{place.partition or 0}.img"
    with open(part, "wb") as f:
        f.truncate(place.size)
    if fs.type == FsType.XFS:
        proto = scratch / "xfs.proto"
        proto.write_text(_protofile(tree.path))
        tree.run(["mkfs.xfs", "-q", "-f", "-L", fs.label, "-m", f"uuid={uuid}", "-p", proto, part])
    elif fs.type == FsType.BTRFS:
        argv = ["mkfs.btrfs", "-q", "-f", "-L", fs.label, "-U", uuid, "--rootdir", os.fspath(tree.path)]
        if fs.features:
            argv += ["-O", fs.features]
        tree.run([*argv, part])
    else:
        raise AssertionError(fs.type)
    copy_range(part, image, dst_offset=place.offset)
    part.unlink()


def make_filesystem(new: NewFilesystem, image: Path, scratch: Path) -> None:
    """`new` in `image` at its offset (ext: mke2fs -d in place; xfs, btrfs: made in `scratch`, copied in)."""
    if new.place.fs.type in EXT:
        make_ext(new, image)
    else:
        make_other(new.place, image, new.tree, new.uuid, scratch)


def check_filesystem(place: Placement, image: Path) -> None:
    """e2fsck -fn on an ext filesystem, read in place at its offset (e2fsprogs' `?offset=` I/O option)."""
    if place.fs.type not in EXT:
        return
    device = f"{image}?offset={place.offset}" if place.offset else os.fspath(image)
    run(["e2fsck", "-fn", device])


def esp_volume_id(volume_id: str) -> str:
    """'1A2B-3C4D' (as blkid shows a FAT serial) -> '1a2b3c4d' (as mkfs.fat -i takes it)."""
    return volume_id.replace("-", "").lower()


def make_esp(part: FirmwarePart, image: Path, label: str, volume_id: str, files: dict[str, Path],
             *, epoch: int | None = None) -> None:
    """FAT32 at the ESP's offset (mkfs.fat --offset), filled with mtools: no mount, no loop device.

    `files` maps a path on the ESP (EFI/BOOT/BOOTX64.EFI) to a host file. Reproducible: mkfs.fat
    --invariant fixes its times (and its volume id, which is then patched to the derived one), the
    directories and files get SOURCE_DATE_EPOCH as their time.
    """
    serial = esp_volume_id(volume_id)
    start = part.offset // SECTOR
    # mkfs.fat sizes its clusters by the whole file, not by the blocks it is given: say it (Microsoft's
    # FAT32 table: 512-byte clusters up to 260 MiB, 4 KiB up to 8 GiB), or a small ESP on a big disk
    # gets too few clusters for FAT32.
    cluster = 1 if part.size <= 260 * 1024 * 1024 else 8
    argv = ["mkfs.fat", "-F", "32", "-S", str(SECTOR), "-s", str(cluster), "-h", str(start), "-n", label,
            "-i", serial, f"--offset={start}", os.fspath(image), str(part.size // 1024)]
    if epoch is not None:
        argv.insert(1, "--invariant")
    run(argv)
    if epoch is not None:
        set_fat_serial(image, part.offset, serial)
    env = {"MTOOLS_SKIP_CHECK": "1", **({"SOURCE_DATE_EPOCH": str(epoch)} if epoch is not None else {})}
    target = f"{image}@@{part.offset}"
    dirs = sorted({str(Path(dest).parents[n]) for dest in files for n in range(len(Path(dest).parents) - 1)})
    for d in dirs:
        run(["mmd", "-i", target, f"::/{d}"], env=env)
    for dest, src in sorted(files.items()):
        if epoch is not None:
            os.utime(src, (epoch, epoch))
        run(["mcopy", "-m", "-i", target, os.fspath(src), f"::/{dest}"], env=env)


def set_fat_serial(image: Path, offset: int, serial: str) -> None:
    """The FAT32 volume id in the boot sector and its backup (sector 6): 4 bytes at 0x43."""
    value = int(serial, 16).to_bytes(4, "little")
    with open(image, "r+b") as f:
        for sector in (0, FAT32_BACKUP_SECTOR):
            f.seek(offset + sector * SECTOR + FAT32_SERIAL)
            f.write(value)
