"""Which PV-GRUB AKI reads an image: hd0 (partitionless) or hd00 (the first MBR partition).

Shared by the GRUB 0.97 model (imagekit/pvgrub/) and the boot loaders (imagekit/boot/), so it depends
on neither. It is the layout table's AKI field (imagekit/recipe/layouts.py), defined there.
"""

from __future__ import annotations

from imagekit.recipe.layouts import Variant as Variant
