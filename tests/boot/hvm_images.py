"""Small HVM disks for the boot tests, made rootless with real tools (sfdisk, mkfs, grub-mkimage, mtools).

- a blank disk and a GPT disk with an empty ESP: firmware-level failures, no GRUB needed;
- `make_uefi` / `make_bios`: the host's cloud kernel and busybox on ext4, booted by GRUB 2 from an ESP
  (BOOTX64.EFI) or from the MBR (boot.img + core.img in the gap after it, patched as grub-bios-setup
  does): independent of imagekit's image builder, so each GRUB 2 failure can be set up exactly.
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

from tests.boot.conftest import INITRD, KERNEL, mkfs, userland

MIB = 1024 * 1024
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
ROOT_UUID = "11111111-2222-4333-8444-555555555555"
WRONG_UUID = "99999999-2222-4333-8444-555555555555"  # for root= or a search that must fail
GRUB_MODULES = ("ext2", "linux", "normal", "search", "search_fs_uuid", "configfile", "echo", "test", "gzio")
RESCUE_MODULES = ("ext2", "search", "search_fs_uuid")  # no normal (nor configfile, which needs it)
BIOS_BOOT_TYPE = "21686148-6449-6E6F-744E-656564454649"
EARLY_CFG = "search --no-floppy --fs-uuid --set=root {uuid}\nset prefix=($root)/boot/grub\n"
GRUB_CFG = """set timeout=1
menuentry 'Small HVM' {{
\tlinux {kernel} root=UUID={root} ro console=tty0 console=hvc0
\tinitrd /boot/initrd.img
}}
"""


def grub_cfg(kernel: str = "/boot/vmlinuz", root: str = ROOT_UUID) -> str:
    return GRUB_CFG.format(kernel=kernel, root=root)


def make_blank(dest: Path, size_mib: int = 16) -> Path:
    """All zeros: no partition table, no boot code."""
    with open(dest, "wb") as f:
        f.truncate(size_mib * MIB)
    return dest


def mkfat(dest: Path, offset_mib: int, size_mib: int) -> None:
    """FAT32 with 512-byte clusters (mtools wants more than 65525 clusters for FAT32)."""
    subprocess.run(["mkfs.fat", "-F", "32", "-s", "1", "--offset", str(offset_mib * 2048), str(dest),
                    str(size_mib * 1024)], check=True, capture_output=True)


def make_empty_esp(dest: Path, size_mib: int = 64) -> Path:
    """A GPT disk whose one partition is an EFI System Partition with an empty FAT32 filesystem."""
    make_blank(dest, size_mib)
    subprocess.run(["sfdisk", "-q", str(dest)], check=True,
                   input=f"label: gpt\nstart=2048, size={size_mib - 2}MiB, type={ESP_TYPE}\n".encode())
    mkfat(dest, 1, size_mib - 2)
    return dest


def root_tree(dest: Path, cfg: str) -> Path:
    """busybox userland, the host's cloud kernel and initrd, /boot/grub/grub.cfg."""
    assert KERNEL and INITRD
    userland(dest)
    (dest / "boot/grub").mkdir(parents=True)
    (dest / "boot/vmlinuz").write_bytes(Path(KERNEL).read_bytes())
    (dest / "boot/initrd.img").write_bytes(Path(INITRD).read_bytes())
    (dest / "boot/grub/grub.cfg").write_text(cfg)
    return dest


def grub_image(fmt: str, out: Path, modules: tuple[str, ...], uuid: str = ROOT_UUID) -> Path:
    """GRUB's core image; its embedded config finds the root filesystem by `uuid` and sets the prefix."""
    early = out.with_suffix(".cfg")
    early.write_text(EARLY_CFG.format(uuid=uuid))
    subprocess.run(["grub-mkimage", "-O", fmt, "-o", str(out), "-c", str(early), "-p", "/boot/grub", *modules],
                   check=True)
    return out


def partition(dest: Path, size_mib: int, table: str) -> None:
    make_blank(dest, size_mib)
    subprocess.run(["sfdisk", "-q", str(dest)], check=True, input=table.encode())


def install_esp(dest: Path, offset_mib: int, loader: bool) -> None:
    """FAT32 ESP at `offset_mib` (64 MiB) with EFI/BOOT/BOOTX64.EFI, unless `loader` is False."""
    mkfat(dest, offset_mib, 64)
    esp = f"{dest}@@{offset_mib}M"
    env = {"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}
    subprocess.run(["mmd", "-i", esp, "::EFI", "::EFI/BOOT"], check=True, env=env)
    if loader:
        efi = grub_image("x86_64-efi", dest.with_suffix(".efi"), ("part_gpt", "fat", *GRUB_MODULES))
        subprocess.run(["mcopy", "-i", esp, str(efi), "::EFI/BOOT/BOOTX64.EFI"], check=True, env=env)


def make_uefi(dest: Path, cfg: str, loader: bool = True) -> Path:
    """gpt-uefi: a 64 MiB ESP, then the ext4 root."""
    partition(dest, 226, f"label: gpt\nstart=1MiB, size=64MiB, type={ESP_TYPE}\nsize=160MiB, type={LINUX_TYPE}\n")
    install_esp(dest, 1, loader)
    mkfs(root_tree(dest.with_suffix(".tree"), cfg), dest, 160, "root", 65 * MIB, ROOT_UUID)
    return dest


def embed_grub(dest: Path, core_img: Path, core_lba: int) -> None:
    """What grub-bios-setup does: boot.img's code in the MBR (the partition table kept), pointing at
    core.img written at `core_lba`; core.img's first blocklist covering the rest of it."""
    boot = bytearray(Path("/usr/lib/grub/i386-pc/boot.img").read_bytes())
    core = bytearray(core_img.read_bytes())
    core += bytes(-len(core) % 512)
    sectors = len(core) // 512
    room = 2047 if core_lba == 1 else 2048  # the gap after the MBR, or a 1 MiB BIOS boot partition
    assert sectors <= room, "core.img does not fit where it goes"
    with open(dest, "r+b") as f:
        mbr = f.read(512)
        boot[0x1B8:0x200] = mbr[0x1B8:0x200]  # disk signature, partition table, 0x55AA
        struct.pack_into("<Q", boot, 0x5C, core_lba)  # GRUB_BOOT_MACHINE_KERNEL_SECTOR
        boot[0x66:0x68] = b"\x90\x90"  # GRUB_BOOT_MACHINE_DRIVE_CHECK: a hard disk, not a floppy
        struct.pack_into("<QHH", core, 0x1F4, core_lba + 1, sectors - 1, 0x820)  # diskboot's blocklist
        f.seek(0)
        f.write(boot)
        f.seek(core_lba * 512)
        f.write(core)


def make_bios(dest: Path, cfg: str, search_uuid: str = ROOT_UUID) -> Path:
    """mbr-bios: GRUB 2 in the MBR and the gap after it, one bootable ext4 root partition. With another
    `search_uuid`, core.img finds no root and must load normal.mod from its prefix (as grub-install's does)."""
    partition(dest, 161, "label: dos\nstart=1MiB, type=83, bootable\n")
    mkfs(root_tree(dest.with_suffix(".tree"), cfg), dest, 160, "root", MIB, ROOT_UUID)
    modules = GRUB_MODULES if search_uuid == ROOT_UUID else RESCUE_MODULES
    embed_grub(dest, grub_image("i386-pc", dest.with_suffix(".core"), ("biosdisk", "part_msdos", *modules),
                                search_uuid), 1)
    return dest


def make_hybrid(dest: Path, cfg: str) -> Path:
    """gpt-hybrid: a BIOS boot partition (core.img; boot.img in the protective MBR), an ESP, the ext4 root."""
    partition(dest, 228, f"label: gpt\nstart=1MiB, size=1MiB, type={BIOS_BOOT_TYPE}\n"
              f"size=64MiB, type={ESP_TYPE}\nsize=160MiB, type={LINUX_TYPE}\n")
    install_esp(dest, 2, loader=True)
    mkfs(root_tree(dest.with_suffix(".tree"), cfg), dest, 160, "root", 66 * MIB, ROOT_UUID)
    embed_grub(dest, grub_image("i386-pc", dest.with_suffix(".core"), ("biosdisk", "part_gpt", *GRUB_MODULES)),
               2048)
    return dest
