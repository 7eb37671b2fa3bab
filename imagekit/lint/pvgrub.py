"""Lint's PV-GRUB rules: the boot's own model (imagekit/pvgrub/plan.py), so lint and boot cannot disagree.

GRUB 0.97 (Debian's grub-legacy, run on the image file read-only) finds menu.lst where the AKI version looks
and runs the entries in its order; Xen's domain builder's rules judge the kernel it read. The verdict is
`imagekit boot --loader pvgrub097`'s, before QEMU:
  - no entry boots: each entry PV-GRUB tried is an error (its reason is the rule: pvgrub-kernel-format,
    pvgrub-not-xen-pv, pvgrub-unknown-command, pvgrub-unreadable), naming the menu.lst line and GRUB's error;
    no menu.lst where that AKI looks is menulst-missing;
  - a fallback boots: each entry that failed before it is a warning (pvgrub-fallback);
  - an entry PV-GRUB does not try on this boot, run alone, that would fail: a warning (pvgrub-entry).
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

from imagekit.lint import pvgrub_cache
from imagekit.lint.findings import Finding, finding
from imagekit.pvgrub.plan import Grub097Plan, Tried, aki_version_for, plan, plan_entry
from imagekit.pvgrub.shell import ShellFailed
from imagekit.pvgrub.variant import Variant
from imagekit.recipe.layouts import PartitionTable, aki_for_table
from imagekit.util.run import run

MAX_ENTRIES = 8  # entries judged alone (one GRUB 0.97 run each)
# GRUB 0.97's error numbers (stage2/common.c err_list) -> what to do about a line that fails with them
ROOT_ERRORS = frozenset({12, 21, 22})  # invalid device, selected disk does not exist, no such partition
PATH_ERRORS = frozenset({1, 11, 15, 23})  # not an absolute path, bad device string, file not found
FS_ERRORS = frozenset({2, 14, 16, 17, 24, 25})  # the filesystem code cannot read it


def variant_of_table(parttype: str | None) -> Variant | None:
    """The AKI that reads an image with this partition table (libguestfs's name): hd0 (none), hd00 (MBR);
    None for GPT (the layout table's aki_for_table)."""
    if parttype is not None and parttype not in PartitionTable.__members__.values():
        return None
    return aki_for_table(PartitionTable(parttype) if parttype is not None else None)


_DONE: dict[tuple[object, ...], list[Finding]] = {}  # this process's verdicts, by the file's identity
_DONE_LOCK = threading.Lock()


def check_pvgrub(image: Path, variant: Variant, aki_version: str | None, fmt: str = "raw") -> list[Finding]:
    """The PV-GRUB findings for `image` on that AKI (--aki-version, else what `imagekit aki` registers).
    A file linted again, unchanged (device, inode, size, mtime, ctime), is not run again: in the same process
    (_DONE), or in another one (imagekit/lint/pvgrub_cache.py, IMAGEKIT_LINT_CACHE=off bypasses it)."""
    version = aki_version_for(variant, aki_version)
    st = image.stat()
    aki = [str(variant), version, fmt]
    key = (*pvgrub_cache.identity(st), *aki)
    with _DONE_LOCK:
        if key in _DONE:
            return list(_DONE[key])
    found = pvgrub_cache.load(st, aki)
    if found is None:
        found, crashed = _check_pvgrub(image, variant, version, fmt)
        if not crashed:
            pvgrub_cache.store(st, aki, found)
    with _DONE_LOCK:
        _DONE[key] = list(found)
    return found


def _check_pvgrub(image: Path, variant: Variant, version: str, fmt: str) -> tuple[list[Finding], bool]:
    """The findings, and whether GRUB 0.97's shell crashed (a verdict not to store: a timeout may pass)."""
    with tempfile.TemporaryDirectory(prefix="imagekit-lint-grub097-") as tmp:
        work = Path(tmp)
        raw = _raw(image, fmt, work)
        try:
            return plan_findings(plan(raw, variant, version, work / "keep"), raw, variant, work), False
        except ShellFailed as exc:  # GRUB 0.97 itself crashed on the image: PV-GRUB boots nothing from it either
            return [finding("pvgrub-unreadable", str(image), exc.message, "boot it with imagekit boot --loader "
                            "pvgrub097 -v to see GRUB 0.97's command and output")], True


def plan_findings(result: Grub097Plan, raw: Path, variant: Variant, work: Path) -> list[Finding]:
    """The findings of the boot's plan for the image, then of each entry it does not try."""
    return verdict_findings(result, variant) + _untried(result, raw, variant, work)


def _untried(result: Grub097Plan, raw: Path, variant: Variant, work: Path) -> list[Finding]:
    """Each entry PV-GRUB does not try on this boot, run alone (one GRUB 0.97 run each), unless it is the same
    commands as the entry that boots."""
    menu = result.plan.menu
    if menu is None:
        return []
    tried = {t.attempt.entry.index for t in result.tried}
    booting = {result.booted.entry.commands} if result.booted else set()
    findings: list[Finding] = []
    for entry in menu.entries[:MAX_ENTRIES]:
        if entry.index in tried or entry.commands in booting:
            continue
        alone = plan_entry(raw, variant, result.aki_version, work / f"entry{entry.index}", entry.index)
        findings += entry_findings(alone, menu.path, variant)
    return findings


def _raw(image: Path, fmt: str, work: Path) -> Path:
    """GRUB 0.97's shell opens the file itself: a qcow2 is converted to a sparse raw copy first."""
    if fmt == "raw":
        return image
    raw = work / "image.raw"
    run(["qemu-img", "convert", "-f", fmt, "-O", "raw", image, raw])
    return raw


def verdict_findings(result: Grub097Plan, variant: Variant) -> list[Finding]:
    """The boot's verdict as findings: errors when no entry boots, warnings for entries a fallback stood in for."""
    menu = result.plan.menu
    if menu is None:
        first = result.plan.searched[0][0] if result.plan.searched else variant.legacy_root
        return [finding("menulst-missing", first, f"PV-GRUB {result.aki_version} ({variant} AKI) finds no menu.lst "
                        f"(GRUB 0.97 looked in: {result.searched()})",
                        "write /boot/grub/menu.lst on the first partition (or the whole-disk filesystem)"
                        + ("" if result.aki_version != "1.03" else ", or boot with a PV-GRUB 1.04+ AKI"))]
    if not result.tried:
        return []  # no title: menulst-no-entries says so
    if result.booted is None:
        return [_failed(t, menu.path, variant, t.reason or "pvgrub-unreadable",
                        f"no entry boots (PV-GRUB {result.aki_version} waits at its menu): ") for t in result.tried]
    booted = result.booted.entry
    return [_failed(t, menu.path, variant, "pvgrub-fallback",
                    f"PV-GRUB boots entry {booted.index} {booted.title!r} as fallback: ") for t in result.tried[:-1]]


def entry_findings(alone: Tried | None, path: str, variant: Variant) -> list[Finding]:
    if alone is None or alone.reason is None:
        return []
    return [_failed(alone, path, variant, "pvgrub-entry",
                    "not tried on this boot, but it fails whenever PV-GRUB runs it: ")]


def _failed(t: Tried, path: str, variant: Variant, rule: str, lead: str) -> Finding:
    line = t.line
    where = f"{path} line {line.number}" if line else f"{path} entry {t.attempt.entry.index}"
    return finding(rule, where, lead + t.describe(), hint_for(t, variant))


def hint_for(t: Tried, variant: Variant) -> str:
    """What to do about an entry GRUB 0.97 or Xen's loader fails, by its reason and GRUB's error number."""
    kernel = t.attempt.loaded("kernel")
    if t.reason == "pvgrub-kernel-format":
        name = kernel.file if kernel else "KERNEL"
        return ('set pv_format = "auto" or "vmlinux-gz" in the kernel profile (the build boots a gzipped ELF '
                f"vmlinux), or convert it: imagekit kernel aki {name} -o {name}.gz and point the kernel line at that")
    if t.reason == "pvgrub-not-xen-pv":
        return "use a kernel built with CONFIG_XEN_PV (Debian: linux-image-cloud-amd64)"
    if t.reason == "pvgrub-unknown-command":
        word = t.line.word if t.line else "it"
        return f"move `{word}` before the first title: GRUB 0.97 runs menu-only commands there only"
    number = t.error.number if t.error else 0
    if t.no_kernel or number == 8:
        return "add `kernel /boot/vmlinuz-VERSION root=... console=hvc0` to the entry"
    if number == 19:
        return "put the kernel line before the initrd line"
    if number in ROOT_ERRORS:
        root = variant.legacy_root
        return f"write `root {root}`: the {variant} AKI's disk is {root}" + (
            "" if variant is Variant.HD0 else " (the first partition)")
    if number in PATH_ERRORS:
        return "point the line at a file on the entry's root device, by an absolute path"
    if number in FS_ERRORS:
        return ("put /boot on a filesystem PV-GRUB reads whole: ext2/3/4 with 4 KiB blocks and no 64bit "
                "(mke2fs -O ^64bit), XFS or ReiserFS; a regular file, no sparse holes")
    return "fix the line GRUB 0.97 stops at"
