"""HVM disks: the partition table, the firmware partitions and GRUB 2, after the filesystems are planned.

    write_table        MBR (mbr-bios: first partition active) or GPT (BIOS boot, ESP, filesystems)
    install_bootloader core.img into the MBR gap or BIOS boot partition; BOOTX64.EFI onto a new FAT32 ESP
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from imagekit.bootloader.grub2 import install_bios, make_core
from imagekit.image.filesystem import make_esp
from imagekit.image.layout import ALIGN, FirmwarePart, Placement
from imagekit.image.partition import GPT_NAMES, write_gpt, write_mbr
from imagekit.image.partition import set_gpt_ids as _set_gpt_ids
from imagekit.recipe.model import Layout, Recipe
from imagekit.rootfs.configure import ESP_MOUNTPOINT, FsIds

# GPT partition type GUIDs (UEFI spec; GRUB's BIOS boot; the Discoverable Partitions spec's generic Linux data)
BIOS_BOOT_TYPE = "21686148-6449-6E6F-744E-656564454649"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
ESP_PATH = "EFI/BOOT/BOOTX64.EFI"  # the removable-media path: found without an NVRAM boot entry


def write_table(recipe: Recipe, image: Path, firmware: list[FirmwarePart], placements: list[Placement],
                *, derive: uuid.UUID | None) -> None:
    """The layout's partition table; with `derive` (reproducible) its GUIDs or disk signature from it."""
    if not recipe.layout.gpt:
        write_mbr(image, placements, disk_id=int(derive.hex[:8], 16) if derive else None)
        return
    write_gpt(image, firmware, placements)
    if derive is not None:
        count = len(firmware) + len(placements)
        _set_gpt_ids(image, str(uuid.uuid5(derive, "disk")),
                     [str(uuid.uuid5(derive, f"partition-{n}")) for n in range(1, count + 1)])


def install_bootloader(recipe: Recipe, image: Path, firmware: list[FirmwarePart], ids: FsIds, *, workdir: Path,
                       epoch: int | None) -> None:
    """GRUB 2 for the layout's firmware: BIOS (MBR gap or BIOS boot partition), UEFI (ESP), or both."""
    boot_uuid, esp_id = ids.boot_fs_uuid, ids.esp_id
    prefix = "/grub" if recipe.separate_boot else "/boot/grub"
    boot_fs = recipe.boot_fs.type.value
    if recipe.layout.bios:
        core = make_core("i386-pc", workdir / "core.img", boot_uuid=boot_uuid, prefix=prefix, boot_fs=boot_fs,
                         workdir=workdir)
        bios_boot = next((p for p in firmware if p.kind == "bios-boot"), None)
        if bios_boot is not None:
            install_bios(image, core, bios_boot.offset, bios_boot.size)
        else:  # the MBR gap: sector 1 up to the first partition
            install_bios(image, core, 512, ALIGN - 512)
    esp = next((p for p in firmware if p.kind == "esp"), None)
    if esp is not None and recipe.esp is not None and esp_id is not None:
        efi = workdir / "BOOTX64.EFI"
        make_core("x86_64-efi", efi, boot_uuid=boot_uuid, prefix=prefix, boot_fs=boot_fs, workdir=workdir)
        make_esp(esp, image, recipe.esp.label, esp_id, {ESP_PATH: efi}, epoch=epoch)


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
    if recipe.layout in (Layout.HD0, Layout.HD00):
        return []
    records: list[dict[str, Any]] = []
    for p in firmware:
        record: dict[str, Any] = {"number": p.partition, "kind": p.kind, "name": GPT_NAMES[p.kind],
                                  "type": BIOS_BOOT_TYPE if p.kind == "bios-boot" else ESP_TYPE,
                                  "offset": p.offset, "size": p.size}
        if p.kind == "esp" and recipe.esp is not None:
            record["filesystem"] = {"type": "vfat", "label": recipe.esp.label, "uuid": esp_id,
                                    "mountpoint": ESP_MOUNTPOINT, "files": [f"/{ESP_PATH}"]}
        records.append(record)
    for place in placements:
        records.append({"number": place.partition, "kind": "filesystem", "name": GPT_NAMES[place.mountpoint],
                        "type": LINUX_TYPE if recipe.layout.gpt else "83", "mountpoint": place.mountpoint,
                        "offset": place.offset, "size": place.size})
    return records
