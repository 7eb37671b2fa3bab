"""What a boot's preparation hands the boot: the disk as PV-GRUB (or the firmware) sees it, the probe and
console edits made on the overlay or the copy, and the files the loader reads. Every preparer returns one
(pv.py, hvm.py, fastprep.py's cache, attach.py and metadata.py's additions); the loaders read it."""

from __future__ import annotations

from dataclasses import dataclass

from imagekit.boot import guest, probe
from imagekit.boot.direct import DirectBoot
from imagekit.boot.pvgrub097 import Grub097Boot


@dataclass(frozen=True)
class Prepared:
    disk: guest.Disk
    menu_text: str | None
    kind: probe.ProbeKind
    added: tuple[str, ...]
    direct: DirectBoot | None
    notes: tuple[str, ...]
    grub_cfg: str | None = None  # HVM: GRUB 2's config in the mounted overlay (the NIC's net.ifnames=0 goes there)
    grub097: Grub097Boot | None = None  # --loader pvgrub097: the bytes GRUB 0.97 read, as Xen would load them
    prepared_with: str = "libguestfs"  # or "debugfs", "debugfs-cached" (imagekit/boot/fastprep.py)
