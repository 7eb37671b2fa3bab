"""Recipes: every shipped recipe loads; bad ones fail with one line naming the file and the key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imagekit.recipe.load import load_recipe
from imagekit.recipe.model import Layout, parse_size
from imagekit.util.errors import RecipeError
from tests.util import RECIPES, run_imagekit

GOOD = """\
name = "t"
size = "1G"
layout = "hd0"
[rootfs]
source = "bootstrap"
[kernel]
profile = "debian-cloud-amd64"
"""


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_recipes_load(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.name == path.stem
    assert len(recipe.sha256) == 64


def test_bootpart_recipe_is_hd00_with_ext2_boot() -> None:
    recipe = load_recipe(RECIPES / "debian-12-pvgrub-hd00-bootpart.toml")
    assert recipe.layout == Layout.HD00
    assert recipe.filesystems.boot is not None and recipe.filesystems.boot.type.value == "ext2"


@pytest.mark.parametrize(("text", "value"), [("4G", 4 << 30), ("512M", 512 << 20), ("1.5G", 3 << 29), (4096, 4096)])
def test_parse_size(text: object, value: int) -> None:
    assert parse_size(text) == value


BAD = [
    (GOOD.replace('layout = "hd0"', 'layout = "hd1"'), "layout: 'hd1' is not one of hd0, hd00"),
    ("colour = 'red'\n" + GOOD, "colour: unknown key"),
    (GOOD.replace('size = "1G"', 'size = "1X"'), "size: '1X' is not a size like 4G or 512M"),
    (GOOD.replace('size = "1G"', 'size = "-1G"'), "size: '-1G' is not a size like 4G or 512M"),
    (GOOD.replace('size = "1G"\n', ""), "size: required key is missing"),
    (GOOD.replace('profile = "debian-cloud-amd64"', 'profile = "nope"'), "kernel.profile: no kernel profile 'nope'"),
    (GOOD.replace('source = "bootstrap"', 'source = "rsync"'),
     "rootfs.source: 'rsync' is not one of bootstrap, tarball, directory"),
    (GOOD.replace('source = "bootstrap"', 'source = "bootstrap"\nsuit = "bookworm"'), "rootfs.suit: unknown key"),
    (GOOD.replace('layout = "hd0"', 'layout = "hd00"')
     + '[filesystems.boot]\ntype = "vfat"\nlabel = "b"\nsize = "64M"\n',
     "filesystems.boot.type: 'vfat' is not one of ext2, ext3, ext4, xfs, btrfs"),
    (GOOD + '[filesystems.boot]\ntype = "ext2"\nlabel = "boot"\nsize = "64M"\n',
     'filesystems.boot: a separate /boot needs a partition table: use layout = "hd00"'),
    (GOOD.replace('layout = "hd0"', 'layout = "hd00"') + '[filesystems.boot]\ntype = "ext2"\nlabel = "boot"\n',
     "filesystems.boot.size: required key is missing"),
    (GOOD.replace('name = "t"', 'name = "t"\narch = "i386"'), "arch: i386 is recognised but not supported yet"),
    (GOOD.replace('name = "t"', 'name = "t"\narch = "arm64"'),
     "layout: hd0 is a PV-GRUB (Xen PV) layout: arm64 (Graviton) boots UEFI only; use gpt-uefi"),
    (GOOD.replace('name = "t"', 'name = "t"\narch = "sparc"'), "arch: 'sparc' is not one of x86_64, i386, arm64"),
    (GOOD + "[boot]\ndefault = 2\n", "boot.default: default 2 is not an entry (there are 1)"),
    (GOOD + '[filesystems.root]\nlabel = "a label with spaces"\n',
     "filesystems.root.label: label 'a label with spaces'"),
    ("name = ", "not valid TOML"),
    # issue 13, items 1, 7 and 8: hostile values are refused at load, each naming its key
    (GOOD + '[[files]]\nsrc = "a"\ndest = "/../../../../../../../../srv/escaped"\n',
     "files.0.dest: '/../../../../../../../../srv/escaped': '..' component"),
    (GOOD + '[[files]]\nsrc = "a"\ndest = "/dev/sda"\n', "files.0.dest: '/dev/sda' is under /dev"),
    (GOOD + '[[files]]\nsrc = "a"\ndest = "/etc/a\\u0000b"\n', "files.0.dest: '/etc/a\\x00b' holds the control"),
    (GOOD.replace('size = "1G"', 'size = "1' + "0" * 309 + '"'), "size: '1000"),
    (GOOD.replace('size = "1G"', 'size = "65T"'), "size: '65T' is larger than 64T"),
    (GOOD.replace('size = "1G"', 'size = "auto"\nfree = "' + "9" * 400 + '"'), "free: '9999"),
    (GOOD.replace("debian-cloud-amd64", "a" * 251), "kernel.profile: 'aaaa"),
    ("x = " + "[" * 331 + "]" * 331 + "\n" + GOOD, "x: unknown key"),
    ("x = " + "{a = " * 331 + "1" + "}" * 331 + "\n" + GOOD, "not valid TOML: nested too deeply"),
    (GOOD + '[[boot.entries]]\ntitle = "Debian {version}"\n',
     "boot.entries.0.title: title 'Debian {version}': {version} is not a field"),
    (GOOD + '[[boot.entries]]\ntitle = "Debian {"\n', "boot.entries.0.title: title 'Debian {': Single '{'"),
    (GOOD + '[[boot.entries]]\ntitle = "a\\nkernel /evil"\n', "boot.entries.0.title: title holds the control"),
    (GOOD + '[[boot.entries]]\ntitle = "a"\nargs = "x\\ninitrd /evil"\n',
     "boot.entries.0.args: args holds the control"),
    (GOOD + '[[boot.entries]]\ntitle = "a"\nargs = "x; insmod evil"\n', "boot.entries.0.args: args holds ';'"),
    (GOOD + 'cmdline = "quiet\\nroot=/dev/evil"\n', "kernel.cmdline: cmdline holds the control character"),
    (GOOD + 'root = "/dev/xvda1\\t/"\n', "kernel.root: '/dev/xvda1\\t/' is not"),
    (GOOD + '[[boot.entries]]\ntitle = "a"\nkernel = "../../etc/shadow"\n',
     "boot.entries.0.kernel: '../../etc/shadow'"),
    ('hostname = "web-"\n' + GOOD, "hostname: hostname 'web-' is not a host name (RFC 1123"),
    (GOOD.replace('source = "bootstrap"', 'source = "bootstrap"\nsuite = "--customize-hook=touch /x"'),
     "rootfs.suite: '--customize-hook=touch /x' is not a Debian suite"),
    (GOOD.replace('source = "bootstrap"', 'source = "bootstrap"\nmirror = "--customize-hook=touch /x"'),
     "rootfs.mirror: '--customize-hook=touch /x' is not a mirror URL"),
    (GOOD.replace('source = "bootstrap"', 'source = "bootstrap"\nmirror = "deb http://evil bookworm main"'),
     "rootfs.mirror: 'deb http://evil bookworm main' is not a mirror URL"),
    (GOOD.replace('source = "bootstrap"', 'source = "bootstrap"\ncomponents = ["main contrib"]'),
     "rootfs.components: 'main contrib' is not an archive component"),
    (GOOD.replace('source = "bootstrap"', 'source = "bootstrap"\nvariant = "--x"'), "rootfs.variant: variant '--x'"),
    (GOOD.replace('source = "bootstrap"', 'source = "bootstrap"\npackages = ["ok", "--x"]'),
     "rootfs.packages.1: '--x' is not a Debian package name"),
    ('packages = ["./evil.deb"]\n' + GOOD, "packages.0: './evil.deb' is not a Debian package name"),
    (GOOD.replace('source = "bootstrap"', 'source = "bootstrap"\ntool = "debootstrap"\npackages = ["ab=1"]'),
     "rootfs.packages: packages 'ab=1': debootstrap takes plain package names"),
    (GOOD.replace('source = "bootstrap"', 'source = "bootstrap"\nsnapshot = "99999999T999999Z"'),
     "rootfs.snapshot: '99999999T999999Z' is not a date"),
    ('"a\\nb" = 1\n' + GOOD, "'a\\nb': unknown key"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_recipe_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "x.toml"
    path.write_text(text)
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert str(err.value).startswith(f"{path}: {message}"), str(err.value)


def test_cli_bad_recipe_one_line_exit_2_no_output(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text(GOOD.replace('layout = "hd0"', 'layout = "hd1"'))
    out = tmp_path / "x.img"
    proc = run_imagekit("build", path, "-o", out)
    assert proc.returncode == 2
    # every layout of the table, in its order (a new layout joins the list without a change here)
    assert proc.stderr == f"error: {path}: layout: 'hd1' is not one of {', '.join(m.value for m in Layout)}\n"
    assert proc.stderr.startswith(f"error: {path}: layout: 'hd1' is not one of hd0, hd00, mbr-bios, gpt-uefi, ")
    assert "Traceback" not in proc.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [path]


def test_cli_missing_recipe_file(tmp_path: Path) -> None:
    proc = run_imagekit("build", tmp_path / "nope.toml")
    assert proc.returncode == 2
    assert proc.stderr == f"error: {tmp_path / 'nope.toml'}: no such recipe file\n"


def test_good_values_still_load(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    bootstrap = ('source = "bootstrap"\nsuite = "bookworm-backports"\nmirror = "mirror+file:///etc/apt/mirrors.txt"\n'
                 'components = ["main", "non-free-firmware"]\n'
                 'packages = ["linux-image-cloud-amd64/bookworm-backports", "libc6:amd64", "gcc-12=12.2.0-14"]')
    path.write_text(GOOD.replace('source = "bootstrap"', bootstrap) + 'cmdline = "quiet dyndbg=\\"file x +p\\""\n'
                    '[[boot.entries]]\ntitle = "{name} {{{kernel_version}}}"\n'
                    '[[files]]\nsrc = "motd"\ndest = "/var/run/motd"\n')
    recipe = load_recipe(path)
    assert recipe.boot.entries[0].title == "{name} {{{kernel_version}}}"
    assert recipe.files[0].dest == "/var/run/motd"


def mmdebstrap_argv(tmp_path: Path, arch: str, packages: list[str]) -> list[str]:
    """The argv imagekit gives mmdebstrap, recorded by a fake mmdebstrap on PATH."""
    from imagekit.recipe.model import Bootstrap
    from imagekit.rootfs.bootstrap import _mmdebstrap

    fake = tmp_path / "bin/mmdebstrap"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > {tmp_path}/argv\n')
    fake.chmod(0o755)
    src = Bootstrap(source="bootstrap", suite="bookworm", mirror="http://deb.debian.org/debian")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
        _mmdebstrap(src, arch, packages, tmp_path / "out.tar")
    return (tmp_path / "argv").read_text().splitlines()


def test_mmdebstrap_argv_ends_options_before_suite_and_mirror(tmp_path: Path) -> None:
    """`--` comes before the positional suite, target, mirror."""
    argv = mmdebstrap_argv(tmp_path, "amd64", ["udev"])
    assert argv[-4:] == ["--", "bookworm", str(tmp_path / "out.tar"), "http://deb.debian.org/debian"]
    assert all(a.startswith("--") for a in argv[:-4])
    assert not any("apt-get install" in a for a in argv)  # no kernel asked for: no second install


def test_the_kernel_is_installed_last_on_its_own(tmp_path: Path) -> None:
    """One initrd per bootstrap: the kernel image packages leave --include for a customize hook that runs
    before the one dropping resolv.conf (apt inside the chroot still resolves the mirror)."""
    from imagekit.rootfs.bootstrap import kernel_last

    assert kernel_last(["initramfs-tools", "linux-image-cloud-amd64", "lvm2"]) == (
        ["initramfs-tools", "lvm2"], ["linux-image-cloud-amd64"])
    argv = mmdebstrap_argv(tmp_path, "arm64", ["initramfs-tools", "linux-image-cloud-arm64", "udev"])
    assert "--include=initramfs-tools,udev" in argv
    hooks = [a for a in argv if a.startswith("--customize-hook=")]
    assert hooks[0] == ('--customize-hook=chroot "$1" env DEBIAN_FRONTEND=noninteractive apt-get install --yes '
                        '--no-install-recommends -- linux-image-cloud-arm64')
    assert "resolv.conf" in hooks[1]
