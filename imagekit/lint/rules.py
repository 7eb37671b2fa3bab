"""The lint rules as a registry: each `Rule` declares, in one place, the finding ids it can give (their
severity and summary are the catalogue's, lint/findings.py RULES), the targets it applies to and its
check; `lint_view` loops over `REGISTRY` in order, and that order is the order of the findings.

A check is `check(ctx) -> findings` on a `LintContext`: the image view and the facts several rules share
(the boot entries' command lines and kernels, the root filesystem), each read once, when a rule first
asks. A file a check could not read is a finding (file-unreadable) and lint goes on. A gate rule's
disk-unreadable ends lint (there is nothing to read); a background rule reads no more of the view than
its `needs` (read first, here, in the thread that owns the view) and runs beside the others.

Adding a rule: docs/architecture.md, "Add a lint rule".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from imagekit.kernel.config import Target
from imagekit.lint.disk import boot_filesystem, check_disk, check_labels, grub_device, mountable
from imagekit.lint.findings import Finding, Severity, finding, unreadable
from imagekit.lint.grubcfg import (
    CFG_PATHS,
    check_esp,
    check_grub_cfg,
    check_nitro_cmdline,
    entry_kernels,
    find_grub_cfg,
)
from imagekit.lint.kernel import MAX_INITRD, MAX_KERNEL, KernelFiles, check_cmdline, check_kernel
from imagekit.lint.menu import BootMenu, check_menu
from imagekit.lint.pvgrub import check_pvgrub, variant_of_table
from imagekit.lint.system import (
    check_fstab,
    check_fstab_esp,
    check_fstab_types,
    check_hvm_boot,
    check_nic_name,
    check_root_arg,
    check_ssh_host_keys,
    root_filesystem,
)
from imagekit.lint.view import Filesystem, ImageView, UnreadableFile
from imagekit.manifest import Manifest
from imagekit.pvgrub.variant import Variant
from imagekit.recipe.arch import spec_named
from imagekit.util.progress import StageTimer

MAX_KERNELS = 3  # kernels judged per image (each one is read out of the image)

ALL = frozenset(Target)
PV = frozenset({Target.PV})
HVM = frozenset({Target.HVM, Target.NITRO})

Cmdline = tuple[str, str]  # (where: "menu.lst entry 0", the kernel arguments)


@dataclass
class Boot:
    """What the boot menu (menu.lst for PV, grub.cfg for HVM) says: the kernel command lines (the entry
    booted first, first) and the kernels; `findings`: what reading the menu found wrong."""

    cmdlines: list[Cmdline] = field(default_factory=list)
    kernels: list[KernelFiles] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)


@dataclass
class Root:
    """The root filesystem (root= of the first command line, else the one with /etc/fstab) and the
    filesystem types the kernel must read (root and /boot)."""

    fs: Filesystem | None = None
    fs_types: set[str] = field(default_factory=set)
    findings: list[Finding] = field(default_factory=list)


@dataclass
class LintContext:
    """One lint of one image: what every check is given. The shared facts are read on first use."""

    view: ImageView
    target: Target
    arch: str
    manifest: Manifest | None
    aki_version: str | None = None
    fmt: str = "raw"

    @cached_property
    def boot(self) -> Boot:
        found: list[Finding] = []  # what reading the menu found, kept when a file then cannot be read
        try:
            if self.target is Target.PV:
                return pv_boot(self.view, found)
            return hvm_boot(self.view, found, serial=spec_named(self.arch).grub_serial)
        except UnreadableFile as exc:
            return Boot(findings=[*found, unreadable(exc)])

    @cached_property
    def root(self) -> Root:
        cmdlines = self.boot.cmdlines
        try:
            fs = root_filesystem(self.view, root_arg(cmdlines[0][1]) if cmdlines else None)
            return Root(fs, fs_types(self.view, fs))
        except UnreadableFile as exc:
            return Root(findings=[unreadable(exc)])

    @cached_property
    def variant(self) -> Variant | None:
        return pvgrub_variant(self.view, self.boot.kernels)


Check = Callable[[LintContext], Iterable[Finding]]


@dataclass(frozen=True)
class Rule:
    name: str  # what the progress row names: "fstab", "kernel"
    ids: tuple[str, ...]  # the catalogued finding ids (RULES) this check can give
    targets: frozenset[Target]
    check: Check
    gate: bool = False  # its disk-unreadable ends lint: no filesystem to read
    background: bool = False  # runs in a worker thread: reads nothing of the view but its `needs`
    needs: tuple[str, ...] = ()  # LintContext facts read (in the view's thread) before a background check


def guarded(check: Callable[..., Iterable[Finding]], *args: Any) -> list[Finding]:
    """One check's findings; a file it could not read becomes a finding and lint goes on."""
    try:
        return list(check(*args))
    except UnreadableFile as exc:
        return [unreadable(exc)]


# --- the checks, on the context -----------------------------------------------------------------


def lint_disk(ctx: LintContext) -> list[Finding]:
    return guarded(check_disk, ctx.view)


def lint_filesystems(ctx: LintContext) -> list[Finding]:
    if mountable(ctx.view):
        return []
    return [finding("disk-unreadable", ctx.view.image.name, "no filesystem found on the image",
                    "is this a disk image?")]


def lint_labels(ctx: LintContext) -> list[Finding]:
    return guarded(check_labels, ctx.view)


def lint_boot_menu(ctx: LintContext) -> list[Finding]:
    return ctx.boot.findings


def lint_cmdlines(ctx: LintContext) -> list[Finding]:
    """Each command line's console, Nitro arguments and root=, in that order per command line."""
    found: list[Finding] = []
    for where, args in ctx.boot.cmdlines:
        found += guarded(check_cmdline, where, args, ctx.target)
        found += guarded(check_nitro_cmdline, where, args, ctx.target)
        found += guarded(check_root_arg, ctx.view, where, root_arg(args), ctx.target)
    return found


def lint_root(ctx: LintContext) -> list[Finding]:
    return ctx.root.findings


def lint_kernels(ctx: LintContext) -> list[Finding]:
    found: list[Finding] = []
    for k in ctx.boot.kernels[:MAX_KERNELS]:
        found += guarded(check_kernel, ctx.view, k, ctx.target, ctx.arch, ctx.root.fs_types)
    return found


def lint_fstab(ctx: LintContext) -> list[Finding]:
    if ctx.root.fs is None:
        return []
    return guarded(check_fstab, ctx.view, ctx.root.fs, ctx.target)


def lint_fstab_types(ctx: LintContext) -> list[Finding]:
    if ctx.root.fs is None:
        return []
    return guarded(check_fstab_types, ctx.view, ctx.root.fs)


def lint_fstab_esp(ctx: LintContext) -> list[Finding]:
    if ctx.root.fs is None:
        return []
    return guarded(check_fstab_esp, ctx.view, ctx.root.fs)


def lint_nic_name(ctx: LintContext) -> list[Finding]:
    if ctx.root.fs is None or not ctx.boot.cmdlines:
        return []
    return guarded(check_nic_name, ctx.view, ctx.root.fs, *ctx.boot.cmdlines[0])


def lint_ssh_host_keys(ctx: LintContext) -> list[Finding]:
    if ctx.root.fs is None:
        return []
    return guarded(check_ssh_host_keys, ctx.view, ctx.root.fs)


def lint_pvgrub(ctx: LintContext) -> list[Finding]:
    """GRUB 0.97 itself on the image file (a subprocess) and Xen's loader rules, for the AKI's variant."""
    if ctx.variant is None:
        return []
    return check_pvgrub(ctx.view.image, ctx.variant, ctx.aki_version, ctx.fmt)


def lint_hvm_boot(ctx: LintContext) -> list[Finding]:
    return guarded(check_hvm_boot, ctx.view, ctx.manifest.boot_mode if ctx.manifest else None, ctx.arch)


def lint_registration(ctx: LintContext) -> list[Finding]:
    return check_registration(ctx.manifest, ctx.target)


# --- the registry: the order is the findings' order ------------------------------------------------

DISK_IDS = ("disk-unreadable", "disk-gpt", "disk-first-partition-not-boot", "disk-lvm-without-boot",
            "bootfs-unsupported", "bootfs-btrfs-beta", "bootfs-ext4-64bit", "file-unreadable")
MENU_IDS = ("menulst-location", "menulst-parse", "menulst-no-entries", "menulst-no-fallback", "menulst-path",
            "file-unreadable")
GRUB_IDS = ("grubcfg-missing", "grubcfg-parse", "grubcfg-no-entries", "grubcfg-default", "grubcfg-fallback",
            "grubcfg-search-unresolved", "grubcfg-kernel-missing", "grubcfg-initrd-missing", "grubcfg-no-serial",
            "esp-not-fat32", "file-unreadable")
CMDLINE_IDS = ("cmdline-console", "cmdline-console-order", "cmdline-nvme-timeout", "root-missing", "root-unresolved",
               "root-device-name", "file-unreadable")
KERNEL_IDS = ("kernel-unreadable", "kernel-too-large", "initrd-too-large", "kernel-arch", "kernel-config",
              "kernel-config-warning", "kernel-no-config", "kernel-module-not-in-initrd", "initrd-unreadable",
              "hvm-driver-missing", "file-unreadable")
FSTAB_IDS = ("fstab-missing", "fstab-unresolved", "fstab-device-name", "fstab-instance-store-nofail",
             "fstab-xvd-names", "file-unreadable")
PVGRUB_IDS = ("menulst-missing", "pvgrub-unreadable", "pvgrub-unknown-command", "pvgrub-kernel-format",
              "pvgrub-not-xen-pv", "pvgrub-fallback", "pvgrub-entry")

REGISTRY: tuple[Rule, ...] = (
    Rule("disk", DISK_IDS, PV, lint_disk, gate=True),
    Rule("filesystems", ("disk-unreadable",), HVM, lint_filesystems, gate=True),
    Rule("labels", ("duplicate-label", "file-unreadable"), ALL, lint_labels),
    Rule("menu.lst", MENU_IDS, PV, lint_boot_menu),
    Rule("grub.cfg", GRUB_IDS, HVM, lint_boot_menu),
    Rule("cmdline", CMDLINE_IDS, ALL, lint_cmdlines),
    Rule("root", ("file-unreadable",), ALL, lint_root),
    Rule("kernel", KERNEL_IDS, ALL, lint_kernels),
    Rule("fstab", FSTAB_IDS, ALL, lint_fstab),
    Rule("fstab-type", ("fstab-type-mismatch", "file-unreadable"), ALL, lint_fstab_types),
    Rule("fstab-esp", ("fstab-esp-missing", "file-unreadable"), HVM, lint_fstab_esp),
    Rule("nic-name", ("nic-name-eth0", "file-unreadable"), HVM, lint_nic_name),
    Rule("ssh-host-keys", ("ssh-host-keys-shipped", "file-unreadable"), ALL, lint_ssh_host_keys),
    Rule("pvgrub", PVGRUB_IDS, PV, lint_pvgrub, background=True, needs=("variant",)),
    Rule("hvm-boot", ("hvm-bootloader-missing", "file-unreadable"), HVM, lint_hvm_boot),
    Rule("registration", ("ari-with-pvgrub",), PV, lint_registration),
)


def rules_for(target: Target) -> tuple[Rule, ...]:
    return tuple(r for r in REGISTRY if target in r.targets)


def lint_view(view: ImageView, target: Target, arch: str, manifest: Manifest | None, *,  # noqa: PLR0913 (the image, its facts, and keyword options)
              aki_version: str | None = None, fmt: str = "raw", stage: StageTimer | None = None) -> list[Finding]:
    """Every rule of `target` on `view`, in the registry's order; `stage`'s row counts the checks done
    of the total."""
    if target is Target.HVM and spec_named(arch).nitro_only:
        target = Target.NITRO  # Graviton (arm64) is Nitro only: no Xen HVM rules
    ctx = LintContext(view, target, arch, manifest, aki_version, fmt)
    rules = rules_for(target)
    tally = Tally(len(rules), stage)
    found: dict[str, list[Finding]] = {}
    for rule in (r for r in rules if r.gate):
        found[rule.name] = tally.ran(rule, rule.check(ctx))
        if any(f.rule == "disk-unreadable" for f in found[rule.name]):
            return unique(found[rule.name])
    with ThreadPoolExecutor(1) as pool:  # GRUB 0.97 (a subprocess, on the file) runs beside the view's rules
        pending = {rule.name: submit(pool, ctx, rule) for rule in rules if rule.background}
        for rule in rules:
            if not (rule.gate or rule.background):
                found[rule.name] = tally.ran(rule, rule.check(ctx))
        for rule in rules:
            if rule.background:
                found[rule.name] = tally.ran(rule, pending[rule.name].result())
    return unique([f for rule in rules for f in found.get(rule.name, [])])


def submit(pool: ThreadPoolExecutor, ctx: LintContext, rule: Rule) -> Future[list[Finding]]:
    for fact in rule.needs:
        getattr(ctx, fact)  # read here, in the thread that owns the view
    return pool.submit(lambda: list(rule.check(ctx)))


@dataclass
class Tally:
    """The checks done of the total, on the lint stage's row (and its note when the stage ends)."""

    total: int
    stage: StageTimer | None
    done: int = 0

    def ran(self, rule: Rule, findings: Iterable[Finding]) -> list[Finding]:
        out = list(findings)
        self.done += 1
        if self.stage is not None:
            self.stage.count(self.done, self.total, "checks")
            self.stage.set_note(f"checks {self.done}/{self.total}")
        return out


# --- the shared facts -----------------------------------------------------------------------------


def pv_boot(view: ImageView, found: list[Finding]) -> Boot:
    """menu.lst's entries (the one PV-GRUB boots first, first) and the kernels they name; what reading it
    found wrong goes into `found` as it is found."""
    problems, menu = check_menu(view)
    found += problems
    if menu is None:
        return Boot(findings=found)
    return Boot(pv_cmdlines(menu), pv_kernels(view, menu), found)


def pv_kernels(view: ImageView, menu: BootMenu) -> list[KernelFiles]:
    kernels: list[KernelFiles] = []
    for e in menu.entries:
        if not e.kernel_exists or e.device is None or e.kernel is None:
            continue
        if any((k.device, k.path) == (e.device, e.kernel) for k in kernels):
            continue
        fs = view.filesystem(e.device)
        initrd = e.initrd if e.initrd_exists else None
        kernels.append(KernelFiles(e.device, e.kernel, initrd, grub_device(fs.partition if fs else None) + e.kernel))
    return kernels


def pv_cmdlines(menu: BootMenu) -> list[Cmdline]:
    cmdlines = [(f"{menu.location.grub} entry {e.index}", e.entry.kernel_args) for e in menu.entries if e.entry.kernel]
    if menu.chosen is not None:  # the entry PV-GRUB boots first
        chosen = cmdlines.pop([e.index for e in menu.entries if e.entry.kernel].index(menu.chosen.index))
        cmdlines.insert(0, chosen)
    return cmdlines


def hvm_kernels(view: ImageView) -> list[KernelFiles]:
    kernels = []
    for fs in mountable(view):
        for directory in ("/boot", "/"):
            names = view.ls(fs.device, directory)
            for name in sorted((n for n in names if n.startswith("vmlinuz-")), reverse=True):
                version = name.removeprefix("vmlinuz-")
                base = directory.rstrip("/")
                initrd = next((f"{base}/{i}" for i in (f"initrd.img-{version}", f"initramfs-{version}.img")
                               if i in names), None)
                kernels.append(KernelFiles(fs.device, f"{base}/{name}", initrd, f"{fs.device}:{base}/{name}"))
    return kernels


def hvm_boot(view: ImageView, found: list[Finding], serial: bool = True) -> Boot:
    """grub.cfg's entries (the default first): their kernel command lines and the kernels they load; then
    the ESP's filesystem. What reading them found wrong goes into `found` as it is found. `serial`: GRUB
    must drive the serial port itself (False on arm64: its firmware console is the serial port)."""
    menu, problems = find_grub_cfg(view)
    found += problems
    if menu is None:
        if not problems:
            grub_in_mbr = b"GRUB" in view.disk_bytes(0, 440)
            found.append(finding("grubcfg-missing", "disk", f"no {' or '.join(CFG_PATHS)} on any filesystem"
                                 + (": GRUB in the MBR stops at its prompt" if grub_in_mbr else ""),
                                 "generate grub.cfg (imagekit writes one for the HVM layouts)",
                                 severity=None if grub_in_mbr else Severity.WARNING))
        cmdlines, kernels = [], hvm_kernels(view)
    else:
        more, loaded = check_grub_cfg(view, menu, serial)
        found += more
        chosen = menu.cfg.pick(menu.cfg.default or "0")
        loaded.sort(key=lambda item: item.entry is not chosen)
        cmdlines = [(f"{menu.where} entry {item.entry.title!r}", item.entry.args) for item in loaded
                    if item.entry.linux]
        kernels = entry_kernels(loaded) or hvm_kernels(view)
    found += check_esp(view)
    return Boot(cmdlines, kernels, found)


def root_arg(args: str) -> str | None:
    value = None
    for word in args.split():
        if word.startswith("root="):
            value = word[5:]
    return value


def pvgrub_variant(view: ImageView, kernels: list[KernelFiles]) -> Variant | None:
    """The AKI whose PV-GRUB the boot's model runs (GRUB 0.97 on the image file, Xen's loader rules), or None:
    not on GPT (disk-gpt: no PV-GRUB reads it), nor when a kernel or initrd menu.lst names is over lint's bound
    (GRUB 0.97 would read all of it; kernel-too-large / initrd-too-large say so)."""
    variant = variant_of_table(view.parttype)
    if variant is None or any(over(view, k.device, path, limit) for k in kernels
                              for path, limit in ((k.path, MAX_KERNEL), (k.initrd, MAX_INITRD))):
        return None
    return variant


def over(view: ImageView, device: str, path: str | None, limit: int) -> bool:
    try:
        size = view.size(device, path) if path else None
    except UnreadableFile:
        return False  # GRUB 0.97 meets the same symlink loop or odd file, and says so
    return size is not None and size > limit


def fs_types(view: ImageView, root_fs: Filesystem | None) -> set[str]:
    types = {root_fs.type} if root_fs else set()
    boot = boot_filesystem(view)
    if boot is not None and boot.type not in ("swap", "unknown"):
        types.add(boot.type)
    return {t for t in types if t in ("ext2", "ext3", "ext4", "xfs", "btrfs", "reiserfs")}


def check_registration(manifest: Manifest | None, target: Target) -> list[Finding]:
    """No ARI with a PV-GRUB AKI (seed 002): flag a ramdisk recorded for registration."""
    if target is not Target.PV or not manifest:
        return []
    for where in (manifest, manifest.publish, manifest.registration):
        ramdisk = (where.ramdisk_id or where.ari) if where is not None else None
        if ramdisk:
            return [finding("ari-with-pvgrub", f"manifest ramdisk {ramdisk}", "a ramdisk (ARI) is set for "
                            "registration; PV-GRUB loads the initrd from menu.lst itself",
                            "register the AMI with the PV-GRUB AKI and no ramdisk")]
    return []


def unique(findings: list[Finding]) -> list[Finding]:
    seen: set[Finding] = set()
    out = []
    for f in findings:
        if f not in seen:
            seen.add(f)
            out.append(f)
    return out
