"""HVM disks: the partition table, the firmware partitions and GRUB 2, after the filesystems are planned.

    write_table        MBR (mbr-bios: first partition active) or GPT (BIOS boot, ESP, filesystems)
    install_bootloader core.img into the MBR gap or BIOS boot partition; BOOTX64.EFI onto a new FAT32 ESP
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from imagekit.bootloader.grub2 import install_bios, make_core
from imagekit.image.context import BuildContext
from imagekit.image.disklabel import BIOS_BOOT_TYPE, ESP_TYPE, LINUX_TYPE, MBR_LINUX
from imagekit.image.filesystem import make_esp
from imagekit.image.layout import ALIGN, FirmwarePart, Placement
from imagekit.image.partition import GPT_NAMES, write_gpt, write_mbr
from imagekit.image.partition import set_gpt_ids as _set_gpt_ids
from imagekit.recipe.arch import ARCHES
from imagekit.recipe.layouts import Bootloader, Firmware, PartitionTable
from imagekit.recipe.model import Recipe
from imagekit.rootfs.configure import ESP_MOUNTPOINT

ESP_PATH = "EFI/BOOT/BOOTX64.EFI"  # the removable-media path: found without an NVRAM boot entry (x86_64's;
# each architecture's is recipe/arch.py's ArchSpec.esp_path, e.g. EFI/BOOT/BOOTAA64.EFI)


def write_table(recipe: Recipe, image: Path, firmware: list[FirmwarePart], placements: list[Placement],
                *, derive: uuid.UUID | None) -> None:
    """The layout's partition table; with `derive` (reproducible) its GUIDs or disk signature from it."""
    if recipe.layout.spec.table is not PartitionTable.GPT:
        write_mbr(image, placements, disk_id=int(derive.hex[:8], 16) if derive else None)
        return
    write_gpt(image, firmware, placements)
    if derive is not None:
        count = len(firmware) + len(placements)
        _set_gpt_ids(image, str(uuid.uuid5(derive, "disk")),
                     [str(uuid.uuid5(derive, f"partition-{n}")) for n in range(1, count + 1)])


def install_bootloader(ctx: BuildContext) -> None:
    """GRUB 2 for the layout's firmware: BIOS (MBR gap or BIOS boot partition), UEFI (ESP), or both, into
    the partial image. The staged root's GRUB module tree is what a foreign architecture's EFI image is
    made from."""
    recipe, image, firmware, workdir, epoch = ctx.recipe, ctx.partial, ctx.firmware, ctx.workdir, ctx.epoch
    boot_uuid, esp_id = ctx.ids.boot_fs_uuid, ctx.ids.esp_id
    prefix = "/grub" if recipe.separate_boot else "/boot/grub"
    boot_fs = recipe.boot_fs.type.value
    if Firmware.BIOS in recipe.layout.spec.firmwares:
        core = make_core("i386-pc", workdir / "core.img", boot_uuid=boot_uuid, prefix=prefix, boot_fs=boot_fs,
                         workdir=workdir)
        bios_boot = next((p for p in firmware if p.kind == "bios-boot"), None)
        if bios_boot is not None:
            install_bios(image, core, bios_boot.offset, bios_boot.size)
        else:  # the MBR gap: sector 1 up to the first partition
            install_bios(image, core, 512, ALIGN - 512)
    esp = next((p for p in firmware if p.kind == "esp"), None)
    if esp is not None and recipe.esp is not None and esp_id is not None:
        spec = ARCHES[recipe.arch]
        assert spec.grub_platform is not None
        efi = workdir / spec.esp_path.rsplit("/", 1)[-1]
        make_core(spec.grub_platform, efi, boot_uuid=boot_uuid, prefix=prefix, boot_fs=boot_fs, workdir=workdir,
                  grub_lib=spec.grub_lib(ctx.tree.path))
        make_esp(esp, image, recipe.esp.label, esp_id, {spec.esp_path: efi}, epoch=epoch)


def esp_filesystem_records(recipe: Recipe, firmware: list[FirmwarePart], esp_id: str | None) -> list[dict[str, Any]]:
    """The manifest's `filesystems` entry for the ESP (mounted at /boot/efi by fstab), in the shape of the others."""
    esp = next((p for p in firmware if p.kind == "esp"), None)
    if esp is None or recipe.esp is None:
        return []
    return [{"mountpoint": ESP_MOUNTPOINT, "type": "vfat", "label": recipe.esp.label, "uuid": esp_id,
             "partition": esp.partition, "offset": esp.offset, "size": esp.size, "usage": {}}]


def partition_records(recipe: Recipe, firmware: list[FirmwarePart], placements: list[Placement],
                      esp_id: str | None) -> list[dict[str, Any]]:
    """The manifest's `partitions`: every partition of an HVM disk, firmware ones included."""
    spec = recipe.layout.spec
    if spec.bootloader is not Bootloader.GRUB2:
        return []
    records: list[dict[str, Any]] = []
    for p in firmware:
        record: dict[str, Any] = {"number": p.partition, "kind": p.kind, "name": GPT_NAMES[p.kind],
                                  "type": BIOS_BOOT_TYPE if p.kind == "bios-boot" else ESP_TYPE,
                                  "offset": p.offset, "size": p.size}
        if p.kind == "esp" and recipe.esp is not None:
            record["filesystem"] = {"type": "vfat", "label": recipe.esp.label, "uuid": esp_id,
                                    "mountpoint": ESP_MOUNTPOINT, "files": [f"/{ARCHES[recipe.arch].esp_path}"]}
        records.append(record)
    for place in placements:
        kind = LINUX_TYPE if spec.table is PartitionTable.GPT else f"{MBR_LINUX:x}"
        records.append({"number": place.partition, "kind": "filesystem", "name": GPT_NAMES[place.mountpoint],
                        "type": kind, "mountpoint": place.mountpoint, "offset": place.offset, "size": place.size})
    return records
