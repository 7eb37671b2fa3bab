"""A corpus of hostile images, made from one small image the way an attacker (or a broken tool) would.

Every variant is cheap: `mke2fs -d` of a tree (symlinks, sparse files and odd text are planted in the
tree), a qcow2 header from qemu-img, or the bytes of the base image cut or replaced.
Each variant is (name, image, format for lint/diff or None for the default).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

from image_factory import MiB, mkext, partitioned, sh

GiB = 1024 * MiB
VERSION = "6.1.0-99-cloud-amd64"  # the kernel files are stand-ins: no rule here needs a real kernel
GOOD_ENTRY = f"title Debian\n\troot (hd0)\n\tkernel /boot/vmlinuz-{VERSION} root=LABEL=root ro console=hvc0\n" \
             f"\tinitrd /boot/initrd.img-{VERSION}\n"


@dataclass(frozen=True)
class Variant:
    name: str
    image: Path
    fmt: str | None = None  # --format for lint and diff (None: the default)


def base_tree(root: Path, menu: str | None = None) -> Path:
    """/boot with a kernel, initrd and config, menu.lst, /etc/fstab, a file or two in /etc."""
    (root / "boot" / "grub").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "boot" / f"vmlinuz-{VERSION}").write_bytes(b"\x00" * 4096)
    (root / "boot" / f"initrd.img-{VERSION}").write_bytes(b"\x00" * 4096)
    (root / "boot" / f"config-{VERSION}").write_text("CONFIG_XEN_PV=y\n")
    (root / "boot" / "grub" / "menu.lst").write_text(menu or f"default 0\ntimeout 1\n{GOOD_ENTRY}")
    (root / "etc" / "fstab").write_text("LABEL=root / ext4 defaults 0 1\n")
    (root / "etc" / "hostname").write_text("hostile\n")
    return root


def ext_image(tmp: Path, name: str, tree: Path) -> Path:
    image = tmp / f"{name}.img"
    mkext(image, tree, 16 * MiB)
    return image


def build_corpus(tmp: Path, sentinel: Path) -> tuple[Path, list[Variant]]:
    """The good base image and every hostile variant of it; `sentinel` is the host file the qcow2s name."""
    base = ext_image(tmp, "base", base_tree(tmp / "base-tree"))
    variants: list[Variant] = []

    truncated = tmp / "truncated.img"
    with open(base, "rb") as src, open(truncated, "wb") as dst:
        dst.write(src.read(3 * MiB))  # the superblock is there, most of the groups are not
    variants.append(Variant("truncated", truncated))

    noise = tmp / "random.img"
    noise.write_bytes(random.Random(13).randbytes(4 * MiB))
    variants.append(Variant("random", noise))

    backed = tmp / "backing.qcow2"
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", sentinel, "-F", "raw", backed, "16M")
    variants += [Variant("qcow2-backing", backed), Variant("qcow2-backing-asked", backed, "qcow2")]
    data_file = tmp / "data-file.qcow2"
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-o", f"data_file={sentinel},data_file_raw=on", data_file, "16M")
    variants.append(Variant("qcow2-data-file-asked", data_file, "qcow2"))

    loop = base_tree(tmp / "loop-tree")
    (loop / "boot/grub/menu.lst").unlink()
    os.symlink("menu.lst", loop / "boot/grub/menu.lst")  # menu.lst -> menu.lst
    variants.append(Variant("menulst-symlink-loop", ext_image(tmp, "loop", loop)))

    relative = base_tree(tmp / "relative-tree", menu="default 0\nfallback 1\ntitle escape\n\troot (hd0)\n"
                         "\tkernel ../../etc/shadow root=LABEL=root console=hvc0\n\tinitrd ../../../etc/passwd\n"
                         + GOOD_ENTRY)
    variants.append(Variant("relative-kernel", ext_image(tmp, "relative", relative)))

    sparse = base_tree(tmp / "sparse-tree")
    with open(sparse / "boot" / f"vmlinuz-{VERSION}", "r+b") as f:
        f.truncate(3 * GiB)  # 3 GiB, all but 4 KiB of it a hole
    variants.append(Variant("sparse-3g-kernel", ext_image(tmp, "sparse", sparse)))

    for name, line in (("default-superscript", "default ²"), ("default-5000-digits", "default " + "9" * 5000)):
        tree = base_tree(tmp / f"{name}-tree", menu=f"{line}\ntimeout 1\n{GOOD_ENTRY}")
        variants.append(Variant(name, ext_image(tmp, name, tree)))

    first, second = tmp / "label-1.ext4", tmp / "label-2.ext4"
    mkext(first, base_tree(tmp / "label-tree", menu=GOOD_ENTRY.replace("(hd0)", "(hd0,0)")), 16 * MiB)
    shutil.copy(first, second)
    sh("tune2fs", "-U", "random", second)  # a copy of the same filesystem: same label, new UUID
    dup = tmp / "duplicate-label.img"
    partitioned(dup, "dos", [(first, "83"), (second, "83")])
    variants.append(Variant("duplicate-label", dup))
    return base, variants


def odd_manifests() -> dict[str, str]:
    """Manifests to put beside a good image: each must be refused with exit 2 naming file and key."""
    return {
        "boot-mode-list": json.dumps({"boot_mode": [1]}),
        "not-json": "{\"arch\": ",
        "not-an-object": "[1, 2]",
        "packages-wrong": json.dumps({"packages": [{"name": "bash", "version": 5}]}),
        "deep": "[" * 100_000,
    }
