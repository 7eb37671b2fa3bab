"""Small real images for the boot tests: the host's Debian cloud kernel and initrd, busybox as userland.

Made with real tools only: `mkfs.ext4 -d TREE` for a partitionless (hd0) image, and sfdisk plus
`mkfs.ext4 -E offset=` for a partitioned (hd00) one. Session-scoped: each is made once (about a second).
"""

from __future__ import annotations

import glob
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

KERNEL = sorted(glob.glob("/boot/vmlinuz-*-cloud-amd64"))[-1] if glob.glob("/boot/vmlinuz-*-cloud-amd64") else None
INITRD = KERNEL.replace("vmlinuz", "initrd.img") if KERNEL else None
MIB = 1024 * 1024

INIT = """#!/bin/sh
mount -t proc proc /proc
echo "small init: up"
while true; do sleep 60; done
"""


def requires_kernel() -> pytest.MarkDecorator:
    return pytest.mark.skipif(KERNEL is None, reason="no /boot/vmlinuz-*-cloud-amd64 on this host")


def userland(dest: Path, init: str = INIT) -> None:
    for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "run"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", dest / "bin/busybox")
    for applet in ("sh", "mount", "cat", "echo", "sleep", "poweroff", "true"):
        (dest / "bin" / applet).symlink_to("busybox")
    (dest / "sbin/init").write_text(init)
    (dest / "sbin/init").chmod(0o755)


def boot_files(boot: Path, menu_lst: str) -> None:
    """Kernel, initrd and menu.lst in `boot` (a tree's /boot, or the root of a /boot filesystem)."""
    assert KERNEL and INITRD
    (boot / "grub").mkdir(parents=True, exist_ok=True)
    shutil.copy2(KERNEL, boot / "vmlinuz")
    shutil.copy2(INITRD, boot / "initrd.img")
    (boot / "grub/menu.lst").write_text(menu_lst)


def mkfs(tree: Path, image: Path, size_mib: int, label: str, offset: int = 0, uuid: str | None = None) -> None:
    args = ["mkfs.ext4", "-q", "-F", "-L", label, "-d", str(tree)] + (["-U", uuid] if uuid else [])
    if offset:
        args += ["-E", f"offset={offset}"]
    subprocess.run([*args, str(image), f"{size_mib}M"], check=True)


def make_hd0(dest: Path, menu_lst: str) -> Path:
    tree = dest.with_suffix(".tree")
    userland(tree)
    boot_files(tree / "boot", menu_lst)
    mkfs(tree, dest, 96, "root")
    return dest


def make_hd00(dest: Path, menu_lst: str, separate_boot: bool) -> Path:
    """An MBR disk; partition 1 is /boot (with a `boot -> .` link, so /boot/grub/menu.lst resolves) or root."""
    root = dest.with_suffix(".root")
    userland(root)
    parts: list[tuple[Path, int, str]] = []
    if separate_boot:
        boot = dest.with_suffix(".boot")
        boot_files(boot, menu_lst)
        (boot / "boot").symlink_to(".")
        (root / "boot").mkdir()
        parts.append((boot, 64, "boot"))
    else:
        boot_files(root / "boot", menu_lst)
    parts.append((root, 96, "root"))
    total = 1 + sum(size for _, size, _ in parts)
    with open(dest, "wb") as f:
        f.truncate(total * MIB)
    script = "label: dos\n" + "".join(f"size={size}MiB, type=83\n" for _, size, _ in parts)
    subprocess.run(["sfdisk", "-q", str(dest)], input=script.encode(), check=True)
    offset = 1
    for tree, size, label in parts:
        mkfs(tree, dest, size, label, offset * MIB)
        offset += size
    return dest


def menu(*entries: tuple[str, str, str | None], default: int = 0, fallback: int | None = None,
         root: str = "(hd0)") -> str:
    """menu.lst text: entries are (title, kernel line, initrd or None)."""
    lines = [f"default {default}", "timeout 1"] + ([f"fallback {fallback}"] if fallback is not None else [])
    for title, kernel, initrd in entries:
        lines += [f"title {title}", f"\troot {root}", f"\tkernel {kernel}"]
        lines += [f"\tinitrd {initrd}"] if initrd else []
    return "\n".join(lines) + "\n"


GOOD = ("Debian cloud", "/boot/vmlinuz root=LABEL=root ro console=hvc0", "/boot/initrd.img")
MISSING = ("Missing kernel", "/boot/vmlinuz-missing root=LABEL=root ro console=hvc0", "/boot/initrd.img")


@pytest.fixture(scope="session")
def small_images(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Named small images, made on first use."""
    out = tmp_path_factory.mktemp("boot-images")
    makers: dict[str, Callable[[Path], Path]] = {
        # default kernel missing: GRUB falls back to entry 1
        "fallback": lambda p: make_hd0(p, menu(MISSING, GOOD, default=0, fallback=1)),
        "all-missing": lambda p: make_hd0(p, menu(MISSING, ("Also missing", "/boot/nope root=LABEL=root", None),
                                                  fallback=1)),
        "wrong-label": lambda p: make_hd0(p, menu(("Wrong label", "/boot/vmlinuz root=LABEL=nosuch ro "
                                                   "console=hvc0", "/boot/initrd.img"))),
        # init that exits at once: the kernel panics ("Attempted to kill init")
        "panic": lambda p: make_hd0(p, menu(("Init exits", "/boot/vmlinuz root=LABEL=root ro console=hvc0 "
                                             "init=/bin/true", "/boot/initrd.img"))),
        "hd0-on-partitioned": lambda p: make_hd00(p, menu(GOOD, root="(hd0)"), separate_boot=False),
        "hd00-bootpart": lambda p: make_hd00(p, menu(("Debian cloud", "/vmlinuz root=LABEL=root ro console=hvc0",
                                                      "/initrd.img"), root="(hd0,0)"), separate_boot=True),
    }
    return on_first_use(out, makers)


def on_first_use(out: Path, makers: dict[str, Callable[[Path], Path]]) -> Callable[[str], Path]:
    """name -> out/<name>.img, made by makers[name] the first time it is asked for."""
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = makers[name](out / f"{name}.img")
        return made[name]

    return get
