"""lint on real images, each broken on purpose; each image built once (module fixtures) and linted with the
default reader (native); test_readers_agree lints each one through both readers."""

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from image_factory import MiB, boot_tree, lvm_image, mkext, mkvfat, partitioned, sh
from parity import assert_readers_agree

from imagekit.kernel.config import Target
from imagekit.lint import RULES, Severity, has_errors, lint_image
from imagekit.lint.kernel import check_cmdline
from tests.util import sha256

pytestmark = pytest.mark.slow

ROOT_UUID = "0e2c5a3c-1d2b-4c4e-9a55-3f1d2c3b4a5e"
IMAGES: dict[str, Path] = {}  # fixture name -> the image it built (test_readers_agree)


def menu(version: str, *, root: str = "(hd0)", prefix: str = "/boot", args: str = "root=LABEL=root ro "
         "console=ttyS0 console=hvc0", fallback: bool = True, kernel: str | None = None) -> str:
    entry = (f"title Debian {{n}}\n\troot {root}\n\tkernel {prefix}/{kernel or 'vmlinuz-' + version} {args}\n"
             f"\tinitrd {prefix}/initrd.img-{version}\n")
    head = "default 0\ntimeout 1\n" + ("fallback 1\n" if fallback else "")
    return head + entry.format(n=0) + (entry.format(n=1) if fallback else "")


def version_of(kernel: Path) -> str:
    return kernel.name.removeprefix("vmlinuz-")


def rules(findings, severity=None) -> set[str]:
    return {f.rule for f in findings if severity is None or f.severity is severity}


def elf32() -> bytes:
    ident = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)
    return ident + struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, 0x100000, 0, 0, 0, 52, 32, 0, 40, 0, 0) + bytes(4096)


# --- a good partitionless (hd0) image --------------------------------------------------------------


@pytest.fixture(scope="module")
def good_hd0(tmp_path_factory, host_kernel):
    tmp = tmp_path_factory.mktemp("good")
    version = version_of(host_kernel)
    tree = boot_tree(tmp / "tree", host_kernel, menu=menu(version, kernel=f"pvgrub-vmlinux-{version}.gz"), pv_safe=True,
                     fstab="LABEL=root / ext4 defaults 0 1\n/dev/sdb /mnt auto defaults,nofail 0 2\n"
                           "proc /proc proc defaults 0 0\n")
    image = tmp / "good.img"
    mkext(image, tree, 96 * MiB)
    before = sha256(image)
    IMAGES["good_hd0"] = image
    return image, before, lint_image(image, target="pv")


def test_good_image_has_no_errors(good_hd0):
    _, _, findings = good_hd0
    assert not has_errors(findings), findings
    # the gzipped ELF vmlinux a PV build makes of Debian's LZ4 bzImage (the hd00 test below boots the bzImage)
    assert rules(findings) == set()


def test_lint_never_writes(good_hd0):
    image, before, _ = good_hd0
    assert sha256(image) == before


def test_hvm_target_wants_a_bootloader(good_hd0):
    image, before, _ = good_hd0
    findings = lint_image(image, target="hvm")
    assert "hvm-bootloader-missing" in rules(findings, Severity.ERROR)
    assert not {r for r in rules(findings) if r.startswith("pvgrub-")}  # a PV-GRUB concern only
    assert "hvm-driver-missing" not in rules(findings)  # nvme built in, ena.ko in Debian's initrd
    assert sha256(image) == before


# --- a partitionless image broken in many ways --------------------------------------------------


@pytest.fixture(scope="module")
def broken_hd0(tmp_path_factory, host_kernel):
    tmp = tmp_path_factory.mktemp("broken")
    version = version_of(host_kernel)
    text = (
        "default 5\ntimeout 1\nfallback 7\n"
        "title missing kernel\n\troot (hd0,0)\n\tkernel /boot/vmlinuz-missing root=LABEL=root console=hvc0\n"
        "\tinitrd /boot/initrd-missing\n"
        "title a 32-bit kernel\n\troot (hd0)\n\tkernel /boot/vmlinux-i386 root=/dev/sda1\n"
    )
    fstab = (f"UUID={ROOT_UUID.replace('0e2c', 'dead')} / ext4 defaults 0 1\n"
             "/dev/sdb /mnt ext4 defaults 0 2\n/dev/xvdf /data ext4 defaults 0 2\n")
    tree = boot_tree(tmp / "tree", host_kernel, menu=text, fstab=fstab)
    (tree / "boot" / "vmlinux-i386").write_bytes(elf32())
    (tree / "etc/ssh").mkdir()
    for name in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "ssh_host_rsa_key", "sshd_config"):
        (tree / "etc/ssh" / name).write_text("not a real key\n")  # a bootstrap's host keys, left in the image
    image = tmp / "broken.img"
    mkext(image, tree, 96 * MiB, features="64bit")
    proc = subprocess.run([sys.executable, "-m", "imagekit", "lint", str(image), "--json"],
                          capture_output=True, text=True)
    IMAGES["broken_hd0"] = image
    return proc, version


def test_broken_image_via_cli(broken_hd0):
    proc, _ = broken_hd0
    assert proc.returncode == 1, proc.stderr
    assert "lint error(s)" in proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False and (doc["schema"], doc["verdict"]) == ("imagekit.lint/1", "fail")
    found = {f["rule"] for f in doc["findings"]}
    expected = {
        "bootfs-ext4-64bit", "kernel-arch", "kernel-no-config", "cmdline-console", "root-device-name",
        "fstab-unresolved", "fstab-instance-store-nofail", "fstab-device-name",
        # GRUB 0.97 and Xen's loader rules (the boot's model): GRUB runs entry 0 (default 5 is no entry, fallback 7
        # neither), whose (hd0,0) is no device of the hd0 AKI's disk; entry 1, run alone: its kernel, all zeros
        # but the header, is sparse and GRUB 0.97's ext4 code fails at the hole
        "pvgrub-unreadable", "pvgrub-entry", "ssh-host-keys-shipped",
    }
    assert expected <= found, expected - found
    [keys] = [f for f in doc["findings"] if f["rule"] == "ssh-host-keys-shipped"]
    assert (keys["severity"], keys["object"]) == ("error", "/dev/sda:/etc/ssh")
    assert "(ssh_host_ed25519_key, ssh_host_rsa_key)" in keys["message"]  # the private keys, not .pub
    for f in doc["findings"]:
        assert set(f) == {"rule", "severity", "object", "message", "hint"}
        assert f["severity"] == RULES[f["rule"]][0]
        assert "\n" not in f["message"]
    untried = next(f for f in doc["findings"] if f["rule"] == "pvgrub-entry")
    assert "Error 16: Inconsistent filesystem structure" in untried["message"]
    assert untried["object"] == "(hd0)/boot/grub/menu.lst line 10"
    arch = next(f for f in doc["findings"] if f["rule"] == "kernel-arch")
    assert "i386" in arch["message"] and "32-bit" in arch["message"]


# --- hd00: a separate /boot partition first, root second ---------------------------------------


@pytest.fixture(scope="module")
def hd00_bootpart(tmp_path_factory, host_kernel):
    tmp = tmp_path_factory.mktemp("hd00")
    version = version_of(host_kernel)
    # menu.lst at /grub/menu.lst of the /boot partition: only PV-GRUB 1.04+ looks there
    boot = boot_tree(tmp / "boot", host_kernel, menu=None, fstab=None, prefix="/")
    (boot / "grub").mkdir()
    (boot / "grub" / "menu.lst").write_text(menu(version, root="(hd0,0)", prefix="",
                                                 args=f"root=UUID={ROOT_UUID} ro console=hvc0"))
    root = tmp / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "fstab").write_text(f"UUID={ROOT_UUID} / ext4 defaults 0 1\nLABEL=boot /boot ext2 defaults 0 2\n")
    mkext(tmp / "boot.fs", boot, 64 * MiB, fstype="ext2", label="boot")
    mkext(tmp / "root.fs", root, 32 * MiB, uuid=ROOT_UUID)
    image = tmp / "hd00.img"
    partitioned(image, "dos", [(tmp / "boot.fs", "83"), (tmp / "root.fs", "83")])
    IMAGES["hd00_bootpart"] = image
    return lint_image(image, target="pv", aki_version="1.05")  # 1.03 looks at (hd0,0)/boot/grub only


def test_hd00_boot_partition(hd00_bootpart):
    # Debian's cloud kernel is lz4-compressed: outside what AWS documents for PV-GRUB, Xen's loader refuses it,
    # in both entries: GRUB 0.97 runs the default, then the fallback
    assert rules(hd00_bootpart, Severity.ERROR) == {"pvgrub-kernel-format"}, hd00_bootpart
    lz4 = next(f for f in hd00_bootpart if f.rule == "pvgrub-kernel-format")
    assert lz4.object == "(hd0,0)/grub/menu.lst line 6"
    assert "bzImage payload is lz4: AWS documents PV-GRUB for gzip, bzip2, lzo and xz" in lz4.message
    assert lz4.hint.startswith('set pv_format = "auto" or "vmlinux-gz" in the kernel profile')
    location = next(f for f in hd00_bootpart if f.rule == "menulst-location")
    assert location.object == "(hd0,0)/grub/menu.lst"
    assert "(hd0,0)/boot/grub/menu.lst" in location.message


# --- GPT, and a first partition that is swap -----------------------------------------------------


@pytest.fixture(scope="module")
def gpt_swap_first(tmp_path_factory, host_kernel):
    tmp = tmp_path_factory.mktemp("gpt")
    tree = boot_tree(tmp / "tree", host_kernel, menu=menu(version_of(host_kernel), root="(hd0,1)"),
                     fstab="LABEL=root / ext4 defaults 0 1\n")
    mkext(tmp / "root.fs", tree, 96 * MiB)
    with open(tmp / "swap.fs", "wb") as f:
        f.truncate(8 * MiB)
    sh("mkswap", "-q", tmp / "swap.fs")
    image = tmp / "gpt.img"
    partitioned(image, "gpt", [(tmp / "swap.fs", "S"), (tmp / "root.fs", "L")])
    IMAGES["gpt_swap_first"] = image
    return lint_image(image, target="pv")


def test_gpt_and_first_partition(gpt_swap_first):
    assert {"disk-gpt", "disk-first-partition-not-boot"} <= rules(gpt_swap_first, Severity.ERROR)


# --- a /boot filesystem PV-GRUB cannot read, with a menu.lst GRUB would refuse ---------------------


@pytest.fixture(scope="module")
def vfat_bad_menu(tmp_path_factory, host_kernel):
    tmp = tmp_path_factory.mktemp("vfat")
    tree = boot_tree(tmp / "tree", host_kernel, menu="default zero\ntitle x\n\tkernel /boot/x\n", fstab=None)
    image = tmp / "vfat.img"
    mkvfat(image, tree, 64 * MiB)
    IMAGES["vfat_bad_menu"] = image
    return lint_image(image, target="pv")


def test_unsupported_boot_fs_and_parse_error(vfat_bad_menu):
    assert {"bootfs-unsupported", "menulst-parse"} <= rules(vfat_bad_menu, Severity.ERROR)
    parse = next(f for f in vfat_bad_menu if f.rule == "menulst-parse")
    assert "line 1" in parse.message


# --- LVM without a separate /boot ------------------------------------------------------------------


@pytest.fixture(scope="module")
def lvm_no_boot(tmp_path_factory, host_kernel):
    tmp = tmp_path_factory.mktemp("lvm")
    image = tmp / "lvm.img"
    lvm_image(image, host_kernel, menu(version_of(host_kernel), root="(hd0,0)"))
    IMAGES["lvm_no_boot"] = image
    return lint_image(image, target="pv")


def test_lvm_needs_boot_partition(lvm_no_boot):
    assert {"disk-lvm-without-boot", "menulst-missing"} <= rules(lvm_no_boot, Severity.ERROR)


# --- no launch -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "target", "expected"),
    [
        ("root=LABEL=root console=hvc0", Target.PV, set()),
        ("root=LABEL=root console=hvc0 console=ttyS0", Target.PV, {"cmdline-console-order"}),
        ("root=LABEL=root", Target.PV, {"cmdline-console"}),
        ("root=LABEL=root console=ttyS0,115200", Target.HVM, set()),
        ("root=LABEL=root console=hvc0", Target.NITRO, {"cmdline-console"}),
    ],
)
def test_cmdline_console(args, target, expected):
    assert {f.rule for f in check_cmdline("entry 0", args, target)} == expected


def test_rule_catalogue():
    for rule, (severity, summary) in RULES.items():
        assert rule == rule.lower() and " " not in rule
        assert isinstance(severity, Severity) and summary


def test_bad_target_and_missing_image(tmp_path):
    from imagekit.util.errors import UsageError

    with pytest.raises(UsageError, match="--target: 'xen' is not one of pv, hvm, nitro"):
        lint_image(tmp_path / "x.img", target="xen")
    with pytest.raises(UsageError, match="no such image file"):
        lint_image(tmp_path / "x.img")


@pytest.mark.parametrize("name", ["good_hd0", "broken_hd0", "hd00_bootpart", "gpt_swap_first", "vfat_bad_menu",
                                  "lvm_no_boot"])
def test_readers_agree(request, name):
    """Every target's findings, native reader vs libguestfs, on each image above (LVM: native refuses it
    and auto reads it through libguestfs)."""
    request.getfixturevalue(name)
    assert_readers_agree(IMAGES[name], native=name != "lvm_no_boot")
