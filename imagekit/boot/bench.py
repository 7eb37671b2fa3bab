"""scripts/bench-boot: imagekit's PV loaders against a bare QEMU boot of the same kernel, in one run.

Three rows, interleaved per run: `imagekit boot --loader pvgrub097` (the PV default: GRUB 0.97 reads the
image beside the appliance's launch, QEMU boots the ELF Xen would start), `--loader pvgrub` (GRUB 2
legacycfg; GRUB 2's linux16 cannot boot the gzipped ELF vmlinux a PV build installs, so that row boots a
sparse copy whose menu.lst names the bzImage beside it, as its label says) and a bare `-kernel/-initrd`
boot of menu.lst's default kernel (a fresh layer on one overlay prepared once with the probe). Each
imagekit row: its prepare stage, QEMU's times from its start to the first kernel line and the sentinel,
and the wall time of the whole `boot_image` (what a user waits for); the bare row's wall is QEMU's run.

Each run also boots once with the old preparation (libguestfs, `fast_prepare=False`): the preparation table
puts the paths side by side (libguestfs; debugfs on a fresh copy, the first boot; debugfs from the cached
copy), each with its preparation time and the boot's wall time against QEMU's own run (fastprep.py).

An HVM image (by its manifest or its disk, as `imagekit boot` decides; `--firmware` to choose) is timed
per firmware (SeaBIOS, OVMF): to GRUB's first line, the first kernel line, the sentinel, and QEMU's
whole run. Its bare boot is the same QEMU machine and NVMe disk with grub.cfg's default entry (kernel,
initrd, arguments) given to `-kernel/-initrd/-append`, so the difference is what firmware + GRUB cost.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagekit.boot import guest
from imagekit.boot.attach import with_mounts_probe
from imagekit.boot.console import Watcher
from imagekit.boot.fastprep import forget
from imagekit.boot.firmware import Firmware, choose
from imagekit.boot.harness import BootOptions, Prepared, boot_image, prepare_overlay
from imagekit.boot.hvm import GRUB_CFG, prepare_hvm
from imagekit.boot.hvm_boot import hvm_argv
from imagekit.boot.overlay import ImageFile, image_file, layer, overlay
from imagekit.boot.qemu import Machine, qemu_argv, run_qemu
from imagekit.boot.report import BootReport
from imagekit.bootloader.grubcfg import GrubCfgError, parse_grub_cfg
from imagekit.image.disklabel import read_label
from imagekit.manifest import manifest_path, read_manifest
from imagekit.util.accel import Accel, detect
from imagekit.util.errors import ImagekitError, UsageError
from imagekit.util.run import run as run_command

DEFAULT_RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "debian-12-pvgrub-hd0.toml"
FIRMWARE_NAMES = {"bios": "seabios", "uefi": "ovmf"}
HVM_INTERFACE = "nvme"  # imagekit boot's default for HVM images (as on Nitro)


def median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 2) if known else None


def bare_boot(n: int, base: Path, prepared: Prepared, machine: Machine) -> Times:
    """One bare QEMU boot: the kernel and initrd on QEMU's command line, a fresh layer on the prepared overlay."""
    workdir = base.parent
    d = prepared.direct
    assert d is not None
    with layer(base, workdir, f"run{n}.qcow2") as disk:
        watcher = Watcher()
        log = workdir / f"bare{n}.log"
        argv = qemu_argv(machine, disk=disk, serial_log=log, kernel=d.kernel, initrd=d.initrd, append=d.append)
        outcome = run_qemu(argv, log, watcher, timeout=300, silence=120)
    return Times(None, watcher.t_kernel, watcher.t_sentinel, outcome.seconds)


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench-boot")
    parser.add_argument("image", nargs="?", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--firmware", choices=("bios", "uefi", "both"),
                        help="HVM images: the firmware to time (default: the image's, as imagekit boot picks)")
    parser.add_argument("--beside", type=Path, nargs="+", metavar="IMAGE",
                        help="instead: `imagekit boot` of IMAGE and these images side by side (e.g. an x86_64 and "
                             "an arm64 build of one recipe), to GRUB, first kernel line, sentinel and QEMU's run")
    args = parser.parse_args()
    if args.beside:
        if args.image is None:
            parser.error("--beside needs IMAGE")
        return bench_beside([args.image, *args.beside], args.runs)
    with tempfile.TemporaryDirectory(prefix="imagekit-bench-boot-") as tmp:
        workdir = Path(tmp)
        image = args.image
        if image is None:
            image = workdir / "default.img"
            run_command([sys.executable, "-m", "imagekit", "build", DEFAULT_RECIPE, "-o", image], capture=False)
        accel = detect(None)
        machine = Machine(accel=accel)
        target = image_file(image)
        firmwares = choose(args.firmware, read_manifest(target.path), read_label(target.path, target.format, workdir))
        if firmwares is not None:
            return bench_hvm(image, target, firmwares, args, accel, workdir)
        grub2, grub2_label = grub2_image(image, workdir)
        harness: list[Times] = []
        bare: list[Times] = []
        grub097: list[Times] = []
        plans: list[float | None] = []
        refused: str | None = None
        paths: Paths = {}
        forget(grub2)  # the first imagekit boot copies and edits; the later ones start from its cached copy
        with overlay(target, workdir) as ov:
            with guest.open_guest(ov, accel, image.name) as g:
                prepared = prepare_overlay(g, target, BootOptions(image, loader="direct"), "direct", workdir)
            for n in range(args.runs):  # interleaved, so load from elsewhere falls on all rows alike
                done = timed_boot(BootOptions(grub2, loader="pvgrub", serial_log=workdir / "harness.log"), paths)
                if done is None:
                    return 1
                report, wall = done
                harness.append(Times(report.seconds_prepare, report.seconds_to_first_kernel_line,
                                     report.seconds_to_sentinel, wall))
                bare.append(bare_boot(n, ov, prepared, machine))
                old = BootOptions(grub2, loader="pvgrub", serial_log=workdir / "old.log", fast_prepare=False)
                if timed_boot(old, paths) is None:
                    return 1
                if refused is None:
                    refused = pvgrub097_boot(image, workdir, grub097, plans)
    width = len(grub2_label) + 2
    print(f"image: {image} ({args.runs} runs each, interleaved, {accel.name})")
    print(f"{'':{width}}{'prepare':>10}{'first kernel line':>20}{'sentinel':>12}{'wall':>10}")
    if refused:
        print(f"{'imagekit boot --loader pvgrub097':{width}} refused before QEMU: {refused}")
    elif grub097:
        print(_row("imagekit boot --loader pvgrub097", _medians(grub097),
                   f"   (GRUB 0.97 + Xen's loader rules {median(plans)}s, beside prepare)", width=width))
    print(_row(grub2_label, _medians(harness), width=width))
    print(_row("bare qemu -kernel/-initrd", _medians(bare), width=width))
    g, h, b = _medians(grub097), _medians(harness), _medians(bare)
    if g.qemu and h.qemu:
        verdict = "OK" if g.qemu <= h.qemu else "OVER"
        print(f"pvgrub097 / GRUB 2 wall: {g.qemu / h.qemu:.2f}x (target <= 1.00x) {verdict}")
    if h.sentinel and b.sentinel:
        ratio = h.sentinel / b.sentinel
        print(f"GRUB 2 / bare to sentinel: {ratio:.2f}x (target <= 1.10x) {'OK' if ratio <= 1.10 else 'OVER'}")
    print_paths(paths, "--loader pvgrub")
    return 0


# --- preparation: libguestfs (old) vs debugfs on a copy (new), each boot's wall time vs QEMU's own run -------

Paths = dict[str, list[tuple[float, float, float]]]  # prepared_with -> (prepare, wall, QEMU) per boot
PATH_NAMES = {"libguestfs": "libguestfs (old path)", "debugfs": "debugfs, first boot (copy + edits)",
              "debugfs-cached": "debugfs, cached copy"}


def timed_boot(opts: BootOptions, paths: Paths) -> tuple[BootReport, float] | None:
    """One imagekit boot and its wall time (preparation, GRUB 0.97's checks, QEMU: what a user waits for), also
    recorded with its prepare and QEMU times under the preparation path it took; None if it failed."""
    start = time.monotonic()
    report = boot_image(opts)
    wall = round(time.monotonic() - start, 2)
    if not report.booted:
        print(report.to_text(), file=sys.stderr)
        return None
    qemu = report.seconds_qemu if not report.firmwares else sum(f.seconds_qemu for f in report.firmwares)
    paths.setdefault(report.prepared_with, []).append((report.seconds_prepare, wall, qemu))
    return report, wall


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


def pvgrub097_boot(image: Path, workdir: Path, times: list[Times], plans: list[float | None]) -> str | None:
    """One --loader pvgrub097 boot, its times appended; the reason (and detail) when PV-GRUB would not boot it."""
    start = time.monotonic()
    report = boot_image(BootOptions(image, loader="pvgrub097", serial_log=workdir / "pvgrub097.log"))
    wall = round(time.monotonic() - start, 2)
    if not report.booted:
        return f"{report.reason}: {report.detail}"
    plans.append(report.pvgrub097["seconds"] if report.pvgrub097 else None)
    times.append(Times(report.seconds_prepare, report.seconds_to_first_kernel_line, report.seconds_to_sentinel, wall))
    return None


def grub2_image(image: Path, workdir: Path) -> tuple[Path, str]:
    """The image for the GRUB 2 (legacycfg) row. GRUB 2's linux16 cannot boot the gzipped ELF vmlinux a PV build
    installs (kernel.format vmlinux-gz): a sparse copy whose menu.lst boots the bzImage beside it (the manifest's
    kernel.original) instead, edited with debugfs; otherwise the image itself."""
    manifest = read_manifest(image)
    kernel = manifest.kernel if manifest else None
    if kernel is None or kernel.format != "vmlinux-gz" or not kernel.original or not kernel.path:
        return image, "imagekit boot --loader pvgrub (GRUB 2)"
    copy = workdir / "grub2.img"
    run_command(["cp", "--sparse=always", image, copy])
    shutil.copy(manifest_path(image), manifest_path(copy))
    fs = f"{copy}?offset={_first_partition(copy)}"
    for path in ("/boot/grub/menu.lst", "/grub/menu.lst"):
        text = run_command(["debugfs", "-R", f"cat {path}", fs]).stdout.decode("latin-1")
        if text:
            local = workdir / "grub2-menu.lst"
            local.write_text(text.replace(kernel.path, kernel.original), encoding="latin-1")
            run_command(["debugfs", "-w", "-f", "-", fs], input=f"rm {path}\nwrite {local} {path}\n".encode())
            return copy, f"imagekit boot --loader pvgrub (GRUB 2, {Path(kernel.original).name})"
    raise UsageError(f"IMAGE: {image}: no menu.lst for the GRUB 2 row (debugfs found none)")


def _first_partition(image: Path) -> int:
    """The byte offset of the first MBR partition; 0 for a partitionless image (a filesystem at sector 0)."""
    with open(image, "rb") as f:
        head = f.read(1024 + 58)
    if head[1024 + 56:1024 + 58] == b"\x53\xef":  # ext2/3/4 superblock magic at 1 KiB: no partition table
        return 0
    return int.from_bytes(head[446 + 8:446 + 12], "little") * 512


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


def _row(name: str, t: Times, extra: str = "", width: int = 28) -> str:
    return (f"{name:{width}}{_cell(t.bootloader):>10}{_cell(t.kernel):>20}{_cell(t.sentinel):>12}"
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
            done = timed_boot(BootOptions(image, serial_log=workdir / "harness.log", firmware=args.firmware), paths)
            if done is None:
                return 1
            report = done[0]
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
        print(f"firmware + GRUB ({FIRMWARE_NAMES.get(name, name)}): {t.kernel - b.kernel:+.2f}s to the first kernel "
              f"line, {t.sentinel - b.sentinel:+.2f}s to the sentinel ({t.sentinel / b.sentinel:.2f}x)")
    print_paths(paths, "HVM, every firmware")
    return 0


def bench_beside(images: list[Path], runs: int) -> int:
    """`imagekit boot` of each image, interleaved `runs` times; one row per image, medians."""
    rows: dict[Path, list[BootReport]] = {image: [] for image in images}
    for _ in range(runs):  # interleaved, so load from elsewhere falls on all rows alike
        for image in images:
            report = boot_image(BootOptions(image, timeout=1800))
            if not report.booted:
                print(f"{image}: not booted: {report.reason}: {report.detail}", file=sys.stderr)
                return 1
            rows[image].append(report)
    print(f"imagekit boot, median of {runs} (TCG unless the accel column says kvm)")
    print(f"{'image':40}{'arch':>8}{'accel':>6}{'GRUB':>9}{'first kernel line':>19}{'sentinel':>10}{'QEMU':>9}")
    for image, reports in rows.items():
        arch = m.arch if (m := read_manifest(image)) and m.arch else "x86_64"
        cells = [_cell(median([getattr(r, f) for r in reports])) for f in
                 ("seconds_to_bootloader", "seconds_to_first_kernel_line", "seconds_to_sentinel", "seconds_qemu")]
        print(f"{image.name[-40:]:40}{arch:>8}{reports[-1].accel:>6}{cells[0]:>9}{cells[1]:>19}{cells[2]:>10}"
              f"{cells[3]:>9}")
    return 0


def run() -> int:
    try:
        return main()
    except ImagekitError as exc:
        print(f"error: {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(run())
