"""Hostile input that must be refused or reported before (or without) a libguestfs launch: menu.lst and
grub.cfg numbers, manifests beside an image, qcow2 files that name host files. No appliance is started."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from imagekit.bootloader.grubcfg import parse_grub_cfg
from imagekit.bootloader.menulst import Entry, MenuLstError, parse_menu_lst, split_device
from imagekit.manifest import read_manifest
from imagekit.util.appliance import DiskFormat, disk_format
from imagekit.util.errors import UsageError
from tests.util import run_imagekit
from tests.watch import OpenWatch

ENTRY = "title Debian\n\troot (hd0)\n\tkernel /boot/vmlinuz root=LABEL=root\n"


@pytest.mark.parametrize(("line", "shown"), [
    ("default ²", "'²'"), ("default ٣", "'٣'"), ("default " + "9" * 5000, "(5000 characters)"),
    ("timeout " + "1" * 5000, "(5000 characters)"), ("fallback 1 ²", "'²'"), ("default 4294967296", "4294967296"),
], ids=["superscript", "arabic-indic", "5000-digits", "timeout-5000", "fallback-superscript", "over-int"])
def test_menu_lst_numbers_are_parse_errors(line: str, shown: str) -> None:
    with pytest.raises(MenuLstError) as exc:
        parse_menu_lst(f"{line}\n{ENTRY}")
    assert str(exc.value).startswith("line 1: ") and shown in str(exc.value)
    assert len(str(exc.value)) < 200  # one short line, not 5,000 digits


def test_menu_lst_devices_take_ascii_digits_only() -> None:
    with pytest.raises(MenuLstError, match="root"):
        parse_menu_lst("title x\n\troot (hd0,²)\n\tkernel /k\n")
    with pytest.raises(MenuLstError, match="root"):
        parse_menu_lst(f"title x\n\troot (hd0,{'1' * 5000})\n\tkernel /k\n")
    assert Entry("x", root=f"(hd0,{'1' * 5000})").root_partition is None
    assert split_device(f"(hd0,{'1' * 5000})/boot/vmlinuz")[0] is None
    assert split_device("(hd0,0)/boot/vmlinuz") == ("(hd0,0)", "/boot/vmlinuz")
    assert parse_menu_lst(f"default 1\nfallback 0\n{ENTRY}{ENTRY}").default == 1


@pytest.mark.parametrize("ref", ["²", "9" * 5000, "٣"])
def test_grub_cfg_default_with_odd_digits_names_no_entry(ref: str) -> None:
    cfg = parse_grub_cfg(f"set default={ref}\nmenuentry 'Debian' {{\n  linux /vmlinuz\n}}\n")
    assert cfg.pick(ref) is None
    assert cfg.pick("0") is cfg.entries[0]


# --- manifests beside an image ------------------------------------------------------------------------

ODD = {
    "boot-mode-list": (json.dumps({"boot_mode": [1]}), "boot_mode: Input should be 'legacy-bios', 'uefi'"),
    "arch-number": (json.dumps({"arch": 64}), "arch: Input should be a valid string"),
    "package-version": (json.dumps({"packages": [{"name": "bash", "version": 5}]}), "packages.0.version"),
    "menu-lst-no-text": (json.dumps({"menu_lst": {}}), "menu_lst.text: Field required"),
    "not-json": ('{"arch": ', "not a JSON manifest"),
    "not-an-object": ("[1, 2]", "is a JSON list, not an object"),
    "deep": ("[" * 100_000, "not a JSON manifest"),
}


@pytest.fixture
def image_beside(tmp_path: Path):
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(2 * 1024 * 1024))

    def write(text: str) -> tuple[Path, Path]:
        manifest = tmp_path / "disk.img.manifest.json"
        manifest.write_text(text)
        return image, manifest

    return write


@pytest.mark.parametrize("case", sorted(ODD))
def test_odd_manifest_is_one_line_naming_file_and_key(image_beside, case: str) -> None:
    text, expected = ODD[case]
    image, manifest = image_beside(text)
    with pytest.raises(UsageError) as exc:  # the one reader of lint, boot, publish and diff
        read_manifest(image)
    assert str(exc.value).startswith(f"{manifest}: ") and expected in str(exc.value)


@pytest.mark.parametrize("case", ["boot-mode-list", "not-json", "deep"])
def test_lint_and_diff_refuse_an_odd_manifest_with_exit_2(image_beside, tmp_path: Path, case: str) -> None:
    image, manifest = image_beside(ODD[case][0])
    other = tmp_path / "other.img"
    other.write_bytes(bytes(2 * 1024 * 1024))
    for argv in (("lint", image), ("lint", image, "--target", "hvm"), ("diff", other, image)):
        proc = run_imagekit(*argv)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert proc.stderr.startswith(f"error: {manifest}: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert "Traceback" not in proc.stderr


def test_good_manifest_keeps_unknown_keys(image_beside) -> None:
    doc = {"boot_mode": "uefi", "arch": "x86_64", "future": {"anything": [1]}, "packages": []}
    image, _ = image_beside(json.dumps(doc))
    manifest = read_manifest(image)
    assert manifest is not None and manifest.document() == {"schema": 1, **doc}


# --- the image format: decided by imagekit, a qcow2 never followed to a host file ---------------------


def qcow2(path: Path, *options: str) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *options, path, "16M"], check=True)
    return path


@pytest.fixture
def sentinel(tmp_path: Path) -> Path:
    path = tmp_path / "host-secret"
    path.write_bytes(bytes(16 * 1024 * 1024))
    return path


def test_qcow2_backing_or_data_file_is_refused_without_opening_it(tmp_path: Path, sentinel: Path) -> None:
    backed = qcow2(tmp_path / "backed.qcow2", "-b", str(sentinel), "-F", "raw")
    data = qcow2(tmp_path / "data.qcow2", "-o", f"data_file={sentinel},data_file_raw=on")
    plain = tmp_path / "plain.img"
    plain.write_bytes(bytes(2 * 1024 * 1024))
    cases = [(("lint", backed), "starts with a qcow2 header"),
             (("lint", backed, "--format", "qcow2"), "has a backing file"),
             (("lint", data, "--format", "qcow2"), "external file"),
             (("diff", plain, backed), "starts with a qcow2 header"),
             (("diff", plain, backed, "--format", "qcow2"), "not a qcow2 image"),  # plain.img is not one
             (("diff", backed, backed, "--format", "qcow2"), "has a backing file"),
             (("diff", data, data, "--format", "qcow2"), "external file")]
    with OpenWatch(sentinel) as watch:
        for argv, expected in cases:
            proc = run_imagekit(*argv)
            assert proc.returncode == 2, (argv, proc.stderr)
            assert proc.stderr.startswith("error: ") and expected in proc.stderr, (argv, proc.stderr)
            assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
            assert watch.opens() == 0, f"imagekit {argv} opened {sentinel}"


def test_format_is_decided_never_sniffed(tmp_path: Path) -> None:
    fake = tmp_path / "raw-with-qcow2-magic.img"
    fake.write_bytes(b"QFI\xfb" + bytes(1024 * 1024))
    with pytest.raises(UsageError, match="--format qcow2 to read it as qcow2"):
        disk_format(fake, None)
    assert disk_format(fake, "raw") is DiskFormat.RAW  # the user said raw: its bytes are the disk
    with pytest.raises(UsageError, match="not a qcow2 image"):
        disk_format(fake, "qcow2")
    good = qcow2(tmp_path / "self-contained.qcow2")
    assert disk_format(good, "qcow2") is DiskFormat.QCOW2
    with pytest.raises(UsageError, match="--format: 'vmdk' is not one of raw, qcow2"):
        disk_format(good, "vmdk")


@pytest.mark.parametrize("data", [b"070701" + b"zz" * 60, b"070701" + b"0" * 48 + "٣".encode() * 4,
                                  b"070701" + b"1" * 50], ids=["not-hex", "unicode-digits", "short"])
def test_initrd_with_a_corrupt_cpio_header_is_a_format_error(data: bytes) -> None:
    from imagekit.kernel.bzimage import KernelFormatError
    from imagekit.kernel.initrd import initrd_members

    with pytest.raises(KernelFormatError, match="initrd: corrupt cpio header"):
        initrd_members(data)


def test_kernel_decompression_bomb_is_a_format_error() -> None:
    """A gzipped "vmlinux" that expands past MAX_VMLINUX is refused, not expanded into memory."""
    import zlib

    from imagekit.kernel.bzimage import MAX_VMLINUX, KernelFormatError, load_vmlinux

    c = zlib.compressobj(9, wbits=31)
    chunk = bytes(64 << 20)
    bomb = b"".join(c.compress(chunk) for _ in range((MAX_VMLINUX >> 26) + 2)) + c.flush()
    assert len(bomb) < 2 << 20
    with pytest.raises(KernelFormatError, match="more than 256 MiB"):
        load_vmlinux(bomb, "bomb")


def test_boot_refuses_a_qcow2_with_an_external_data_file(tmp_path: Path, sentinel: Path) -> None:
    """boot probes with qemu-img (which does not open the data file) and refuses before QEMU would."""
    from imagekit.boot.overlay import image_file

    data = qcow2(tmp_path / "data.qcow2", "-o", f"data_file={sentinel},data_file_raw=on")
    with OpenWatch(sentinel) as watch:
        with pytest.raises(UsageError, match="keeps its data in an external file"):
            image_file(data)
        assert watch.opens() == 0
