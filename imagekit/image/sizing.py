"""How big a filesystem must be for a tree: counted, then measured against mke2fs itself.

The tree is counted the way ext4 stores it (4 KiB data blocks per file, directory blocks from the
entries' sizes, long symlinks, hard links once, inodes). The filesystem's own cost (inode tables,
bitmaps, group descriptors, reserved GDT blocks, journal, the 5 % reserved for root) is not
estimated with factors: an empty filesystem of the candidate size is made in a sparse scratch file
with the very options of the build (about 10 ms) and its superblock says what is left. The smallest
size that holds the tree plus the requested headroom is then found by bisection, to the MiB.
"""

from __future__ import annotations

import os
import stat
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from imagekit.recipe.model import MiB

BLOCK = 4096
FIRST_INODE = 11  # inodes 1-10 are reserved in ext2/3/4


@dataclass(frozen=True)
class TreeUsage:
    blocks: int  # 4 KiB blocks the contents need
    inodes: int
    apparent: int  # sum of file sizes (what `du --apparent-size` says)

    @property
    def bytes(self) -> int:
        return self.blocks * BLOCK


@dataclass(frozen=True)
class Capacity:
    """What an empty filesystem of `size` bytes offers: blocks usable without the root reserve, inodes."""

    size: int
    blocks: int
    inodes: int
    reserved: int


def _dir_blocks(entries: list[str]) -> int:
    used = 24 + sum(8 + ((len(name.encode()) + 3) & ~3) for name in entries)  # "." and ".." first
    n = -(-used // BLOCK)
    return n + (1 if n > 1 else 0)  # an htree index block for directories past one block


def measure_tree(path: Path) -> TreeUsage:
    blocks = inodes = apparent = 0
    seen: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(path):
        inodes += 1
        blocks += _dir_blocks(dirs + files)
        for name in files:
            st = os.lstat(os.path.join(root, name))
            if st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            inodes += 1
            if stat.S_ISREG(st.st_mode):
                apparent += st.st_size
                data = -(-st.st_size // BLOCK)
                blocks += data + (data // (4 * 32768))  # extent tree leaves for files beyond 4 extents
            elif stat.S_ISLNK(st.st_mode) and st.st_size >= 60:
                blocks += 1
        for name in dirs:  # symlinks to directories are listed in dirs by os.walk
            if os.path.islink(os.path.join(root, name)):
                inodes += 1
                blocks += 1 if len(os.readlink(os.path.join(root, name))) >= 60 else 0
    return TreeUsage(blocks, inodes + FIRST_INODE, apparent)


def read_superblock(image: Path, offset: int = 0) -> Capacity:
    """Block and inode figures from an ext2/3/4 superblock (at offset + 1024)."""
    with open(image, "rb") as f:
        f.seek(offset + 1024)
        sb = f.read(1024)
    (_, blocks_lo, r_blocks_lo, free_blocks_lo, free_inodes) = struct.unpack_from("<5I", sb, 0)
    log_block = struct.unpack_from("<I", sb, 24)[0]
    magic = struct.unpack_from("<H", sb, 56)[0]
    if magic != 0xEF53:
        raise ValueError(f"{image} at {offset}: no ext2/3/4 superblock")
    incompat = struct.unpack_from("<I", sb, 96)[0]
    blocks, reserved, free = blocks_lo, r_blocks_lo, free_blocks_lo
    if incompat & 0x80:  # 64bit
        hi = struct.unpack_from("<III", sb, 0x150)
        blocks |= hi[0] << 32
        reserved |= hi[1] << 32
        free |= hi[2] << 32
    block_size = 1024 << log_block
    return Capacity(blocks * block_size, (free - reserved) * block_size // BLOCK, free_inodes, reserved)


def probe(size: int, mkfs: list[str], env: dict[str, str]) -> Capacity:
    """Make an empty filesystem of `size` with the build's own mke2fs argv (minus -d) and read it back."""
    from imagekit.util.run import run

    with tempfile.NamedTemporaryFile(prefix="imagekit-probe-", suffix=".img") as f:
        f.truncate(size)
        run([*mkfs, f.name, f"{size // 1024}k"], env=env)
        return read_superblock(Path(f.name))


def fits(cap: Capacity, usage: TreeUsage, free: int) -> bool:
    return cap.blocks >= usage.blocks + -(-free // BLOCK) and cap.inodes >= usage.inodes - FIRST_INODE


def smallest_size(usage: TreeUsage, free: int, mkfs: list[str], env: dict[str, str]) -> int:
    """The smallest MiB-aligned filesystem size holding `usage` with `free` bytes to spare."""
    lo = max(4 * MiB, (usage.bytes + free) // MiB * MiB)
    hi = lo
    while not fits(probe(hi, mkfs, env), usage, free):
        lo, hi = hi, hi + max(8 * MiB, (hi // 8) // MiB * MiB)
    while hi - lo > MiB:  # bisect to the MiB: fits(hi) holds, lo is unknown or too small
        mid = (lo + hi) // 2 // MiB * MiB
        if fits(probe(mid, mkfs, env), usage, free):
            hi = mid
        else:
            lo = mid
    return hi
