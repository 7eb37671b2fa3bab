import gzip
import subprocess
from pathlib import Path

import pytest
from bzimage_factory import COMPRESSORS, compress, elf32, make_bzimage

from imagekit.kernel.bzimage import (
    Compression,
    KernelFormatError,
    convert_to_aki,
    extract_payload,
    load_vmlinux,
    read_header,
)
from imagekit.kernel.elf import read_elf
from imagekit.util.errors import UsageError


def gunzip_cli(path: Path) -> bytes:
    """An independent decompression of imagekit's output: the gzip tool."""
    return subprocess.run(["gzip", "-dc", path], capture_output=True, check=True).stdout


@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
def test_every_compressor_round_trips(tmp_path, small_elf, compression):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(make_bzimage(compress(small_elf, compression)))
    result = convert_to_aki(kernel, tmp_path / "vmlinux.gz")
    assert result.compression == compression
    assert result.source_format == "bzImage"
    assert result.kernel_release == "6.9.0-test"
    assert (result.arch, result.bits, result.vmlinux_size) == ("x86_64", 64, len(small_elf))
    assert gunzip_cli(tmp_path / "vmlinux.gz") == small_elf
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vmlinux.gz", "vmlinuz"]  # no temp left


def _independent_extract(kernel: bytes, compression: str) -> bytes:
    """scripts/extract-vmlinux's way: find the compressor's magic, ignore the boot header."""
    magic = {"gzip": b"\x1f\x8b\x08", "xz": b"\xfd7zXZ\x00", "bzip2": b"BZh", "lzma": b"\x5d\x00\x00",
             "lzo": b"\x89LZO\x00", "lz4": b"\x02\x21\x4c\x18", "zstd": b"\x28\xb5\x2f\xfd"}[compression]
    tool = {"gzip": ["gzip"], "xz": ["xz"], "bzip2": ["bzip2"], "lzma": ["xz", "--format=lzma"],
            "lzo": ["lzop"], "lz4": ["lz4"], "zstd": ["zstd"]}[compression]
    pos = kernel.find(magic)
    while pos != -1:
        out = subprocess.run([*tool, "-dc"], input=kernel[pos:], capture_output=True).stdout
        if out[:4] == b"\x7fELF":
            return out
        pos = kernel.find(magic, pos + 1)
    raise AssertionError(f"no {compression} stream holds an ELF")


@pytest.mark.slow  # the host kernel converted and extracted twice (60 MiB vmlinux): the factory kernels above stay fast
def test_host_kernel(tmp_path, host_kernel, host_config):
    config = host_config.read_text()
    compression = next(c.value for c in Compression if f"CONFIG_KERNEL_{c.name}=y" in config)
    result = convert_to_aki(host_kernel, tmp_path / "vmlinux.gz")
    assert result.compression == compression
    assert result.kernel_release == host_kernel.name.removeprefix("vmlinuz-")
    assert (result.arch, result.bits) == ("x86_64", 64)
    assert result.xen_pv  # Debian's cloud kernel has CONFIG_XEN_PV: the ELF carries the Xen entry note
    vmlinux = gunzip_cli(tmp_path / "vmlinux.gz")
    assert vmlinux == _independent_extract(host_kernel.read_bytes(), compression)
    assert read_elf(vmlinux).xen_pv


def test_elf_and_gzipped_elf_inputs_pass_through(tmp_path, small_elf):
    (tmp_path / "vmlinux").write_bytes(small_elf)
    (tmp_path / "vmlinux.gz").write_bytes(gzip.compress(small_elf))
    assert convert_to_aki(tmp_path / "vmlinux", tmp_path / "a.gz").source_format == "elf"
    assert convert_to_aki(tmp_path / "vmlinux.gz", tmp_path / "b.gz").source_format == "gzip-elf"
    assert gunzip_cli(tmp_path / "a.gz") == gunzip_cli(tmp_path / "b.gz") == small_elf


def test_output_is_reproducible(tmp_path, small_elf):
    (tmp_path / "k").write_bytes(make_bzimage(compress(small_elf, "xz")))
    assert convert_to_aki(tmp_path / "k", tmp_path / "1.gz").sha256 == \
        convert_to_aki(tmp_path / "k", tmp_path / "2.gz").sha256


def test_i386_kernel(small_elf):
    vmlinux = load_vmlinux(make_bzimage(compress(elf32(), "gzip"), xloadflags=0))
    assert (vmlinux.elf.bits, vmlinux.elf.arch) == (32, "i386")


def test_old_protocol_found_by_gzip_magic(small_elf):
    data = make_bzimage(compress(small_elf, "gzip"), protocol=(2, 6), decompressor=b"\x1f\x8b\x08junk" * 4)
    header, _, compression = extract_payload(data)
    assert header.payload_offset is None and header.bits is None
    assert compression is Compression.GZIP
    assert load_vmlinux(data).data == small_elf


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"hello world\n" * 100, "not a bzImage: no x86 boot header"),
        (b"", "not a bzImage"),
        (make_bzimage(b"\x00\x01\x02\x03\x04\x05" * 50), "which no known compressor writes"),
        (make_bzimage(b""), "empty payload"),
    ],
)
def test_not_a_kernel(data, message):
    with pytest.raises(KernelFormatError, match=message):
        load_vmlinux(data, "k")


@pytest.mark.parametrize("compression", ["gzip", "xz", "lz4", "zstd"])
def test_truncated_and_corrupt(small_elf, compression):
    good = make_bzimage(compress(small_elf, compression))
    with pytest.raises(KernelFormatError, match=r"k: truncated: the payload ends at byte \d+"):
        load_vmlinux(good[: len(good) // 2], "k")
    with pytest.raises(KernelFormatError, match="truncated"):
        read_header(good[:0x220], "k")
    payload = compress(small_elf, compression)
    cut = payload[: len(payload) // 2] + payload[-4:]  # header lengths agree, the stream is cut short
    with pytest.raises(KernelFormatError, match=f"k: the {compression} payload"):
        load_vmlinux(make_bzimage(cut), "k")


def test_payload_that_is_not_elf():
    with pytest.raises(KernelFormatError, match="not an ELF vmlinux"):
        load_vmlinux(make_bzimage(compress(b"just text, no kernel" * 100, "xz")), "k")


def test_class_must_match_header():
    with pytest.raises(KernelFormatError, match="says a 64-bit kernel but the vmlinux is ELF32"):
        load_vmlinux(make_bzimage(compress(elf32(), "gzip"), xloadflags=0x1), "k")


def test_bad_paths(tmp_path, small_elf):
    with pytest.raises(UsageError, match="no such file"):
        convert_to_aki(tmp_path / "missing", tmp_path / "out.gz")
    (tmp_path / "k").write_bytes(make_bzimage(compress(small_elf, "gzip")))
    with pytest.raises(UsageError, match=r"-o: directory .* does not exist"):
        convert_to_aki(tmp_path / "k", tmp_path / "nodir" / "out.gz")
    (tmp_path / "bad").write_bytes(b"nope" * 200)
    with pytest.raises(KernelFormatError):
        convert_to_aki(tmp_path / "bad", tmp_path / "out.gz")
    assert not (tmp_path / "out.gz").exists()
