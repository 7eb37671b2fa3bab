"""Lint and boot share one model of PV-GRUB (imagekit/pvgrub/plan.py): the same small PV images through lint's
PV-GRUB rules and through `imagekit boot --loader pvgrub097`'s planning give the same verdict for each.

No appliance and no QEMU: GRUB 0.97 (Debian's grub-legacy) reads each image file itself, once per image (the
boot's `plan`, whose result lint's `plan_findings` turns into findings; `check_pvgrub` is those two in one);
lint's libguestfs wiring is test_lint.py's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from image_factory import MiB, boot_tree, mkext, partitioned

from imagekit.boot.pvgrub097 import failure, plan
from imagekit.lint import Severity
from imagekit.lint.findings import RULES
from imagekit.lint.pvgrub import check_pvgrub, plan_findings
from imagekit.pvgrub.variant import Variant

pytestmark = pytest.mark.slow  # GRUB 0.97 reads a cloud kernel and initrd whole: ~2 s a case, 19 s the module

ARGS = "root=LABEL=root ro console=hvc0"


def entry(title: str, kernel: str, extra: str = "", root: str = "(hd0)") -> str:
    return f"title {title}\n\troot {root}\n{extra}\tkernel /boot/{kernel} {ARGS}\n"


# name -> (menu.lst, partitioned?, ext4 block size, does PV-GRUB boot it, lint's error rules, lint's warnings)
CASES = {
    "gzipped-vmlinux": ("default 0\n" + entry("vmlinux.gz", "{pv}"), False, 4096, True, set(), set()),
    "lz4-bzimage": ("default 0\n" + entry("bzImage", "{bz}"), False, 4096, False, {"pvgrub-kernel-format"}, set()),
    "no-xen-notes": ("default 0\n" + entry("busybox", "busybox"), False, 4096, False, {"pvgrub-not-xen-pv"}, set()),
    "menu-only-command-then-fallback": (
        "default 0\nfallback 1\n" + entry("hidden", "{pv}", "\thiddenmenu\n") + entry("vmlinux.gz", "{pv}"),
        False, 4096, True, set(), {"pvgrub-fallback"}),
    "menu-only-command": ("default 0\n" + entry("hidden", "{pv}", "\thiddenmenu\n"), False, 4096, False,
                          {"pvgrub-unknown-command"}, set()),
    "root-the-disk-lacks": ("default 0\n" + entry("hd0,0", "{pv}", root="(hd0,0)"), False, 4096, False,
                            {"pvgrub-unreadable"}, set()),
    "unreadable-on-1k-blocks": ("default 0\n" + entry("vmlinux.gz", "{pv}"), False, 1024, False,
                                {"pvgrub-unreadable"}, set()),
    "untried-entry-fails": ("default 0\nfallback 1\n" + entry("vmlinux.gz", "{pv}") + entry("bzImage", "{bz}"),
                            False, 4096, True, set(), {"pvgrub-entry"}),
    "hd00-gzipped-vmlinux": ("default 0\n" + entry("vmlinux.gz", "{pv}", root="(hd0,0)"), True, 4096, True,
                             set(), set()),
    "hd00-root-hd0": ("default 0\n" + entry("whole disk", "{pv}"), True, 4096, False, {"pvgrub-unreadable"}, set()),
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory, host_kernel) -> tuple[Path, dict[str, str]]:
    """One /boot: the host's LZ4 bzImage, the gzipped ELF vmlinux a PV build makes of it, busybox (an ELF
    with no Xen notes)."""
    root = boot_tree(tmp_path_factory.mktemp("agree") / "tree", host_kernel, menu="", fstab=None, pv_safe=True)
    shutil.copy(shutil.which("busybox") or "/bin/busybox", root / "boot" / "busybox")
    version = host_kernel.name.removeprefix("vmlinuz-")
    return root, {"pv": f"pvgrub-vmlinux-{version}.gz", "bz": f"vmlinuz-{version}"}


def make(tree: tuple[Path, dict[str, str]], tmp: Path, name: str) -> tuple[Path, Variant]:
    root, names = tree
    text, parted, block = CASES[name][:3]
    (root / "boot" / "grub" / "menu.lst").write_text(text.format(**names))
    fs = tmp / f"{name}.fs"
    mkext(fs, root, 96 * MiB, block=block)
    if not parted:
        return fs, Variant.HD0
    image = tmp / f"{name}.img"
    partitioned(image, "dos", [(fs, "83")])
    return image, Variant.HD00


@pytest.mark.parametrize("name", sorted(CASES))
def test_lint_and_boot_agree(tree, tmp_path: Path, name: str) -> None:
    image, variant = make(tree, tmp_path, name)
    *_, boots, errors, warnings = CASES[name]
    booted = plan(image, variant, "1.05", tmp_path / "keep")  # what imagekit boot --loader pvgrub097 runs
    findings = plan_findings(booted, image, variant, tmp_path)  # lint's findings of that very plan
    lint_errors = {f.rule for f in findings if f.severity is Severity.ERROR}
    assert (booted.xen is not None) is boots, booted.why()
    assert (not lint_errors) is boots, findings  # the same verdict
    assert lint_errors == errors and {f.rule for f in findings if f.severity is Severity.WARNING} == warnings, findings
    if not boots:
        reason, detail = failure(booted)
        assert str(reason) in lint_errors  # the boot report's reason is lint's rule id
        first = next(f for f in findings if f.rule == reason)
        assert first.message.endswith(booted.tried[0].describe()) and booted.tried[0].describe() in detail
        assert booted.plan.menu is not None and first.object.startswith(booted.plan.menu.path + " line ")
    if "pvgrub-fallback" in warnings:  # the boot reports the fallback, lint warns of the entry it stood in for
        assert booted.fell_back and booted.why().startswith(
            "entry 1 'vmlinux.gz' booted as fallback after entry 0 'hidden': Error 27: Unrecognized command at "
            "menu.lst line 5")
        (fb,) = findings
        assert fb.message == f"PV-GRUB boots entry 1 'vmlinux.gz' as fallback: {booted.tried[0].describe()}"
    for f in findings:
        assert RULES[f.rule][0] is f.severity and "\n" not in f.message and f.hint


def test_refusals_name_the_line_the_grub_error_and_the_fix(tree, tmp_path: Path) -> None:
    image, variant = make(tree, tmp_path, "lz4-bzimage")
    (lz4,) = check_pvgrub(image, variant, None)  # the default AKI version, as boot's
    assert lz4.object == "(hd0)/boot/grub/menu.lst line 4"
    assert "Error 9: Unknown boot failure at menu.lst line 4" in lz4.message
    assert "bzImage payload is lz4: AWS documents PV-GRUB for gzip, bzip2, lzo and xz kernels only" in lz4.message
    assert lz4.hint.startswith('set pv_format = "auto" or "vmlinux-gz" in the kernel profile')
    image, variant = make(tree, tmp_path, "menu-only-command")
    (cmd,) = check_pvgrub(image, variant, None)
    assert (cmd.object, cmd.rule) == ("(hd0)/boot/grub/menu.lst line 4", "pvgrub-unknown-command")
    assert "Error 27: Unrecognized command at menu.lst line 4 ('hiddenmenu')" in cmd.message
    assert cmd.hint.startswith("move `hiddenmenu` before the first title")
    image, variant = make(tree, tmp_path, "no-xen-notes")
    (pv,) = check_pvgrub(image, variant, None)
    assert "Not a Xen-ELF image" in pv.message and "CONFIG_XEN_PV" in pv.hint


def test_aki_version_decides_where_menu_lst_is_looked_for(tree, tmp_path: Path) -> None:
    """menu.lst only at (hd0,0)/grub: PV-GRUB 1.03's hd00 AKI finds none (boot: menu-lst-not-found), 1.05 boots."""
    root, names = tree
    boot = tmp_path / "bootfs"
    shutil.copytree(root / "boot", boot)
    (boot / "grub" / "menu.lst").write_text("default 0\n" + entry("x", names["pv"], root="(hd0,0)")
                                            .replace("/boot/", "/"))
    mkext(tmp_path / "boot.fs", boot, 96 * MiB)
    image = tmp_path / "bootpart.img"
    partitioned(image, "dos", [(tmp_path / "boot.fs", "83")])
    old = check_pvgrub(image, Variant.HD00, "1.03")
    assert [f.rule for f in old] == ["menulst-missing"]
    assert old[0].message == "PV-GRUB 1.03 (hd00 AKI) finds no menu.lst (GRUB 0.97 looked in: " \
                             "(hd0,0)/boot/grub/menu.lst: Error 15: File not found)"
    assert str(failure(plan(image, Variant.HD00, "1.03", tmp_path / "k"))[0]) == "menu-lst-not-found"
    assert check_pvgrub(image, Variant.HD00, "1.05") == []
