"""Just enough ELF to judge a vmlinux: class, machine, type, and its Xen ELF notes.

A kernel that can start as a Xen PV guest carries a `Xen` note of type XEN_ELFNOTE_ENTRY (1)
(older kernels also XEN_ELFNOTE_HYPERCALL_PAGE, 2); a PVH-only entry is XEN_ELFNOTE_PHYS32_ENTRY (18).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

ELF_MAGIC = b"\x7fELF"
MACHINES = {3: "i386", 62: "x86_64", 183: "aarch64"}
XEN_ELFNOTE_ENTRY = 1
XEN_ELFNOTE_HYPERCALL_PAGE = 2
XEN_ELFNOTE_PHYS32_ENTRY = 18
PT_NOTE = 4
ET_EXEC = 2


class NotElf(ValueError):
    """The bytes are not an ELF file (or are truncated)."""


@dataclass(frozen=True)
class ElfInfo:
    bits: int  # 32 or 64
    machine: int  # e_machine
    type: int  # e_type (2 = executable)
    notes: tuple[tuple[str, int], ...]  # (owner, type) of every note in PT_NOTE segments

    @property
    def arch(self) -> str:
        return MACHINES.get(self.machine, f"machine-{self.machine}")

    @property
    def xen_pv(self) -> bool:
        """Has the ELF notes a Xen PV domain builder (PV-GRUB) needs to start it."""
        return any(o == "Xen" and t in (XEN_ELFNOTE_ENTRY, XEN_ELFNOTE_HYPERCALL_PAGE) for o, t in self.notes)

    @property
    def xen_pvh(self) -> bool:
        return ("Xen", XEN_ELFNOTE_PHYS32_ENTRY) in self.notes


def is_elf(data: bytes) -> bool:
    return data[:4] == ELF_MAGIC


def _notes(data: bytes, offset: int, size: int, endian: str) -> list[tuple[str, int]]:
    notes: list[tuple[str, int]] = []
    pos, end = offset, min(offset + size, len(data))
    while pos + 12 <= end:
        namesz, descsz, ntype = struct.unpack_from(f"{endian}III", data, pos)
        pos += 12
        name = data[pos : pos + namesz].rstrip(b"\0").decode("ascii", "replace")
        pos += (namesz + 3) & ~3
        pos += (descsz + 3) & ~3
        notes.append((name, ntype))
    return notes


def read_elf(data: bytes) -> ElfInfo:
    """Parse the ELF header and note segments; raise NotElf for anything else."""
    if not is_elf(data) or len(data) < 52:
        raise NotElf("no ELF header")
    ei_class, ei_data = data[4], data[5]
    if ei_class not in (1, 2) or ei_data not in (1, 2):
        raise NotElf(f"bad ELF identification (class {ei_class}, data {ei_data})")
    endian = "<" if ei_data == 1 else ">"
    if ei_class == 2:
        if len(data) < 64:
            raise NotElf("truncated ELF header")
        e_type, e_machine = struct.unpack_from(f"{endian}HH", data, 16)
        (e_phoff,) = struct.unpack_from(f"{endian}Q", data, 32)
        e_phentsize, e_phnum = struct.unpack_from(f"{endian}HH", data, 54)
        ph_fmt, off_index, size_index = f"{endian}IIQQQQQQ", 2, 5
    else:
        e_type, e_machine = struct.unpack_from(f"{endian}HH", data, 16)
        (e_phoff,) = struct.unpack_from(f"{endian}I", data, 28)
        e_phentsize, e_phnum = struct.unpack_from(f"{endian}HH", data, 42)
        ph_fmt, off_index, size_index = f"{endian}IIIIIIII", 1, 4
    if e_phoff + e_phnum * e_phentsize > len(data):
        raise NotElf("program headers lie beyond the end of the file (truncated?)")
    notes: list[tuple[str, int]] = []
    for i in range(e_phnum):
        ph = struct.unpack_from(ph_fmt, data, e_phoff + i * e_phentsize)
        if ph[0] == PT_NOTE:
            notes += _notes(data, ph[off_index], ph[size_index], endian)
    return ElfInfo(bits=32 * ei_class, machine=e_machine, type=e_type, notes=tuple(notes))
