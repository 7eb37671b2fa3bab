"""GRUB 2 for HVM images, rootless: images made on the host with grub-mkimage, written into the disk file.

BIOS (mbr-bios, gpt-hybrid): GRUB's boot.img goes into the MBR's first 440 bytes (the disk signature
and partition table stay), core.img into the MBR gap (sector 1) or the BIOS boot partition, and the two
pointers grub-bios-setup patches are patched here (GRUB 2.06 util/setup.c): boot.img's kernel sector
(0x5c, the LBA of core.img's first sector) and the blocklist at the end of core.img's first sector
(diskboot.img: LBA and sector count of the rest of core.img). No loop device, no device map.

UEFI (gpt-uefi, gpt-hybrid): core image x86_64-efi (arm64-efi for arm64, from the bootstrapped tree's
module directory: recipe/arch.py), installed as the removable-media path EFI/BOOT/BOOTX64.EFI (BOOTAA64.EFI)
on the ESP, so the firmware needs no NVRAM entry.

Both images are monolithic: every module the boot needs is built in and nothing is copied to
/boot/grub/<platform>. A module directory would have to match the core image's GRUB build exactly;
built in, the image cannot be broken by a guest that installs another GRUB's modules, and
`insmod` of a built-in module is a no-op. The embedded config finds the boot filesystem by UUID
and sets the prefix there; normal mode then reads the generated grub.cfg.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import jinja2

from imagekit.bootloader.menulst import Entry
from imagekit.util.errors import ImagekitError
from imagekit.util.run import run

GRUB_LIB = Path("/usr/lib/grub")
SECTOR = 512
# boot.img (grub-core/boot/i386/pc/boot.S, include/grub/i386/pc/boot.h)
KERNEL_SECTOR = 0x5C  # 8 bytes LE: LBA of core.img's first sector
DRIVE_CHECK = 0x66  # a 2-byte jmp; grub-bios-setup nops it for hard disks (buggy BIOS boot drive workaround)
MBR_CODE = 440  # boot code; the disk signature, partition table and 0x55AA follow
# diskboot.img, core.img's first sector: the blocklist {u64 start; u16 len; u16 segment} ends the sector.
BLOCKLIST = SECTOR - 12

COMMON_MODULES = ("search", "search_fs_uuid", "normal", "linux", "serial", "terminal", "echo", "test",
                  "configfile", "boot", "part_gpt", "part_msdos")
# arm64-efi's gzio: Debian's arm64 vmlinuz is a gzipped Image, which GRUB's linux loader reads through it
PLATFORM_MODULES = {"i386-pc": ("biosdisk",), "x86_64-efi": ("fat", "efi_gop"), "arm64-efi": ("fat", "gzio")}
FS_MODULES = {"ext2": "ext2", "ext3": "ext2", "ext4": "ext2", "xfs": "xfs", "btrfs": "btrfs"}

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("imagekit", "templates"),
    keep_trailing_newline=True,
    autoescape=False,  # a boot loader config, not HTML
    undefined=jinja2.StrictUndefined,
)


def grub_quote(text: str) -> str:
    """A GRUB 2 word in single quotes ('It'\\''s' for It's)."""
    return "'" + text.replace("'", "'\\''") + "'"


_env.filters["grub_quote"] = grub_quote


def render_grub_cfg(entries: Sequence[Entry], *, boot_uuid: str, boot_mode: str, default: int = 0,  # noqa: PLR0913 (grub.cfg's settings, each a keyword)
                    fallback: int | None = None, timeout: int = 1, serial: bool = True) -> str:
    """grub.cfg: serial console (`serial`: GRUB's own; else the firmware's), default/fallback/timeout as
    menu.lst, one menuentry per entry."""
    text = _env.get_template("grub.cfg.j2").render(
        entries=entries, boot_uuid=boot_uuid, boot_mode=boot_mode, default=default, fallback=fallback,
        timeout=timeout, serial=serial,
    )
    return text.rstrip("\n") + "\n"


def early_config(boot_uuid: str, prefix: str) -> str:
    """The config built into the core image: find the boot filesystem, read its grub.cfg."""
    return (f"search --no-floppy --fs-uuid --set=root {boot_uuid}\n"
            f"set prefix=($root){prefix}\n")


def make_core(platform: str, output: Path, *, boot_uuid: str, prefix: str, boot_fs: str, workdir: Path,  # noqa: PLR0913 (grub-mkimage's inputs, each a keyword)
              grub_lib: Path = GRUB_LIB) -> bytes:
    """grub-mkimage for `platform` (i386-pc, x86_64-efi, arm64-efi) with the module tree under `grub_lib`,
    modules built in; returns the image's bytes."""
    modules_dir = grub_lib / platform
    if not (modules_dir / "moddep.lst").is_file():
        raise ImagekitError(f"no GRUB {platform} modules in {modules_dir} (moddep.lst missing)",
                            hint="run scripts/setup (grub-pc-bin, grub-efi-amd64-bin)" if grub_lib == GRUB_LIB
                            else f"the kernel profile's packages must include GRUB's {platform} modules "
                                 f"(grub-efi-{platform.removesuffix('-efi')}-bin)")
    config = workdir / f"grub-early-{platform}.cfg"
    config.write_text(early_config(boot_uuid, prefix))
    modules = [*PLATFORM_MODULES[platform], *COMMON_MODULES, FS_MODULES[boot_fs]]
    run(["grub-mkimage", "-O", platform, "-d", os.fspath(modules_dir), "-o", os.fspath(output),
         "-c", os.fspath(config), "-p", prefix, *modules])
    return output.read_bytes()


def install_bios(image: Path, core: bytes, core_offset: int, room: int) -> None:
    """boot.img into the MBR, core.img at core_offset (at most `room` bytes), pointers patched."""
    if len(core) > room:
        raise ImagekitError(f"GRUB core.img is {len(core)} bytes, the room for it is {room} bytes")
    first = core_offset // SECTOR
    sectors = -(-len(core) // SECTOR)
    core_img = bytearray(core)
    core_img[BLOCKLIST:BLOCKLIST + 8] = (first + 1).to_bytes(8, "little")
    core_img[BLOCKLIST + 8:BLOCKLIST + 10] = (sectors - 1).to_bytes(2, "little")
    boot = bytearray((GRUB_LIB / "i386-pc" / "boot.img").read_bytes())
    boot[KERNEL_SECTOR:KERNEL_SECTOR + 8] = first.to_bytes(8, "little")
    boot[DRIVE_CHECK:DRIVE_CHECK + 2] = b"\x90\x90"
    with open(image, "r+b") as f:
        f.seek(core_offset)
        f.write(core_img)
        f.seek(0)
        f.write(boot[:MBR_CODE])
