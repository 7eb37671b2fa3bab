"""The disk layouts: one `LayoutSpec` per layout, the one table every stage reads.

What a layout is (virtualization, partition table, firmware partitions, bootloader and its config
file, the PV-GRUB AKI, EC2's boot mode, what the boot test runs) is said here once; the recipe's
validation, the image writer, configure, boot, publish, lint and the CLI's `--layout` list read it
from `LAYOUTS` (or `Layout.spec`). Adding a layout: a `Layout` member and its `LAYOUTS` entry, then
only the code that is new for it (docs/architecture.md, "Add a layout"); tests/test_layouts.py walks
the table and fails on an entry that forgets a field.

Kept free of heavy imports: the CLI's choice lists (`imagekit --help`) read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

FirmwareKind = Literal["bios-boot", "esp"]  # a partition the firmware's bootloader needs, before the filesystems
MENU_LST = "/boot/grub/menu.lst"  # PV-GRUB's config, as the running system names it
GRUB_CFG = "/boot/grub/grub.cfg"  # GRUB 2's


class Virtualization(StrEnum):
    PARAVIRTUAL = "paravirtual"
    HVM = "hvm"


class BootMode(StrEnum):
    """EC2's RegisterImage BootMode."""

    LEGACY_BIOS = "legacy-bios"
    UEFI = "uefi"
    UEFI_PREFERRED = "uefi-preferred"


class PartitionTable(StrEnum):
    """The disk label; the values are parted's and libguestfs's names for it."""

    MBR = "msdos"
    GPT = "gpt"


class Bootloader(StrEnum):
    PVGRUB = "pv-grub"  # EC2's PV-GRUB AKI (GRUB 0.97) reads the image's menu.lst; nothing is installed
    GRUB2 = "grub2"  # GRUB 2 installed for each of the layout's firmwares (i386-pc, x86_64-efi), reading grub.cfg


class Firmware(StrEnum):
    """What boots an HVM image (and what `imagekit boot` gives QEMU): SeaBIOS or OVMF."""

    BIOS = "bios"
    UEFI = "uefi"


class Variant(StrEnum):
    """Which PV-GRUB AKI reads an image: hd0 (partitionless) or hd00 (the first MBR partition).
    (imagekit/pvgrub/ and the boot loaders use it as pvgrub/variant.py's Variant.)"""

    HD0 = "hd0"  # partitionless image: the filesystem is the whole disk
    HD00 = "hd00"  # partitioned image (MBR): the first partition holds /boot/grub/menu.lst

    @property
    def grub_root(self) -> str:
        """The device as GRUB 2 names it."""
        return "(hd0)" if self is Variant.HD0 else "(hd0,msdos1)"

    @property
    def legacy_root(self) -> str:
        """The device as PV-GRUB (GRUB legacy) names it."""
        return "(hd0)" if self is Variant.HD0 else "(hd0,0)"


class Layout(StrEnum):
    HD0 = "hd0"  # partitionless: the filesystem is the whole disk, PV-GRUB root (hd0)
    HD00 = "hd00"  # MBR, first partition is the boot partition, PV-GRUB root (hd0,0)
    MBR_BIOS = "mbr-bios"  # HVM: MBR, GRUB 2 i386-pc in the MBR gap
    GPT_UEFI = "gpt-uefi"  # HVM: GPT, EFI system partition with GRUB 2 x86_64-efi as EFI/BOOT/BOOTX64.EFI
    GPT_HYBRID = "gpt-hybrid"  # HVM: GPT, BIOS boot partition and ESP: boots both ways
    GPT_BIOS = "gpt-bios"  # HVM: GPT, BIOS boot partition with GRUB 2 i386-pc: legacy BIOS past MBR's 2 TiB

    @property
    def spec(self) -> LayoutSpec:
        return LAYOUTS[self]

    # Shorthands for the table's answers (the table is the only place they are decided).
    @property
    def virtualization(self) -> Virtualization:
        return self.spec.virtualization

    @property
    def boot_mode(self) -> BootMode | None:
        """None for PV (PV-GRUB, no firmware)."""
        return self.spec.boot_mode

    @property
    def partitioned(self) -> bool:
        return self.spec.partitioned

    @property
    def gpt(self) -> bool:
        return self.spec.table is PartitionTable.GPT

    @property
    def bios(self) -> bool:
        """GRUB 2 for BIOS: boot.img in the MBR, core.img in the MBR gap or the BIOS boot partition."""
        return Firmware.BIOS in self.spec.firmwares

    @property
    def uefi(self) -> bool:
        """An EFI system partition with EFI/BOOT/BOOTX64.EFI."""
        return self.spec.esp


@dataclass(frozen=True)
class LayoutSpec:
    """Everything imagekit knows about one layout. Every field is required: a new entry states each."""

    layout: Layout
    virtualization: Virtualization
    table: PartitionTable | None  # None: partitionless, the filesystem is the whole disk
    firmware_parts: tuple[FirmwareKind, ...]  # partitions before the filesystems, in disk order
    bootloader: Bootloader
    config: str  # the bootloader's config file, as the running system names it
    aki: Variant | None  # PV: the PV-GRUB AKI that reads the image (registration and the boot test's loader)
    boot_mode: BootMode | None  # HVM: EC2's BootMode (the manifest's boot_mode)
    firmwares: tuple[Firmware, ...]  # HVM: what GRUB 2 is installed for and what the boot test runs, in order
    lvm: bool  # may the recipe put its root in LVM ([lvm]: /boot on the first partition, a PV after it)

    @property
    def partitioned(self) -> bool:
        return self.table is not None

    @property
    def esp(self) -> bool:
        """An EFI system partition (sized by the recipe's [filesystems.esp])."""
        return "esp" in self.firmware_parts

    @property
    def pv(self) -> bool:
        return self.virtualization is Virtualization.PARAVIRTUAL


LAYOUTS: dict[Layout, LayoutSpec] = {spec.layout: spec for spec in (
    LayoutSpec(Layout.HD0, Virtualization.PARAVIRTUAL, table=None, firmware_parts=(), bootloader=Bootloader.PVGRUB,
               config=MENU_LST, aki=Variant.HD0, boot_mode=None, firmwares=(), lvm=False),
    LayoutSpec(Layout.HD00, Virtualization.PARAVIRTUAL, table=PartitionTable.MBR, firmware_parts=(),
               bootloader=Bootloader.PVGRUB, config=MENU_LST, aki=Variant.HD00, boot_mode=None, firmwares=(),
               lvm=True),
    LayoutSpec(Layout.MBR_BIOS, Virtualization.HVM, table=PartitionTable.MBR, firmware_parts=(),
               bootloader=Bootloader.GRUB2, config=GRUB_CFG, aki=None, boot_mode=BootMode.LEGACY_BIOS,
               firmwares=(Firmware.BIOS,), lvm=False),
    LayoutSpec(Layout.GPT_UEFI, Virtualization.HVM, table=PartitionTable.GPT, firmware_parts=("esp",),
               bootloader=Bootloader.GRUB2, config=GRUB_CFG, aki=None, boot_mode=BootMode.UEFI,
               firmwares=(Firmware.UEFI,), lvm=False),
    LayoutSpec(Layout.GPT_HYBRID, Virtualization.HVM, table=PartitionTable.GPT, firmware_parts=("bios-boot", "esp"),
               bootloader=Bootloader.GRUB2, config=GRUB_CFG, aki=None, boot_mode=BootMode.UEFI_PREFERRED,
               firmwares=(Firmware.BIOS, Firmware.UEFI), lvm=False),
    LayoutSpec(Layout.GPT_BIOS, Virtualization.HVM, table=PartitionTable.GPT, firmware_parts=("bios-boot",),
               bootloader=Bootloader.GRUB2, config=GRUB_CFG, aki=None, boot_mode=BootMode.LEGACY_BIOS,
               firmwares=(Firmware.BIOS,), lvm=False),
)}

LAYOUT_NAMES = tuple(layout.value for layout in LAYOUTS)  # the CLI's --layout choices, in table order
PV_LAYOUT_NAMES = tuple(layout.value for layout, spec in LAYOUTS.items() if spec.aki is not None)


def aki_for_table(table: PartitionTable | None) -> Variant | None:
    """The PV-GRUB AKI that reads a disk with this label (None: no PV-GRUB reads it, e.g. GPT)."""
    return next((spec.aki for spec in LAYOUTS.values() if spec.aki is not None and spec.table == table), None)


def firmwares_for_boot_mode(mode: str) -> tuple[Firmware, ...] | None:
    """The firmware an image registered with EC2 BootMode `mode` boots with (None: not a boot mode)."""
    return next((spec.firmwares for spec in LAYOUTS.values() if spec.boot_mode is not None
                 and spec.boot_mode.value == mode), None)
