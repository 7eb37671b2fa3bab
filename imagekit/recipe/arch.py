"""The architectures imagekit builds for, as one table the stages read: arm64 is data here, plus the
few lines a stage must branch on.

    ARCHES[Arch.ARM64].grub_platform   -> "arm64-efi"
    spec_of("arm64").efi_file          -> "BOOTAA64.EFI"

Each `ArchSpec` says what a stage needs of an architecture: Debian's name for it (mmdebstrap
--architectures), EC2's (RegisterImage Architecture), the default kernel profile, GRUB's EFI platform and
the removable-media file name on the ESP, where GRUB's module tree comes from (the host's /usr/lib/grub
for the host's own architecture, the bootstrapped tree's for a foreign one: never a dpkg architecture
added to the host), the QEMU that boots it with its machine and firmware, the consoles (QEMU's and
EC2's), and what it boots (firmware, Xen PV): the layouts it can take follow from the layout table. i386 is
listed so the recipe loader can name it, but not supported.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from imagekit.recipe.layouts import LAYOUTS, Firmware, Layout, LayoutSpec


class Arch(StrEnum):
    X86_64 = "x86_64"
    I386 = "i386"
    ARM64 = "arm64"


# The host's architecture as `uname -m` says it, to Arch: what runs without emulation.
HOST_MACHINES = {"x86_64": Arch.X86_64, "amd64": Arch.X86_64, "aarch64": Arch.ARM64, "arm64": Arch.ARM64}


@dataclass(frozen=True)
class ArchSpec:
    arch: Arch
    debian: str  # dpkg's architecture (mmdebstrap --architectures)
    ec2: str  # RegisterImage's Architecture
    profile: str  # the default kernel profile (kernels/NAME.toml)
    elf_machine: str  # kernel/elf.py's name of the kernel's machine
    grub_platform: str | None  # GRUB 2's EFI platform (grub-mkimage -O); None: no UEFI boot
    efi_file: str | None  # EFI/BOOT/<this> on the ESP: the firmware's removable-media path
    qemu: str  # qemu-system-*
    machine: str  # -machine
    cpu: str | None  # -cpu (None: QEMU's default for the machine)
    firmware: tuple[tuple[str, str], ...]  # UEFI firmware (CODE, VARS) pairs, first found wins
    firmware_package: str  # the Debian package that installs `firmware`
    uefi_name: str  # what boot reports call that firmware (OVMF, AAVMF)
    qemu_console: str  # the serial console under `machine`
    ec2_console: str  # the serial console on EC2 (get-console-output)
    firmwares: frozenset[Firmware]  # what its HVM instances boot with (Graviton: UEFI only)
    xen_pv: bool  # EC2 runs it as a Xen PV guest through PV-GRUB (the PV layouts)
    refused: str = ""  # why the architecture is not supported yet ("" when it is)
    qemu_user: str = ""  # binfmt_misc entry of qemu-user for a foreign bootstrap (qemu-aarch64)
    # grub.cfg drives the serial port itself (`serial`, `terminal_output serial console`); False: GRUB keeps
    # the firmware's console, which is the serial port under AAVMF and on Graviton (arm64-efi has no com0)
    grub_serial: bool = True
    nitro_only: bool = False  # no Xen instance types (Graviton): lint's HVM target is nitro

    @property
    def esp_path(self) -> str:
        """The removable-media path on the ESP, e.g. EFI/BOOT/BOOTAA64.EFI."""
        assert self.efi_file is not None
        return f"EFI/BOOT/{self.efi_file}"

    def grub_lib(self, tree: Path | None) -> Path:
        """GRUB's module tree for this architecture: the host's own, or the bootstrapped tree's (foreign)."""
        if self.foreign or tree is None:
            return (tree or Path("/")) / "usr/lib/grub"
        return Path("/usr/lib/grub")

    def boots(self, layout: LayoutSpec) -> bool:
        """Whether an image of this layout boots on this architecture: every firmware the layout is set up
        for, and Xen PV for a PV layout."""
        return (self.xen_pv or not layout.pv) and set(layout.firmwares) <= self.firmwares

    @property
    def layouts(self) -> frozenset[str]:
        """The layouts (recipe.model.Layout values) this architecture can boot, from the layout table."""
        return frozenset(layout.value for layout, spec in LAYOUTS.items() if self.boots(spec))

    @property
    def foreign(self) -> bool:
        """Not the host's architecture: a bootstrap runs its maintainer scripts under qemu-user."""
        return HOST_MACHINES.get(platform.machine()) is not self.arch


# (CODE, VARS) pairs, as Debian (ovmf), Fedora (edk2-ovmf) and Arch (edk2-ovmf) install them.
OVMF_PAIRS = (
    ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
    ("/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"),
    ("/usr/share/edk2/x64/OVMF_CODE.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd"),
)
# AAVMF (edk2 for arm64), as Debian (qemu-efi-aarch64), Fedora (edk2-aarch64) and Arch (edk2-aarch64) install it.
AAVMF_PAIRS = (
    ("/usr/share/AAVMF/AAVMF_CODE.fd", "/usr/share/AAVMF/AAVMF_VARS.fd"),
    ("/usr/share/edk2/aarch64/QEMU_EFI-pflash.raw", "/usr/share/edk2/aarch64/vars-template-pflash.raw"),
    ("/usr/share/edk2/aarch64/QEMU_CODE.fd", "/usr/share/edk2/aarch64/QEMU_VARS.fd"),
)

X86_FIRMWARES = frozenset({Firmware.BIOS, Firmware.UEFI})
# Graviton boots UEFI only: no PV-GRUB (hd0, hd00), no BIOS (mbr-bios, gpt-hybrid's BIOS half)
ARM64_FIRMWARES = frozenset({Firmware.UEFI})

ARCHES: dict[Arch, ArchSpec] = {
    Arch.X86_64: ArchSpec(
        arch=Arch.X86_64, debian="amd64", ec2="x86_64", profile="debian-cloud-amd64", elf_machine="x86_64",
        grub_platform="x86_64-efi", efi_file="BOOTX64.EFI", qemu="qemu-system-x86_64", machine="pc,graphics=off",
        cpu=None, firmware=OVMF_PAIRS, firmware_package="ovmf", uefi_name="OVMF", qemu_console="ttyS0",
        ec2_console="ttyS0", firmwares=X86_FIRMWARES, xen_pv=True),
    Arch.ARM64: ArchSpec(
        arch=Arch.ARM64, debian="arm64", ec2="arm64", profile="debian-cloud-arm64", elf_machine="aarch64",
        grub_platform="arm64-efi", efi_file="BOOTAA64.EFI", qemu="qemu-system-aarch64", machine="virt",
        # pauth-impdef: the CPU's pointer authentication with QEMU's cheap hash, not QARMA (much slower
        # under TCG); the guest sees the same features
        cpu="max,pauth-impdef=on", firmware=AAVMF_PAIRS, firmware_package="qemu-efi-aarch64", uefi_name="AAVMF",
        qemu_console="ttyAMA0",
        ec2_console="ttyS0", firmwares=ARM64_FIRMWARES, xen_pv=False, qemu_user="qemu-aarch64", grub_serial=False,
        nitro_only=True),
    Arch.I386: ArchSpec(
        arch=Arch.I386, debian="i386", ec2="i386", profile="", elf_machine="i386", grub_platform=None,
        efi_file=None, qemu="qemu-system-i386", machine="pc,graphics=off", cpu=None, firmware=(),
        firmware_package="", uefi_name="", qemu_console="ttyS0", ec2_console="ttyS0", firmwares=X86_FIRMWARES,
        xen_pv=True,
        refused="i386 is recognised but not supported yet (x86_64 and arm64 only)"),
}


def spec_of(arch: str | Arch | None) -> ArchSpec:
    """The table's row for `arch` (a manifest's or the CLI's name; None: x86_64)."""
    return ARCHES[Arch(arch or Arch.X86_64)]


def spec_named(name: str | None) -> ArchSpec:
    """The row for a name read from an image's manifest (x86_64's for None or a name not in the table)."""
    known = {a.value: spec for a, spec in ARCHES.items()}
    return known.get(name or "", ARCHES[Arch.X86_64])


def layout_refusal(arch: Arch, layout: str) -> str | None:
    """Why `layout` (a recipe.model.Layout value) cannot boot on `arch`, or None when it can."""
    spec = ARCHES[arch]
    wanted = LAYOUTS[Layout(layout)]
    if spec.boots(wanted):
        return None
    allowed = ", ".join(sorted(spec.layouts))
    kind = "a PV-GRUB (Xen PV) layout" if wanted.pv and not spec.xen_pv else "a BIOS layout"
    who = f"{arch.value} (Graviton)" if spec.nitro_only else arch.value
    boots = " and ".join(f.value.upper() for f in Firmware if f in spec.firmwares)
    return f"{layout} is {kind}: {who} boots {boots} only; use {allowed}"
