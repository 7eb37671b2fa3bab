"""PV-GRUB's decision on an image: GRUB 0.97 runs the menu, Xen's domain builder judges the kernel.

The one model of PV-GRUB that `imagekit lint` (imagekit/lint/pvgrub.py) and `imagekit boot --loader
pvgrub097` (imagekit/boot/pvgrub097.py) share, so they cannot disagree about the same image:
  1. GRUB 0.97 itself (imagekit/pvgrub/menu.py `plan_boot`) finds menu.lst where the AKI version looks, runs
     the default entry and the fallbacks in stage2's order, and reads each kernel and initrd whole, as
     Mini-OS's `load_file` does.
  2. Xen's domain builder's rules (imagekit/kernel/xenload.py) judge the kernel bytes GRUB read. A kernel
     Xen refuses fails the entry's `boot` with GRUB's Error 9 (stubdom/grub/kexec.c: `xc_dom_parse_image
     returned -1`, ERR_BOOT_FAILURE) and GRUB takes the next fallback entry, as AWS's troubleshooting page
     shows; so does this model, running that entry alone (`plan_boot(only=N)`).
Each entry's failure has a reason, the same word in the boot report and in lint's rule id:
pvgrub-kernel-format, pvgrub-not-xen-pv, pvgrub-unknown-command (Error 27), pvgrub-unreadable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imagekit.kernel.xenload import KERNEL_FORMAT, XenKernel, XenRefused, xen_load
from imagekit.pvgrub.menu import Attempt, BootPlan, Line, Menu, plan_boot
from imagekit.pvgrub.shell import GrubError
from imagekit.pvgrub.variant import Variant
from imagekit.util.errors import UsageError

BOOT_FAILURE = GrubError(9, "Unknown boot failure")  # what PV-GRUB prints when Xen refuses the kernel
NO_KERNEL = GrubError(8, "Kernel must be loaded before booting")  # an entry that ends without a kernel line
MAX_FALLBACK_ENTRIES = 8  # stage2/shared.h
UNKNOWN_COMMAND = "pvgrub-unknown-command"
UNREADABLE = "pvgrub-unreadable"
MENU_NOT_FOUND = "menu-lst-not-found"
NO_ENTRY = "no-entry-loaded"


@dataclass(frozen=True)
class Tried:
    """One entry PV-GRUB tried: GRUB 0.97's attempt, and Xen's refusal of its kernel if it got that far."""

    attempt: Attempt
    refused: XenRefused | None = None
    no_kernel: bool = False  # GRUB ran every command but none loaded a kernel: `boot` fails with Error 8

    @property
    def error(self) -> GrubError | None:
        if self.refused:
            return BOOT_FAILURE
        return NO_KERNEL if self.no_kernel else self.attempt.error

    @property
    def reason(self) -> str | None:
        """Why the entry fails (the boot report's reason, lint's rule id); None when it boots."""
        if self.refused is not None:
            return self.refused.reason
        error = self.error
        if error is None:
            return None
        return UNKNOWN_COMMAND if error.number == 27 else UNREADABLE

    @property
    def line(self) -> Line | None:
        """The menu.lst line at fault: the command GRUB failed at, or the kernel line Xen refused."""
        if self.refused is not None:
            kernel = self.attempt.loaded("kernel")
            return kernel.line if kernel else None
        return self.attempt.failed_at

    def describe(self) -> str:
        entry = self.attempt.entry
        head = f"entry {entry.index} {entry.title!r}"
        if self.no_kernel:
            return f"{head}: {NO_KERNEL} (no kernel line)"
        if self.refused is not None:
            kernel = self.attempt.loaded("kernel")
            line = f" at menu.lst line {kernel.line.number}" if kernel else ""
            return f"{head}: {BOOT_FAILURE}{line} (Xen's loader: {self.refused.detail})"
        failed = self.attempt.failed_at
        where = f" at menu.lst line {failed.number} ({failed.text!r})" if failed else ""
        return f"{head}: {self.attempt.error}{where}"


@dataclass(frozen=True)
class Grub097Plan:
    """What PV-GRUB does with the image: the entries it tries, and the kernel it starts (if any)."""

    aki_version: str
    plan: BootPlan  # GRUB 0.97's own run of the menu (default, then fallbacks)
    tried: tuple[Tried, ...]  # every entry tried, in order, including those Xen refused
    xen: XenKernel | None  # the kernel Xen would start; None when no entry boots

    @property
    def booted(self) -> Attempt | None:
        return self.tried[-1].attempt if self.xen is not None else None

    @property
    def fell_back(self) -> bool:
        return self.booted is not None and len(self.tried) > 1

    def why(self) -> str:
        """Which entry boots and why: the default, or a fallback after the entries that failed."""
        booted = self.booted
        if booted is None:
            return "no entry boots: " + "; ".join(t.describe() for t in self.tried)
        name = f"entry {booted.entry.index} {booted.entry.title!r}"
        if not self.fell_back:
            return f"{name} booted: the default entry"
        return f"{name} booted as fallback after " + "; ".join(t.describe() for t in self.tried[:-1])

    def searched(self) -> str:
        return "; ".join(f"{path}: {error}" for path, error in self.plan.searched)

    def failure(self) -> tuple[str, str]:
        """(reason, detail) when no entry boots: the default entry's failure names it."""
        if self.plan.menu is None:
            return MENU_NOT_FOUND, f"PV-GRUB {self.aki_version} looked in: {self.searched()}"
        if not self.tried:
            return NO_ENTRY, f"{self.plan.menu.path}: no entry"
        return self.tried[0].reason or UNREADABLE, self.why()


def fallbacks(menu: Menu) -> list[int]:
    """The `fallback` list as stage2's fallback_func reads it: up to 8 entry numbers, in order."""
    out: list[int] = []
    for word in (menu.fallback or "").replace("=", " ").split()[:MAX_FALLBACK_ENTRIES]:
        if not word.isdigit() or int(word) >= len(menu.entries):
            break
        out.append(int(word))
    return out


def judged(attempt: Attempt) -> tuple[Tried, XenKernel | None]:
    """An entry GRUB 0.97 ran, with Xen's loader's verdict on the kernel it read."""
    if attempt.ok and attempt.loaded("kernel") is None:
        return Tried(attempt, no_kernel=True), None
    if not attempt.ok:
        return Tried(attempt), None
    try:
        return Tried(attempt), _xen(attempt)
    except XenRefused as refused:
        return Tried(attempt, refused), None


def plan(image: Path, variant: Variant, aki_version: str, keep: Path) -> Grub097Plan:
    """GRUB 0.97 runs the menu; Xen's loader judges the kernel of the entry that boots; a refused kernel sends
    GRUB to the next fallback (that entry run alone, as GRUB would run it next)."""
    grub = plan_boot(image, variant, aki_version=aki_version, keep=keep)
    tried = [Tried(a) for a in grub.attempts]
    order = fallbacks(grub.menu) if grub.menu else []
    while tried:
        last, xen = judged(tried[-1].attempt)
        tried[-1] = last
        if xen is not None:
            return Grub097Plan(aki_version, grub, tuple(tried), xen)
        if not last.attempt.ok and len(tried) == len(grub.attempts):
            break  # GRUB's own run: every fallback failed already
        if len(tried) > len(order):
            break
        following = plan_boot(image, variant, aki_version=aki_version, keep=keep, only=order[len(tried) - 1])
        tried += [Tried(a) for a in following.attempts]
    return Grub097Plan(aki_version, grub, tuple(tried), None)


def plan_entry(image: Path, variant: Variant, aki_version: str, keep: Path, index: int) -> Tried | None:
    """Entry `index` alone, as PV-GRUB would run it were it the default (no fallback): how lint judges an entry
    PV-GRUB does not try on this boot. None when GRUB 0.97 did not run it."""
    grub = plan_boot(image, variant, aki_version=aki_version, keep=keep, only=index)
    return judged(grub.attempts[0])[0] if grub.attempts else None


def _xen(attempt: Attempt) -> XenKernel:
    kernel = attempt.loaded("kernel")
    assert kernel is not None and kernel.read.data is not None
    return xen_load(kernel.read.data.read_bytes(), kernel.file)


def aki_version_for(variant: Variant, version: str | None) -> str:
    """--aki-version, or what `imagekit aki` registers for the layout (the newest table that has it)."""
    from imagekit.pvgrub.aki import default_version

    if version is None:
        return default_version(str(variant))
    parts = version.split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise UsageError(f"--aki-version: {version!r} is not a PV-GRUB version like 1.03 or 1.05")
    return version


__all__ = ["KERNEL_FORMAT", "Grub097Plan", "Tried", "aki_version_for", "fallbacks", "plan", "plan_entry"]
