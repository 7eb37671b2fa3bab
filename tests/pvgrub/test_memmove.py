"""The GRUB 0.97 imagekit runs (grub_memmove's copy direction patched) reads and decides exactly as Debian's.

Each image is planned twice, once per binary (IMAGEKIT_GRUB097=debian selects Debian's unpatched one), and
everything GRUB printed, every error, every file's size and bytes, and Xen's verdict must be the same. Debian's
binary is the oracle: the patch is only trusted as far as these comparisons go.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest

from imagekit.boot.pvgrub097 import plan
from imagekit.pvgrub import memmove
from imagekit.pvgrub.fetch import debian_binary, grub_binary
from imagekit.pvgrub.plan import Grub097Plan
from imagekit.pvgrub.variant import Variant
from tests.lint.image_factory import MiB, boot_tree, mkext, partitioned


def summary(result: Grub097Plan) -> list[Any]:
    """What a plan says, without the scratch paths: commands, output, errors, each file's size and sha256."""
    def digest(path: Path | None) -> str | None:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path else None

    tried = [(t.attempt.entry.index, [(r.command, r.output, str(r.error)) for r in t.attempt.results],
              str(t.error), [(ld.kind, ld.file, ld.read.size, str(ld.read.error), digest(ld.read.data))
                             for ld in t.attempt.loads])
             for t in result.tried]
    return [result.plan.searched, tried, result.xen is not None, result.why()]


CLOUD_KERNEL_CASES = pytest.mark.parametrize(("block", "parted"), [(4096, False), (1024, False), (4096, True)],
                                             ids=["hd0-4k", "hd0-1k", "hd00-4k"])


def cloud_kernel_image(host_kernel: Path, tmp: Path, block: int, parted: bool) -> tuple[Path, Variant]:
    """The host's cloud kernel as a PV-safe gzipped vmlinux and its initrd in one entry, on `block`-sized ext4
    blocks, the filesystem the whole disk (hd0) or an MBR partition (hd00)."""
    version = host_kernel.name.removeprefix("vmlinuz-")
    root = "(hd0,0)" if parted else "(hd0)"
    menu = (f"default 0\ntitle pv\n\troot {root}\n\tkernel /boot/pvgrub-vmlinux-{version}.gz root=LABEL=root ro\n"
            f"\tinitrd /boot/initrd.img-{version}\n")
    tree = boot_tree(tmp / "tree", host_kernel, menu=menu, fstab=None, pv_safe=True)
    image = tmp / "fs.img"
    mkext(image, tree, 160 * MiB, block=block)
    if not parted:
        return image, Variant.HD0
    partitioned(tmp / "disk.img", "dos", [(image, "83")])
    return tmp / "disk.img", Variant.HD00


def both(image: Path, variant: Variant, tmp: Path, monkeypatch: pytest.MonkeyPatch,
         oracle: tuple[str, str] = (memmove.ENV, "debian")) -> tuple[list[Any], list[Any]]:
    """The image planned as imagekit plans it, then with the oracle's environment variable set."""
    ours = summary(plan(image, variant, "1.05", tmp / "ours"))
    monkeypatch.setenv(*oracle)
    theirs = summary(plan(image, variant, "1.05", tmp / "oracle"))
    monkeypatch.delenv(oracle[0])
    return ours, theirs


def test_the_patch_changes_grub_memmove_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    debian = debian_binary().read_bytes()
    ours = grub_binary().read_bytes()
    assert grub_binary().name == "grub-memmove"
    changed = [i for i, (a, b) in enumerate(zip(debian, ours, strict=True)) if a != b]
    assert changed and changed[0] >= memmove.OFFSET and changed[-1] < memmove.OFFSET + len(memmove.PATCHED)
    monkeypatch.setenv(memmove.ENV, "debian")
    assert grub_binary() == debian_binary()
    tampered = bytearray(debian)
    tampered[0x100] ^= 1
    with pytest.raises(memmove.PatchRefused, match=r"not grub-legacy 0\.97-80's"):
        memmove.patch(bytes(tampered))
    copy = tmp_path / "grub"
    shutil.copy(debian_binary(), copy)
    assert memmove.patched_binary(copy).read_bytes() == ours  # made beside the binary it patches
    assert {p.name for p in tmp_path.iterdir()} == {"grub", "grub-memmove"}  # no temporary left


def test_a_small_image_is_planned_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-in kernel files (not Xen kernels): the menu's run, each read and the refusal, byte for byte."""
    (tmp_path / "tree/boot/grub").mkdir(parents=True)
    (tmp_path / "tree/boot/vmlinuz").write_bytes(bytes(range(256)) * 300)
    (tmp_path / "tree/boot/initrd.img").write_bytes(b"initrd" * 5000)
    (tmp_path / "tree/boot/grub/menu.lst").write_text(
        "default 0\nfallback 1\ntitle a\n\troot (hd0)\n\tkernel /boot/vmlinuz ro\n\tinitrd /boot/initrd.img\n"
        "title b\n\troot (hd0)\n\tkernel /boot/missing ro\n")
    mkext(tmp_path / "fs.img", tmp_path / "tree", 8 * MiB)
    ours, theirs = both(tmp_path / "fs.img", Variant.HD0, tmp_path, monkeypatch)
    assert ours == theirs
    assert "Error 15: File not found" in str(ours)  # the fallback's missing kernel, as both report it


@pytest.mark.slow  # Debian's binary takes ~10 s to read a cloud kernel and its initrd
@CLOUD_KERNEL_CASES
def test_a_cloud_kernel_image_is_planned_alike(host_kernel: Path, tmp_path: Path, block: int, parted: bool,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The gzipped ELF vmlinux (GRUB's gunzip) and the initrd (GRUB's ext2fs reads), on 4 KiB blocks (boots),
    1 KiB blocks (0.97-80's shell crashes: pvgrub-unreadable) and in an MBR partition."""
    ours, theirs = both(*cloud_kernel_image(host_kernel, tmp_path, block, parted), tmp_path, monkeypatch)
    assert ours == theirs
    assert ours[2] is (block == 4096)  # Xen starts the kernel read on 4 KiB blocks, none on 1 KiB
