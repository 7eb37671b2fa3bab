"""scripts/bench-boot: imagekit's boot harness against a bare QEMU boot of the same kernel.

Both boots run the same kernel, initrd, command line (plus console=ttyS0) and probe, under the same
accelerator, and are timed from QEMU's start: to the first kernel line and to the sentinel. The bare
boot gets the kernel and initrd on QEMU's command line (no GRUB); its disk is a fresh layer on one
overlay prepared once with the probe. Harness preparation (libguestfs) is reported separately.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from imagekit.accel import detect
from imagekit.boot import BootOptions, boot_image, guest
from imagekit.boot.console import Watcher
from imagekit.boot.harness import Prepared, prepare_overlay
from imagekit.boot.overlay import image_file, layer, overlay
from imagekit.boot.qemu import Machine, qemu_argv, run_qemu

DEFAULT_RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "debian-12-pvgrub-hd0.toml"


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
        harness, prepare, bare = [], [], []
        with overlay(target, workdir) as ov:
            with guest.open_guest(ov, accel, image.name) as g:
                prepared = prepare_overlay(g, target, BootOptions(image, loader="direct"), "direct", workdir)
            for n in range(args.runs):  # interleaved, so load from elsewhere falls on both alike
                report = boot_image(BootOptions(image, serial_log=workdir / "harness.log"))
                if not report.booted:
                    print(report.to_text(), file=sys.stderr)
                    return 1
                harness.append((report.seconds_to_first_kernel_line, report.seconds_to_sentinel))
                prepare.append(report.seconds_prepare)
                bare.append(bare_boot(n, ov, prepared, machine))
    h_kernel, h_sentinel = median([k for k, _ in harness]), median([s for _, s in harness])
    b_kernel, b_sentinel = median([k for k, _ in bare]), median([s for _, s in bare])
    print(f"image: {image} ({args.runs} runs each, interleaved, {accel.name})")
    print(f"{'':28}{'first kernel line':>20}{'sentinel':>12}")
    print(f"{'imagekit boot (pvgrub)':28}{h_kernel!s:>19}s{h_sentinel!s:>11}s   (+ prepare {median(prepare)}s)")
    print(f"{'bare qemu -kernel/-initrd':28}{b_kernel!s:>19}s{b_sentinel!s:>11}s")
    if h_sentinel and b_sentinel:
        ratio = h_sentinel / b_sentinel
        print(f"ratio to sentinel: {ratio:.2f}x (target <= 1.10x) {'OK' if ratio <= 1.10 else 'OVER'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
