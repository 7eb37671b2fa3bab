"""GRUB 0.97 (Debian's grub-legacy 0.97-80) on real images: mke2fs -d trees, sfdisk MBRs, imagekit builds.

Nothing is mocked: every test runs the real `grub` shell from imagekit's cache (fetched on first use with
apt-get download). Kernel stand-ins are random bytes: GRUB's side of PV-GRUB only reads files.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from imagekit.boot.pvgrub import Variant
from imagekit.pvgrub.fetch import DEB_SHA256, Grub097Unavailable, debian_binary, entry_dir, grub_binary
from imagekit.pvgrub.menu import config_lines, plan_boot
from imagekit.pvgrub.shell import GrubError, open_shell, parse_error
from tests.pvgrub.grub097_reads import grub097_reads
from tests.util import REPO, run_imagekit, sha256

NOBODY = 65534
KERNEL = b"\x7fELF" + os.urandom(300_000)
INITRD = os.urandom(200_000)
HOLEY = os.urandom(65536) + bytes(8192) + os.urandom(65536)  # two 4 KiB blocks of zeros: mke2fs -d makes a hole


def tree(root: Path, menu: str, files: dict[str, bytes] | None = None) -> Path:
    """A /boot tree: menu.lst plus files (default: /boot/vmlinuz and /boot/initrd.img)."""
    (root / "boot/grub").mkdir(parents=True)
    (root / "boot/grub/menu.lst").write_text(menu)
    for name, data in (files or {"boot/vmlinuz": KERNEL, "boot/initrd.img": INITRD}).items():
        (root / name).write_bytes(data)
    return root


def mkfs(image: Path, root: Path, *options: str, size: int = 64 << 20) -> Path:
    with image.open("wb") as f:
        f.truncate(size)
    subprocess.run(["mke2fs", "-q", "-F", *options, "-d", root, image], check=True, capture_output=True)
    return image


def mbr(image: Path, fs: Path, start: int = 2048) -> Path:
    """A disk with one MBR partition (type 83) at sector `start` holding the filesystem image fs."""
    size = fs.stat().st_size
    with image.open("wb") as f:
        f.truncate(start * 512 + size)
    subprocess.run(["sfdisk", "-q", image], input=f"start={start}, type=83, bootable\n", text=True, check=True)
    with image.open("r+b") as out, fs.open("rb") as src:
        out.seek(start * 512)
        shutil.copyfileobj(src, out)
    return image


GOOD = ("default 0\ntimeout 1\ntitle good\nroot {root}\nkernel /boot/vmlinuz root=/dev/xvda1 ro\n"
        "initrd /boot/initrd.img\n")


@pytest.fixture
def hd0(tmp_path: Path) -> Callable[..., Path]:
    """A partitionless ext4 image (as imagekit makes for PV: no 64bit) with the given menu.lst."""
    def make(menu: str, files: dict[str, bytes] | None = None, *options: str) -> Path:
        root = tree(tmp_path / "tree", menu, files)
        return mkfs(tmp_path / "hd0.img", root, *(options or ("-t", "ext4", "-O", "^64bit", "-b", "4096")))
    return make


def test_parse_error() -> None:
    assert parse_error("kernel /x\n\nError 15: File not found\n") == GrubError(15, "File not found")
    mount = "Error 17: Cannot mount selected partition"
    assert str(parse_error(f"\n{mount}\n")) == mount
    assert parse_error(" Filesystem type is ext2fs, using whole disk\n") is None


def test_config_lines_as_stage2_reads_them() -> None:
    lines = config_lines("  # comment\r\ndefault=1\n\n\ttitle  A\tB\nkernel /v ro \\\n  quiet\n#x\n")
    assert [(x.number, x.text) for x in lines] == [(2, "default=1"), (4, "title  A B"), (5, "kernel /v ro    quiet")]
    assert [(x.word, x.arg) for x in lines] == [("default", "1"), ("title", "A B"), ("kernel", "/v ro    quiet")]


def test_config_lines_agree_with_grub097_reading_the_same_menu() -> None:
    """imagekit's port of get_line_from_config against GRUB 0.97 listing and running the same text."""
    menu = ("  # comment\r\ndefault=1\ntimeout 1\n\n\ttitle  A\tB\n  root (hd0)\nkernel /boot/vmlinuz ro \\\n"
            "  quiet\n#x\n initrd\t/boot/initrd.img\ntitle second  one\nroot\t(hd0)\nkernel /boot/vmlinuz  single\n")
    read = grub097_reads(menu, Variant.HD0, ["/boot/vmlinuz", "/boot/initrd.img"], separate_boot=False)
    sections: list[list[str]] = []
    for line in config_lines(menu):
        if line.word == "title":
            sections.append([line.arg])
        elif sections:
            sections[-1].append(line.text)
    assert read.titles == ("A B", "second  one") == tuple(s[0] for s in sections)
    assert read.commands == tuple(tuple(s[1:]) for s in sections)
    assert read.commands[0] == ("root (hd0)", "kernel /boot/vmlinuz ro    quiet", "initrd /boot/initrd.img")


def test_binary_from_the_verified_deb() -> None:
    binary = debian_binary()
    assert binary == entry_dir() / "grub" and grub_binary().parent == entry_dir()
    assert DEB_SHA256 in (entry_dir() / "SOURCE").read_text()
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout
    assert version.strip() == "grub (GNU GRUB 0.97)"


def test_fetch_refuses_a_deb_that_is_not_0_97_80(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "grub-legacy_0.97-80_amd64.deb"
    fake.write_bytes(b"!<arch>\n")
    monkeypatch.setenv("IMAGEKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("IMAGEKIT_GRUB_LEGACY_DEB", str(fake))
    with pytest.raises(Grub097Unavailable, match=f"sha256 .* is not grub-legacy 0.97-80's {DEB_SHA256}"):
        grub_binary()
    monkeypatch.setenv("IMAGEKIT_GRUB_LEGACY_DEB", str(tmp_path / "missing.deb"))
    with pytest.raises(Grub097Unavailable, match=r"missing\.deb: no such file"):
        grub_binary()
    assert not (tmp_path / "cache/grub-legacy/0.97-80").exists()  # nothing half-made under the real name


@pytest.mark.parametrize("layout", ["hd0", pytest.param("hd00", marks=pytest.mark.slow)])  # a build + GRUB each
def test_image_built_by_imagekit(layout: str, small_recipe: Callable[..., Path], tmp_path: Path) -> None:
    """menu.lst read back equals the image's; the kernel and initrd bytes GRUB 0.97 reads are the image's
    (a gzipped file as GRUB 0.97 gunzips it on reading: the PV-safe kernel is a gzipped vmlinux); the image
    is unchanged."""
    image = tmp_path / f"{layout}.img"
    run_imagekit("build", small_recipe(layout=layout), "-o", image, "--no-lint", check=True)
    before = sha256(image)
    variant = Variant(layout)
    fs = f"{image}?offset={2048 * 512}" if variant is Variant.HD00 else str(image)

    def debugfs(request: str) -> str:
        return subprocess.run(["debugfs", "-R", request, fs], capture_output=True, text=True, check=True).stdout

    truth = debugfs("cat /boot/grub/menu.lst")
    with open_shell(image, variant) as shell:
        text, error = shell.cat(f"{variant.legacy_root}/boot/grub/menu.lst")  # as GRUB shows it
        exact = shell.dump(f"{variant.legacy_root}/boot/grub/menu.lst", tmp_path / "menu.lst")  # its bytes
    assert error is None and "\t" in truth
    assert text == truth.expandtabs(8)
    assert exact.ok and (tmp_path / "menu.lst").read_text() == truth

    plan = plan_boot(image, variant, keep=tmp_path / "loaded")
    assert plan.booted is not None and not plan.fell_back
    kernel, initrd = plan.booted.loaded("kernel"), plan.booted.loaded("initrd")
    assert kernel is not None and initrd is not None and kernel.read.data and initrd.read.data
    for load in (kernel, initrd):
        copy = tmp_path / "copy"
        debugfs(f"dump {load.file} {copy}")
        if copy.read_bytes()[:2] == b"\x1f\x8b":  # grub_open gunzips what it reads
            copy.write_bytes(gzip.decompress(copy.read_bytes()))
        assert load.read.data is not None and sha256(load.read.data) == sha256(copy)
    assert kernel.file.endswith(".gz")  # the build's PV-safe kernel (pv_format = "auto": an lz4 bzImage)
    assert sha256(image) == before


def test_device_names_as_each_aki_sees_them(tmp_path: Path) -> None:
    root = tree(tmp_path / "tree", GOOD.format(root="(hd0)"))
    fs = mkfs(tmp_path / "fs.img", root, "-t", "ext4", "-O", "^64bit")
    with open_shell(fs, Variant.HD0) as shell:  # the fulldisk patch: (hd0) is the filesystem
        whole, part = shell.run(["root (hd0)", "root (hd0,0)"])
    assert whole.output.strip() == "Filesystem type is ext2fs, using whole disk" and whole.ok
    assert part.error == GrubError(5, "Partition table invalid or corrupt")
    with open_shell(mbr(tmp_path / "disk.img", fs), Variant.HD00) as shell:  # stock 0.97: (hd0) unmountable
        whole, cat, part, other = shell.run(["root (hd0)", "cat /boot/grub/menu.lst", "root (hd0,0)", "root (hd1)"])
    assert whole.output.strip() == "Filesystem type unknown, using whole disk"
    assert cat.error == GrubError(17, "Cannot mount selected partition")
    assert part.output.strip() == "Filesystem type is ext2fs, partition type 0x83"
    assert other.error == GrubError(21, "Selected disk does not exist")


def test_missing_kernel_is_error_15_and_the_fallback_boots(hd0: Callable[..., Path]) -> None:
    image = hd0("default 0\nfallback 1\ntimeout 5\n"
                "title broken\nroot (hd0)\nkernel /boot/vmlinuz-gone ro\n"
                "title good\nroot (hd0)\nkernel /boot/vmlinuz ro\ninitrd /boot/initrd.img\n")
    plan = plan_boot(image, Variant.HD0)
    first, second = plan.attempts
    assert first.error == GrubError(15, "File not found")
    assert first.failed_at is not None and (first.failed_at.number, first.failed_at.text) == (
        6, "kernel /boot/vmlinuz-gone ro")
    assert plan.booted is second and plan.fell_back
    kernel = second.loaded("kernel")
    assert kernel is not None and kernel.read.size == len(KERNEL) and kernel.args == "ro"
    alone = plan_boot(image, Variant.HD0, only=0)  # entry 0 by itself: no fallback
    assert [a.entry.index for a in alone.attempts] == [0] and alone.booted is None
    assert [a.entry.index for a in plan_boot(image, Variant.HD0, only=1).attempts] == [1]


def test_unknown_command_is_skipped_a_menu_only_one_fails_the_entry(hd0: Callable[..., Path]) -> None:
    """GRUB 0.97 drops a command it does not know (`uuid`) where it stands; a command it knows but only
    in the global section (`timeout`) fails the entry with Error 27 when it runs."""
    image = hd0("default 0\nfallback 1\ntimeout 0\n"
                "title menu-only\nroot (hd0)\ntimeout 3\nkernel /boot/vmlinuz\n"
                "title unknown\nroot (hd0)\nuuid 0123-4567\nkernel /boot/vmlinuz\n")
    plan = plan_boot(image, Variant.HD0)
    failed, booted = plan.attempts
    assert failed.error == GrubError(27, "Unrecognized command")
    assert failed.failed_at is not None and failed.failed_at.text == "timeout 3"
    assert plan.booted is booted
    assert [line.text for line in booted.entry.skipped] == ["uuid 0123-4567"]
    assert [r.command for r in booted.results] == ["root (hd0)", "kernel /boot/vmlinuz"]  # uuid never ran
    with open_shell(image, Variant.HD0) as shell:  # typed at the prompt, an unknown command is Error 27 too
        (typed,) = shell.run(["uuid 0123-4567"])
    assert typed.error == GrubError(27, "Unrecognized command")


def test_initrd_before_kernel_and_every_entry_failing(hd0: Callable[..., Path]) -> None:
    image = hd0("fallback 1\n"
                "title initrd first\nroot (hd0)\ninitrd /boot/initrd.img\nkernel /boot/vmlinuz\n"
                "title no such disk\nroot (hd1,0)\nkernel /boot/vmlinuz\n")
    plan = plan_boot(image, Variant.HD0)
    assert plan.menu is not None and plan.menu.timeout is None  # no timeout: PV-GRUB waits for a key
    assert [a.error for a in plan.attempts] == [GrubError(19, "Linux kernel must be loaded before initrd"),
                                               GrubError(21, "Selected disk does not exist")]
    assert plan.booted is None


def test_menu_where_the_aki_looks(hd0: Callable[..., Path], tmp_path: Path) -> None:
    """1.03: the hd00 AKI reads (hd0,0)/boot/grub only; 1.04+ also finds (hd0,0)/grub."""
    root = tmp_path / "tree2"
    (root / "grub").mkdir(parents=True)
    (root / "grub/menu.lst").write_text(GOOD.format(root="(hd0,0)").replace("/boot/", "/"))
    (root / "vmlinuz").write_bytes(KERNEL)
    (root / "initrd.img").write_bytes(INITRD)
    disk = mbr(tmp_path / "bootpart.img", mkfs(tmp_path / "fs2.img", root, "-t", "ext4", "-O", "^64bit"))
    old = plan_boot(disk, Variant.HD00, aki_version="1.03")
    assert old.menu is None and old.searched == (("(hd0,0)/boot/grub/menu.lst", GrubError(15, "File not found")),)
    new = plan_boot(disk, Variant.HD00, aki_version="1.05")
    assert new.menu is not None and new.menu.path == "(hd0,0)/grub/menu.lst" and new.booted is not None
    assert [p for p, _ in new.searched] == ["(hd0)/boot/grub/menu.lst", "(hd0,0)/boot/grub/menu.lst",
                                            "(hd0,0)/grub/menu.lst"]


# What Debian's 0.97-80 reads (its ext4 patch is Debian's, not Xen's 60ext4.diff): a plain file on each,
# and a file with a hole (mke2fs -d leaves one for each all-zero block).
FILESYSTEMS = [
    (("-t", "ext2", "-b", "4096"), None),
    (("-t", "ext3", "-b", "4096"), None),
    (("-t", "ext4", "-O", "^64bit", "-b", "4096"), GrubError(16, "Inconsistent filesystem structure")),
    (("-t", "ext4", "-O", "^64bit", "-b", "1024"), GrubError(16, "Inconsistent filesystem structure")),
    (("-t", "ext4", "-O", "64bit", "-b", "4096"), GrubError(16, "Inconsistent filesystem structure")),
    (("-t", "ext4", "-O", "^64bit,^metadata_csum,^flex_bg", "-b", "4096"),
     GrubError(16, "Inconsistent filesystem structure")),
]


@pytest.mark.parametrize(("options", "hole_error"), FILESYSTEMS,
                         ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_ext_features_0_97_80_reads(options: tuple[str, ...], hole_error: GrubError | None,
                                    hd0: Callable[..., Path]) -> None:
    """64bit ext4 reads here (Xen's 60ext4.diff refuses it: lint keeps its own rule); a hole in an
    extent-mapped file is Error 16 (ext2/ext3 block maps read it as zeros)."""
    image = hd0(GOOD.format(root="(hd0)"), {"boot/vmlinuz": KERNEL, "boot/initrd.img": INITRD, "boot/holey": HOLEY},
                *options)
    with open_shell(image, Variant.HD0) as shell:
        plain = shell.dump("(hd0)/boot/vmlinuz", shell.workdir / "k")
        assert plain.ok and plain.data is not None and plain.data.read_bytes() == KERNEL
        holey = shell.dump("(hd0)/boot/holey", shell.workdir / "h")
        assert holey.error == hole_error
        if hole_error is None:
            assert holey.data is not None and holey.data.read_bytes() == HOLEY
        else:
            assert holey.size == 65536  # read up to the hole


@pytest.mark.slow  # a 2 GiB+ image read whole by GRUB 0.97: ~8 s (the fast loop: README, Tests)
def test_image_unchanged_read_only_and_past_2_gib(tmp_path: Path) -> None:
    """`--read-only` on a write-protected image, nothing written; a partition that starts at 3 GiB (a sparse
    file) is read. savedefault is reported, not run (0.97-80's crashes the shell; PV-GRUB's is Xen's)."""
    menu = GOOD.format(root="(hd0,0)").replace("initrd /boot/initrd.img\n", "savedefault\ninitrd /boot/initrd.img\n")
    fs = mkfs(tmp_path / "fs.img", tree(tmp_path / "tree", menu), "-t", "ext4", "-O", "^64bit")
    disk = mbr(tmp_path / "far.img", fs, start=6 << 20)
    disk.chmod(0o444)
    before = sha256(disk)
    plan = plan_boot(disk, Variant.HD00)
    assert plan.booted is not None and [r.command for r in plan.booted.results][-2:] == [
        "savedefault", "initrd /boot/initrd.img"]
    assert "savedefault is not run" in plan.booted.results[-2].output
    assert sha256(disk) == before


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A scratch directory an unprivileged user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="imagekit-grub097-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to become nobody")
def test_rootless(open_tmp: Path) -> None:
    """As nobody, with a cache nobody can write (the shell already in it) and a root-owned image."""
    cache = open_tmp / "cache"
    shutil.copytree(entry_dir(), cache / "grub-legacy/0.97-80")
    fs = mkfs(open_tmp / "fs.img", tree(open_tmp / "tree", GOOD.format(root="(hd0)")), "-t", "ext4", "-O", "^64bit")
    fs.chmod(0o444)
    before = sha256(fs)
    script = ("from pathlib import Path; from imagekit.pvgrub.menu import plan_boot; "
              "from imagekit.boot.pvgrub import Variant; "
              f"p = plan_boot(Path('{fs}'), Variant.HD0); print(p.booted.loaded('kernel').read.size)")
    env = {"PATH": os.environ["PATH"], "HOME": str(open_tmp), "IMAGEKIT_CACHE_DIR": str(cache),
           "PYTHONPATH": str(REPO)}
    proc = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                           REPO / ".venv/bin/python", "-c", script], capture_output=True, text=True, env=env,
                          cwd=open_tmp)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(len(KERNEL))
    assert sha256(fs) == before
