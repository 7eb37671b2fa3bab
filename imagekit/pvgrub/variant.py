"""Which PV-GRUB AKI reads an image: hd0 (partitionless) or hd00 (the first MBR partition).

Shared by the GRUB 0.97 model (imagekit/pvgrub/) and the boot loaders (imagekit/boot/), so it depends
on neither.
"""

from __future__ import annotations

from enum import StrEnum


class Variant(StrEnum):
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
