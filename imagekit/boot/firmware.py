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
from enum import StrEnum
from pathlib import Path

from imagekit.boot.disklabel import DiskLabel
from imagekit.manifest import Manifest
from imagekit.util.errors import UsageError


class Firmware(StrEnum):
    BIOS = "bios"
    UEFI = "uefi"


CHOICES = ("bios", "uefi", "both")
BOTH = (Firmware.BIOS, Firmware.UEFI)
LAYOUTS: dict[str, tuple[Firmware, ...]] = {"mbr-bios": (Firmware.BIOS,), "gpt-uefi": (Firmware.UEFI,),
                                            "gpt-hybrid": BOTH}
BOOT_MODES: dict[str, tuple[Firmware, ...]] = {"legacy-bios": (Firmware.BIOS,), "uefi": (Firmware.UEFI,),
                                               "uefi-preferred": BOTH}
# (CODE, VARS) pairs, as Debian (ovmf), Fedora (edk2-ovmf) and Arch (edk2-ovmf) install them.
OVMF_PAIRS = (
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
    ("/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"),
    ("/usr/share/edk2/x64/OVMF_CODE.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd"),
)


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
    if (layout := manifest.layout) in LAYOUTS:
        return LAYOUTS[layout]
    if (mode := manifest.boot_mode) in BOOT_MODES:
        return BOOT_MODES[mode]
    return None


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


def find_ovmf() -> Ovmf:
    """OVMF on this host; UsageError naming the package when it is not installed."""
    for code, vars_template in OVMF_PAIRS:
        if Path(code).is_file() and Path(vars_template).is_file():
            return Ovmf(Path(code), Path(vars_template))
    looked = ", ".join(code for code, _ in OVMF_PAIRS)
    raise UsageError(f"--firmware uefi: no OVMF firmware on this host (looked for {looked})",
                     hint="apt-get install ovmf (scripts/setup does)")


def firmware_argv(firmware: Firmware, workdir: Path) -> list[str]:
    """QEMU arguments for `firmware`; for OVMF, a fresh copy of the VARS template in `workdir`."""
    if firmware is Firmware.BIOS:
        return []  # SeaBIOS is the pc machine's own firmware
    ovmf = find_ovmf()
    nvram = workdir / f"OVMF_VARS.{firmware}.fd"
    shutil.copyfile(ovmf.vars_template, nvram)
    return ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={ovmf.code}",
            "-drive", f"if=pflash,format=raw,unit=1,file={nvram}"]
