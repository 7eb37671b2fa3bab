"""The kernel as Xen's domain builder loads it for PV-GRUB (imagekit/kernel/xenload.py): real compressors,
real boot headers (bzimage_factory), a small real ELF with Xen notes, and the host's Debian cloud kernel."""

import bz2
import gzip
import struct
from pathlib import Path

import pytest
from bzimage_factory import compress, make_bzimage

from imagekit.kernel.bzimage import Compression
from imagekit.kernel.xenload import KERNEL_FORMAT, NOT_XEN_PV, XenRefused, xen_load

LINUX_NOTES = {6: b"linux\0", 5: b"xen-3.0\0", 1: struct.pack("<Q", 0xFFFFFFFF81000000),
               18: struct.pack("<I", 0x1000000)}


def xen_elf(notes: dict[int, bytes], owner: bytes = b"Xen\0") -> bytes:
    """An x86_64 ELF executable with one PT_NOTE segment holding `notes` (type -> descriptor)."""
    body = b""
    for kind, desc in notes.items():
        body += struct.pack("<III", len(owner), len(desc), kind) + owner.ljust((len(owner) + 3) & ~3, b"\0")
        body += desc.ljust((len(desc) + 3) & ~3, b"\0")
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header = ident + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, 0x1000000, 64, 0, 0, 64, 56, 1, 64, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 4, 4, 120, 0, 0, len(body), len(body), 4)
    return header + phdr + body + bytes(4096)


ELF = xen_elf(LINUX_NOTES)


@pytest.mark.parametrize("compression", ["gzip", "bzip2", "lzma", "xz", "lzo"])
def test_payloads_xen_decompresses(compression: str) -> None:
    kernel = xen_load(make_bzimage(compress(ELF, compression)))
    assert kernel.elf == ELF and kernel.compression == compression
    assert kernel.path == (f"bzImage loader ({compression} payload)",)
    assert kernel.pvh and kernel.note_text(6) == "linux"


@pytest.mark.parametrize(("compression", "xen"), [("lz4", "4.4"), ("zstd", "4.15")])
def test_payloads_ec2_pvgrub_is_not_documented_for(compression: str, xen: str) -> None:
    with pytest.raises(XenRefused, match=f"payload is {compression}: AWS documents PV-GRUB for gzip, bzip2, lzo "
                       f"and xz kernels only \\({compression} needs Xen {xen} or later") as caught:
        xen_load(make_bzimage(compress(ELF, compression)))
    assert caught.value.reason == KERNEL_FORMAT


def test_whole_file_gzip_only() -> None:
    """xc_dom_kernel_mem gunzips the whole blob; no other whole-file compressor is tried."""
    kernel = xen_load(gzip.compress(ELF))
    assert kernel.elf == ELF and kernel.path == ("gunzip (whole file, xc_dom_try_gunzip)", "ELF loader")
    inside = xen_load(gzip.compress(make_bzimage(compress(ELF, "xz"))))
    assert inside.compression == Compression.XZ and len(inside.path) == 2
    with pytest.raises(XenRefused, match=r"neither an ELF image nor a bzImage .*no loader found") as caught:
        xen_load(bz2.compress(ELF))
    assert caught.value.reason == KERNEL_FORMAT


def test_unknown_payload_and_old_protocol() -> None:
    with pytest.raises(XenRefused, match="unknown compression format"):
        xen_load(make_bzimage(b"\x11\x22\x33\x44" + ELF))
    with pytest.raises(XenRefused, match=r"boot protocol too old \(0207\)"):
        xen_load(make_bzimage(compress(ELF, "gzip"), protocol=(2, 7)))
    with pytest.raises(XenRefused, match="does not decompress"):
        payload = compress(ELF, "xz")
        xen_load(make_bzimage(payload[:24] + bytes(b ^ 0xFF for b in payload[24:40]) + payload[40:]))


def test_xen_notes_required(small_elf: bytes) -> None:
    cases = [
        (small_elf, "no Xen ELF notes: Xen's loader says \"Not a Xen-ELF image"),
        (xen_elf(LINUX_NOTES, owner=b"GNU\0"), "no Xen ELF notes"),
        (xen_elf({**LINUX_NOTES, 6: b"netbsd\0"}), "GUEST_OS 'netbsd': Xen only loads images built for the "
                                                   "generic loader or Linux"),
        (xen_elf({**LINUX_NOTES, 5: b"xen-2.0\0"}), "XEN_VERSION 'xen-2.0'"),
    ]
    for data, message in cases:
        with pytest.raises(XenRefused, match=message) as caught:
            xen_load(data)
        assert caught.value.reason == NOT_XEN_PV
    assert xen_load(xen_elf({**LINUX_NOTES, 6: b"netbsd\0", 8: b"generic\0"})).note_text(8) == "generic"
    assert not xen_load(xen_elf({6: b"linux\0", 5: b"xen-3.0\0"})).pvh  # PV, but no PVH entry


def test_host_kernel_lz4_refused_before_decompressing(host_kernel: Path) -> None:
    with pytest.raises(XenRefused, match="payload is lz4") as caught:
        xen_load(host_kernel.read_bytes(), host_kernel.name)
    assert caught.value.reason == KERNEL_FORMAT and caught.value.detail.startswith(host_kernel.name)
