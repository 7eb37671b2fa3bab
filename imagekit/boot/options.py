"""What `imagekit boot` is asked to do: the options every loader reads (harness.py's PV boot under QEMU,
hvm_boot.py's firmware boot, xen.py's `xl create`). Apart from the harness, which calls the loaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from imagekit.boot.attach import AttachOptions
from imagekit.boot.overlay import ImageFile
from imagekit.boot.pvgrub import Variant
from imagekit.image.disklabel import DiskLabel
from imagekit.manifest import Manifest


@dataclass(frozen=True)
class BootOptions:
    image: Path
    loader: str | None = None  # None: pvgrub097 (GRUB 0.97 + Xen's loader rules) for hd0/hd00 images
    hypervisor: str = "qemu"
    variant: Variant | None = None  # None: from the partition table
    accel: str | None = None
    memory_mb: int = 1024
    cpus: int = 2
    timeout: float = 300.0
    silence: float = 120.0  # stop when the console has been quiet this long
    serial_log: Path | None = None  # default: <image>.serial.log beside the image
    attach: AttachOptions = field(default_factory=AttachOptions)  # instance store, data volumes, user-data (attach.py)
    firmware: str | None = None  # HVM: bios, uefi or both (default: from the manifest or the disk)
    disk_interface: str | None = None  # HVM: nvme (default), virtio or ide; PV images boot with virtio
    aki_version: str | None = None  # --loader pvgrub097: the PV-GRUB version (default: what `imagekit aki` registers)
    fast_prepare: bool = True  # False: libguestfs even where debugfs could edit a copy (scripts/bench-boot's old path)


@dataclass(frozen=True)
class BootTarget:
    """The image one boot tests, read once by the harness: the file, its build manifest (None without one)
    and its disk label; the loaders take it instead of reading the manifest again."""

    image: ImageFile
    manifest: Manifest | None
    label: DiskLabel
