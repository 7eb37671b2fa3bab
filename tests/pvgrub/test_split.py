"""Two GRUB 0.97 shells at once (one reads the kernels, one the initrds) decide exactly as one shell reading
every file in order (IMAGEKIT_GRUB097_SPLIT=off): everything GRUB printed, each error, each file's size and
bytes, and Xen's verdict. The one-shell run is the oracle; the split is trusted as far as these go."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from imagekit.pvgrub import menu as pvmenu
from imagekit.pvgrub.shell import open_shell
from imagekit.pvgrub.variant import Variant
from tests.lint.image_factory import MiB, mkext
from tests.pvgrub.test_memmove import CLOUD_KERNEL_CASES, cloud_kernel_image
from tests.pvgrub.test_memmove import both as planned_alike

KERNEL = bytes(range(256)) * 300  # stand-ins: GRUB reads them, Xen refuses them (no ELF)
INITRD = b"initrd" * 5000


def both(image: Path, variant: Variant, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[Any], list[Any]]:
    """Two shells, then one (the oracle)."""
    return planned_alike(image, variant, tmp, monkeypatch, (pvmenu.SPLIT_ENV, "off"))


def small_image(tmp: Path, menu: str, files: dict[str, bytes]) -> Path:
    (tmp / "tree/boot/grub").mkdir(parents=True)
    for name, data in files.items():
        (tmp / "tree/boot" / name).write_bytes(data)
    (tmp / "tree/boot/grub/menu.lst").write_text(menu)
    mkext(tmp / "fs.img", tmp / "tree", 8 * MiB)
    return tmp / "fs.img"


def split_attempts(image: Path, variant: Variant) -> tuple[pvmenu.Attempt, ...] | None:
    """What the two shells alone make of the image's menu (None: the one-shell run decides)."""
    with open_shell(image, variant) as shell:
        path, text, _ = pvmenu.find_menu(shell, pvmenu.MENU_104)
        assert path is not None
        menu = pvmenu.read_menu(path, text, pvmenu.known_commands(shell))
    with pvmenu.ExitStack() as stack:
        return pvmenu.split_run(image, variant, menu, None, stack)


CASES = {
    # every file read: the two shells' attempts are merged
    "boots": ("default 0\ntitle a\n\troot (hd0)\n\tkernel /boot/vmlinuz ro\n\tinitrd /boot/initrd.img\n"
              "\tmodule /boot/initrd.img\n", True),
    # entry 0's initrd is missing: only the initrd shell sees the error, the kernel shell went on to boot it
    "initrd-missing": ("default 0\nfallback 1\ntitle a\n\troot (hd0)\n\tkernel /boot/vmlinuz ro\n"
                       "\tinitrd /boot/missing\ntitle b\n\troot (hd0)\n\tkernel /boot/vmlinuz\n"
                       "\tinitrd /boot/initrd.img\n", False),
    # entry 0's kernel is missing: the initrd shell read an initrd the one shell never reaches
    "kernel-missing": ("default 0\nfallback 1\ntitle a\n\troot (hd0)\n\tkernel /boot/missing ro\n"
                       "\tinitrd /boot/initrd.img\ntitle b\n\troot (hd0)\n\tkernel /boot/vmlinuz\n"
                       "\tinitrd /boot/initrd.img\n", False),
    # an initrd before the kernel: Error 19 in both shells (it is not a dump)
    "initrd-first": ("default 0\ntitle a\n\troot (hd0)\n\tinitrd /boot/initrd.img\n\tkernel /boot/vmlinuz\n"
                     "\tinitrd /boot/initrd.img\n", False),
    # both files read, then a menu-only command fails the entry (Error 27) in both; the fallback boots
    "menu-only-after-loads": ("default 0\nfallback 1\ntitle a\n\troot (hd0)\n\tkernel /boot/vmlinuz\n"
                              "\tinitrd /boot/initrd.img\n\ttimeout 3\ntitle b\n\troot (hd0)\n"
                              "\tkernel /boot/vmlinuz ro\n\tinitrd /boot/initrd.img\n", True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_two_shells_decide_as_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    menu, merged = CASES[name]
    image = small_image(tmp_path, menu, {"vmlinuz": KERNEL, "initrd.img": INITRD})
    split, one = both(image, Variant.HD0, tmp_path, monkeypatch)
    assert split == one
    attempts = split_attempts(image, Variant.HD0)
    assert (attempts is not None) is merged  # the merge itself was compared, not only the fallback to one shell
    if attempts is not None:
        sizes = {ld.kind: ld.read.size for a in attempts for ld in a.loads}
        assert sizes == {"kernel": len(KERNEL), "initrd": len(INITRD), **({"module": len(INITRD)} if "module"
                                                                          in menu else {})}


def test_a_menu_without_initrds_runs_one_shell(tmp_path: Path) -> None:
    image = small_image(tmp_path, "default 0\ntitle a\n\troot (hd0)\n\tkernel /boot/vmlinuz ro\n",
                        {"vmlinuz": KERNEL})
    with open_shell(image, Variant.HD0) as shell:
        _, text, _ = pvmenu.find_menu(shell, pvmenu.MENU_104)
        assert not pvmenu.splits(pvmenu.read_menu("(hd0)/boot/grub/menu.lst", text, pvmenu.known_commands(shell)))


@pytest.mark.slow  # the one-shell oracle reads a cloud kernel and its initrd in turn (~4 s per image)
@CLOUD_KERNEL_CASES
def test_a_cloud_kernel_image_is_decided_alike(host_kernel: Path, tmp_path: Path, block: int, parted: bool,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The gzipped ELF vmlinux and its initrd: 4 KiB blocks boot, 1 KiB blocks crash 0.97-80's shell (then
    the one-shell run decides), and an MBR partition."""
    split, one = both(*cloud_kernel_image(host_kernel, tmp_path, block, parted), tmp_path, monkeypatch)
    assert split == one
    assert split[2] is (block == 4096)
