"""Which firmware boots an HVM image, and the QEMU arguments that give it.

- bios: SeaBIOS, the default firmware of QEMU's `pc` machine. It writes to the serial port only with
  `-machine graphics=off` (sercon); it then also carries what GRUB prints through the BIOS.
- uefi: OVMF as two pflash drives, the CODE read-only and a per-boot copy of the VARS (the firmware
  writes its boot options there; the host's template is never touched). OVMF's console is the serial
  port already.
Which: `--firmware`, else the build manifest (`layout`: mbr-bios, gpt-uefi, gpt-hybrid; or EC2's
`boot_mode`), else the disk itself (an ESP: uefi; GRUB's boot code in the MBR: bios; both: both).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from imagekit.image.disklabel import DiskLabel
from imagekit.manifest import Manifest
from imagekit.recipe.arch import ARCHES, Arch, ArchSpec
from imagekit.recipe.layouts import Firmware as Firmware  # the layout table's; boot's vocabulary too
from imagekit.recipe.layouts import firmwares_for_boot_mode
from imagekit.util.errors import UsageError

CHOICES = ("bios", "uefi", "both")
BOTH = (Firmware.BIOS, Firmware.UEFI)
OVMF_PAIRS = ARCHES[Arch.X86_64].firmware  # (CODE, VARS); each architecture's in recipe/arch.py (AAVMF: arm64)


@dataclass(frozen=True)
class Ovmf:
    code: Path
    vars_template: Path


def parse_choice(value: str) -> tuple[Firmware, ...]:
    if value not in CHOICES:
        raise UsageError(f"--firmware: {value!r} is not one of {', '.join(CHOICES)}")
    return BOTH if value == "both" else (Firmware(value),)


def from_manifest(manifest: Manifest | None) -> tuple[Firmware, ...] | None:
    """The firmware the build manifest implies; None when it does not describe an HVM image."""
    if not manifest:
        return None
    if (layout := manifest.layout) is not None and (firmwares := layout.spec.firmwares):
        return firmwares
    return firmwares_for_boot_mode(manifest.boot_mode) if manifest.boot_mode is not None else None


def from_label(label: DiskLabel) -> tuple[Firmware, ...] | None:
    """The firmware the disk itself is set up for; None for a disk neither could boot (a PV image)."""
    found = tuple(f for f, yes in ((Firmware.BIOS, label.grub_in_mbr), (Firmware.UEFI, label.esp)) if yes)
    return found or None


def choose(requested: str | None, manifest: Manifest | None, label: DiskLabel | None
           ) -> tuple[Firmware, ...] | None:
    """--firmware, else the manifest, else the disk; None means: not an HVM boot (PV-GRUB)."""
    virtualization = manifest.virtualization if manifest else None
    pv = virtualization not in (None, "hvm")
    if requested is not None and pv:
        raise UsageError(f"--firmware {requested}: the manifest says this is a {virtualization} image; "
                         "PV images boot through PV-GRUB, not firmware")
    if requested is not None:
        return parse_choice(requested)
    if pv:
        return None
    return from_manifest(manifest) or (from_label(label) if label else None)


def describe(firmwares: tuple[Firmware, ...]) -> str:
    return "both" if firmwares == BOTH else str(firmwares[0])


def find_ovmf(spec: ArchSpec = ARCHES[Arch.X86_64]) -> Ovmf:
    """The architecture's UEFI firmware on this host (OVMF, AAVMF for arm64); UsageError naming the package
    when it is not installed."""
    name = "OVMF" if spec.arch is Arch.X86_64 else f"{spec.arch.value} UEFI (AAVMF)"
    pairs = OVMF_PAIRS if spec.arch is Arch.X86_64 else spec.firmware
    for code, vars_template in pairs:
        if Path(code).is_file() and Path(vars_template).is_file():
            return Ovmf(Path(code), Path(vars_template))
    looked = ", ".join(code for code, _ in pairs)
    raise UsageError(f"--firmware uefi: no {name} firmware on this host (looked for {looked})",
                     hint=f"apt-get install {spec.firmware_package} (scripts/setup does)")


def firmware_argv(firmware: Firmware, workdir: Path, spec: ArchSpec = ARCHES[Arch.X86_64]) -> list[str]:
    """QEMU arguments for `firmware`; for OVMF (AAVMF), a fresh copy of the VARS template in `workdir`."""
    if firmware is Firmware.BIOS:
        return []  # SeaBIOS is the pc machine's own firmware
    ovmf = find_ovmf(spec)
    nvram = workdir / f"OVMF_VARS.{firmware}.fd"
    shutil.copyfile(ovmf.vars_template, nvram)
    return ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={ovmf.code}",
            "-drive", f"if=pflash,format=raw,unit=1,file={nvram}"]
