"""scripts/bench-boot: imagekit's boot harness against a bare QEMU boot of the same kernel.

Both boots run the same kernel, initrd, command line (plus console=ttyS0) and probe, under the same
accelerator, and are timed from QEMU's start: to the first kernel line and to the sentinel. The bare
boot gets the kernel and initrd on QEMU's command line (no GRUB); its disk is a fresh layer on one
overlay prepared once with the probe. Harness preparation is reported separately, and each run also
boots once with the old preparation (libguestfs, `fast_prepare=False`): the last table puts the paths side
by side (libguestfs; debugfs on a fresh copy, the first boot; debugfs from the cached copy), each with its
preparation time and the boot's wall time against QEMU's own run (fastprep.py).

An HVM image (by its manifest or its disk, as `imagekit boot` decides; `--firmware` to choose) is timed
per firmware (SeaBIOS, OVMF): to GRUB's first line, the first kernel line, the sentinel, and QEMU's
whole run. Its bare boot is the same QEMU machine and NVMe disk with grub.cfg's default entry (kernel,
initrd, arguments) given to `-kernel/-initrd/-append`, so the difference is what firmware + GRUB cost.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagekit.accel import Accel, detect
from imagekit.boot import BootOptions, boot_image, guest
from imagekit.boot.attach import with_mounts_probe
from imagekit.boot.console import Watcher
from imagekit.boot.disklabel import read_label
from imagekit.boot.fastprep import forget
from imagekit.boot.firmware import Firmware, choose
from imagekit.boot.harness import Prepared, prepare_overlay, read_manifest
from imagekit.boot.hvm import GRUB_CFG, prepare_hvm
from imagekit.boot.hvm_boot import hvm_argv
from imagekit.boot.overlay import ImageFile, image_file, layer, overlay
from imagekit.boot.qemu import Machine, qemu_argv, run_qemu
from imagekit.boot.report import BootReport
from imagekit.bootloader.grubcfg import GrubCfgError, parse_grub_cfg
from imagekit.errors import ImagekitError, UsageError

DEFAULT_RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "debian-12-pvgrub-hd0.toml"
FIRMWARE_NAMES = {"bios": "seabios", "uefi": "ovmf"}
HVM_INTERFACE = "nvme"  # imagekit boot's default for HVM images (as on Nitro)


def median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 2) if known else None


def bare_boot(n: int, base: Path, prepared: Prepared, machine: Machine) -> tuple[float | None, float | None]:
    """One bare QEMU boot: the kernel and initrd on QEMU's command line, a fresh layer on the prepared overlay."""
    workdir = base.parent
    d = prepared.direct
    assert d is not None
    with layer(base, workdir, f"run{n}.qcow2") as disk:
        watcher = Watcher()
        log = workdir / f"bare{n}.log"
        argv = qemu_argv(machine, disk=disk, serial_log=log, kernel=d.kernel, initrd=d.initrd, append=d.append)
        run_qemu(argv, log, watcher, timeout=300, silence=120)
    return watcher.t_kernel, watcher.t_sentinel


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench-boot")
    parser.add_argument("image", nargs="?", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--firmware", choices=("bios", "uefi", "both"),
                        help="HVM images: the firmware to time (default: the image's, as imagekit boot picks)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imagekit-bench-boot-") as tmp:
        workdir = Path(tmp)
        image = args.image
        if image is None:
            image = workdir / "default.img"
            subprocess.run([sys.executable, "-m", "imagekit", "build", str(DEFAULT_RECIPE), "-o", str(image)],
                           check=True)
        accel = detect(None)
        machine = Machine(accel=accel)
        target = image_file(image)
        firmwares = choose(args.firmware, read_manifest(target.path), read_label(target, workdir))
        if firmwares is not None:
            return bench_hvm(image, target, firmwares, args, accel, workdir)
        harness, prepare, bare = [], [], []
        grub097: Grub097Times = []
        refused: str | None = None
        paths: Paths = {}
        forget(target.path)  # the first imagekit boot copies and edits; the later ones start from its cached copy
        with overlay(target, workdir) as ov:
            with guest.open_guest(ov, accel, image.name) as g:
                prepared = prepare_overlay(g, target, BootOptions(image, loader="direct"), "direct", workdir)
            for n in range(args.runs):  # interleaved, so load from elsewhere falls on both alike
                report = timed_boot(BootOptions(image, loader="pvgrub", serial_log=workdir / "harness.log"), paths)
                if report is None:
                    return 1
                harness.append((report.seconds_to_first_kernel_line, report.seconds_to_sentinel))
                prepare.append(report.seconds_prepare)
                bare.append(bare_boot(n, ov, prepared, machine))
                if timed_boot(BootOptions(image, loader="pvgrub", serial_log=workdir / "old.log", fast_prepare=False),
                              paths) is None:
                    return 1
                if refused is None:
                    refused = pvgrub097_boot(image, workdir, grub097)
    h_kernel, h_sentinel = median([k for k, _ in harness]), median([s for _, s in harness])
    b_kernel, b_sentinel = median([k for k, _ in bare]), median([s for _, s in bare])
    print(f"image: {image} ({args.runs} runs each, interleaved, {accel.name})")
    print(f"{'':28}{'first kernel line':>20}{'sentinel':>12}")
    print(f"{'imagekit boot (pvgrub)':28}{h_kernel!s:>19}s{h_sentinel!s:>11}s   (+ prepare {median(prepare)}s)")
    print(f"{'bare qemu -kernel/-initrd':28}{b_kernel!s:>19}s{b_sentinel!s:>11}s")
    if refused:
        print(f"{'imagekit boot (pvgrub097)':28} refused before QEMU: {refused}")
    elif grub097:
        g_kernel, g_sentinel = median([k for k, _, _ in grub097]), median([s for _, s, _ in grub097])
        print(f"{'imagekit boot (pvgrub097)':28}{g_kernel!s:>19}s{g_sentinel!s:>11}s   "
              f"(+ GRUB 0.97 reading menu.lst, kernel, initrd {median([p for _, _, p in grub097])}s, before prepare)")
    if h_sentinel and b_sentinel:
        ratio = h_sentinel / b_sentinel
        print(f"ratio to sentinel: {ratio:.2f}x (target <= 1.10x) {'OK' if ratio <= 1.10 else 'OVER'}")
    print_paths(paths, "--loader pvgrub")
    return 0


# --- preparation: libguestfs (old) vs debugfs on a copy (new), each boot's wall time vs QEMU's own run -------

Paths = dict[str, list[tuple[float, float, float]]]  # prepared_with -> (prepare, wall, QEMU) per boot
PATH_NAMES = {"libguestfs": "libguestfs (old path)", "debugfs": "debugfs, first boot (copy + edits)",
              "debugfs-cached": "debugfs, cached copy"}


def timed_boot(opts: BootOptions, paths: Paths) -> BootReport | None:
    """One imagekit boot, its prepare, wall and QEMU times recorded under the path it took; None if it failed."""
    start = time.monotonic()
    report = boot_image(opts)
    wall = time.monotonic() - start
    if not report.booted:
        print(report.to_text(), file=sys.stderr)
        return None
    qemu = report.seconds_qemu if not report.firmwares else sum(f.seconds_qemu for f in report.firmwares)
    paths.setdefault(report.prepared_with, []).append((report.seconds_prepare, wall, qemu))
    return report


def print_paths(paths: Paths, what: str) -> None:
    """The side-by-side table: preparation, the boot's wall time, QEMU's own run, their ratio."""
    print(f"preparation ({what}){'':{max(0, 26 - len(what))}}{'prepare':>10}{'boot wall':>11}{'QEMU':>9}"
          f"{'wall/QEMU':>11}")
    for name in PATH_NAMES:
        if not (times := paths.get(name)):
            continue
        p, w, q = (median([t[i] for t in times]) or 0.0 for i in range(3))
        ratio = w / q if q else 0.0
        print(f"{PATH_NAMES[name] + f' ({len(times)})':40}{p:>9.2f}s{w:>10.2f}s{q:>8.2f}s{ratio:>10.2f}x")
    print("target: prepare under 1 s, boot wall time at most 1.15x QEMU's own run")


Grub097Times = list[tuple[float | None, float | None, float | None]]  # kernel line, sentinel, GRUB 0.97's plan


def pvgrub097_boot(image: Path, workdir: Path, times: Grub097Times) -> str | None:
    """One --loader pvgrub097 boot, its times appended; the reason (and detail) when PV-GRUB would not boot it."""
    report = boot_image(BootOptions(image, loader="pvgrub097", serial_log=workdir / "pvgrub097.log"))
    if not report.booted:
        return f"{report.reason}: {report.detail}"
    plan = report.pvgrub097["seconds"] if report.pvgrub097 else None
    times.append((report.seconds_to_first_kernel_line, report.seconds_to_sentinel, plan))
    return None


# --- HVM: firmware + GRUB 2 -------------------------------------------------------------------------


@dataclass(frozen=True)
class HvmDirect:
    """grub.cfg's default entry, copied out of the prepared overlay for a bare -kernel/-initrd boot."""

    title: str
    kernel: Path
    initrd: Path | None
    append: str


@dataclass(frozen=True)
class Times:
    bootloader: float | None  # GRUB's first line (None for the bare boot: there is no GRUB)
    kernel: float | None
    sentinel: float | None
    qemu: float | None


def hvm_direct(g: Any, prepared: Prepared, workdir: Path) -> HvmDirect:
    """The default entry of the overlay's grub.cfg (console=ttyS0 already put last by prepare_hvm)."""
    if not guest.is_file(g, GRUB_CFG):
        raise UsageError(f"IMAGE: no {GRUB_CFG} on the disk: nothing to boot bare")
    try:
        cfg = parse_grub_cfg(str(g.cat(GRUB_CFG)))
    except GrubCfgError as exc:
        raise UsageError(f"{GRUB_CFG}: {exc}") from None
    entry = cfg.pick(cfg.default or "0")
    if entry is None or entry.linux is None:
        raise UsageError(f"{GRUB_CFG}: the default entry has no linux line")
    on_boot = "/boot" if prepared.disk.separate_boot else ""  # grub.cfg's paths are the boot filesystem's
    kernel = workdir / "vmlinuz"
    g.download(on_boot + entry.linux, str(kernel))
    initrd = None
    if entry.initrds:
        initrd = workdir / "initrd.img"
        g.download(on_boot + entry.initrds[0], str(initrd))
    return HvmDirect(entry.title, kernel, initrd, entry.args)


def bare_hvm_boot(n: int, base: Path, direct: HvmDirect, machine: Machine) -> Times:
    """The HVM machine (pc, NVMe disk, no option ROMs) with the kernel given to QEMU: no firmware boot, no GRUB."""
    workdir = base.parent
    kernel_args = ["-kernel", str(direct.kernel), "-append", direct.append]
    kernel_args += ["-initrd", str(direct.initrd)] if direct.initrd else []
    with layer(base, workdir, f"bare{n}.qcow2") as disk:
        watcher = Watcher()
        log = workdir / f"bare{n}.log"
        argv = hvm_argv(machine, firmware=kernel_args, interface=HVM_INTERFACE, disk=disk, serial_log=log)
        outcome = run_qemu(argv, log, watcher, timeout=300, silence=120)
    if watcher.t_sentinel is None:
        tail = "\n".join(line.text for line in watcher.lines[-15:])
        raise UsageError(f"the bare -kernel/-initrd boot did not reach the sentinel (log {log}):\n{tail}")
    return Times(None, watcher.t_kernel, watcher.t_sentinel, outcome.seconds)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def _medians(times: list[Times]) -> Times:
    return Times(median([t.bootloader for t in times]), median([t.kernel for t in times]),
                 median([t.sentinel for t in times]), median([t.qemu for t in times]))


def _row(name: str, t: Times, extra: str = "") -> str:
    return (f"{name:28}{_cell(t.bootloader):>10}{_cell(t.kernel):>20}{_cell(t.sentinel):>12}"
            f"{_cell(t.qemu):>10}{extra}")


def bench_hvm(image: Path, target: ImageFile, firmwares: tuple[Firmware, ...], args: argparse.Namespace,
              accel: Accel, workdir: Path) -> int:
    """Each run: one imagekit boot (every firmware in turn, as `imagekit boot`) then one bare boot."""
    machine = Machine(accel=accel)
    harness: dict[str, list[Times]] = {str(f): [] for f in firmwares}
    prepare: list[float | None] = []
    bare: list[Times] = []
    paths: Paths = {}
    with overlay(target, workdir) as ov:
        with guest.open_guest(ov, accel, image.name) as g:  # the same overlay content as imagekit boot's
            prepared = with_mounts_probe(g, prepare_hvm(g), read_manifest(target.path))
            direct = hvm_direct(g, prepared, workdir)
        forget(target.path)
        for n in range(args.runs):  # interleaved, so load from elsewhere falls on both alike
            report = timed_boot(BootOptions(image, serial_log=workdir / "harness.log", firmware=args.firmware), paths)
            if report is None:
                return 1
            if timed_boot(BootOptions(image, serial_log=workdir / "old.log", firmware=args.firmware,
                                      fast_prepare=False), paths) is None:
                return 1
            for f in report.firmwares:
                harness[f.firmware].append(Times(f.seconds_to_bootloader, f.seconds_to_first_kernel_line,
                                                 f.seconds_to_sentinel, f.seconds_qemu))
            prepare.append(report.seconds_prepare)
            bare.append(bare_hvm_boot(n, ov, direct, machine))
    b = _medians(bare)
    print(f"image: {image} ({args.runs} runs each, interleaved, {accel.name}, {HVM_INTERFACE} disk)")
    print(f"entry: {direct.title!r}")
    print(f"{'':28}{'GRUB':>10}{'first kernel line':>20}{'sentinel':>12}{'QEMU':>10}")
    rows = {name: _medians(times) for name, times in harness.items()}
    for name, t in rows.items():
        print(_row(f"imagekit boot ({FIRMWARE_NAMES.get(name, name)})", t))
    print(_row("bare qemu -kernel/-initrd", b))
    print(f"prepare (overlay, probe; once per imagekit boot, before {'both firmwares' if len(rows) > 1 else 'it'}):"
          f" {median(prepare)}s")
    for name, t in rows.items():
        if t.kernel is None or t.sentinel is None or b.kernel is None or b.sentinel is None:
            continue
        print(f"firmware + GRUB ({FIRMWARE_NAMES.get(name, name)}): +{t.kernel - b.kernel:.2f}s to the first kernel "
              f"line, +{t.sentinel - b.sentinel:.2f}s to the sentinel ({t.sentinel / b.sentinel:.2f}x)")
    print_paths(paths, "HVM, every firmware")
    return 0


def run() -> int:
    try:
        return main()
    except ImagekitError as exc:
        print(f"error: {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(run())
