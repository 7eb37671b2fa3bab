"""scripts/bench-lint: `imagekit lint` through the native reader against `--reader guestfs`, one image.

Each lint is a fresh `imagekit lint --json` process (what a user or CI runs), timed wall-clock: the
native reader --runs times (median) cold (IMAGEKIT_LINT_CACHE=off: GRUB 0.97 runs, two shells at once,
imagekit/pvgrub/menu.py `split_run`; once more with one shell, IMAGEKIT_GRUB097_SPLIT=off; once more with
Debian's unpatched binary, imagekit/pvgrub/memmove.py) and warm (the PV-GRUB
verdict from the on-disk cache, imagekit/lint/pvgrub_cache.py, as after a build), libguestfs once, cold (an
appliance launch under TCG is tens of seconds). Prints the times side by side with the 3 s target, the
ratio, and whether the two readers' findings are the same. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from imagekit.util.run import run

DEFAULT_RECIPE = "recipes/debian-12-pvgrub-hd0.toml"


TARGET = 3.0  # seconds, issue 17


def lint(image: Path, reader: str, *, cache: bool = True, grub: str = "", split: str = "") -> tuple[float, dict]:
    env = {"IMAGEKIT_LINT_CACHE": "on" if cache else "off", "IMAGEKIT_GRUB097": grub,
           "IMAGEKIT_GRUB097_SPLIT": split}
    start = time.monotonic()
    proc = run([sys.executable, "-m", "imagekit", "lint", image, "--json", "--reader", reader], env=env, check=False)
    wall = time.monotonic() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"imagekit lint --reader {reader} {image} failed:\n{proc.stderr.decode(errors='replace')}")
    return wall, json.loads(proc.stdout)


def build(recipe: str, out: Path) -> Path:
    proc = run([sys.executable, "-m", "imagekit", "build", recipe, "-o", out, "--no-lint"], check=False)
    if proc.returncode != 0:
        raise SystemExit(f"imagekit build {recipe} failed:\n{proc.stderr.decode(errors='replace')}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="scripts/bench-lint", description=__doc__.splitlines()[0])
    ap.add_argument("image", nargs="?", help=f"the image to lint (default: build {DEFAULT_RECIPE})")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="imagekit-bench-", dir=os.environ.get("TMPDIR", "/var/tmp")) as tmp:
        image = Path(args.image) if args.image else build(DEFAULT_RECIPE, Path(tmp) / "default.img")
        runs = [lint(image, "native", cache=False) for _ in range(args.runs)]
        cold = statistics.median(wall for wall, _ in runs)
        one_runs = [lint(image, "native", cache=False, split="off") for _ in range(args.runs)]
        one = statistics.median(wall for wall, _ in one_runs)
        debian, unpatched = lint(image, "native", cache=False, grub="debian", split="off")
        lint(image, "native")  # stores the verdict (a build's own lint does the same)
        warm_runs = [lint(image, "native") for _ in range(args.runs)]
        warm = statistics.median(wall for wall, _ in warm_runs)
        guestfs, slow = lint(image, "guestfs", cache=False)
    fast, cached = runs[-1][1], warm_runs[-1][1]
    same = (fast["findings"] == slow["findings"] == cached["findings"] == unpatched["findings"]
            == one_runs[-1][1]["findings"])

    def mark(t: float) -> str:
        return "under" if t < TARGET else "OVER"

    print(f"image                        {args.image or DEFAULT_RECIPE} ({image.name})")
    print(f"lint --reader native, cold   {cold:6.2f} s (median of {args.runs}; GRUB 0.97 runs)    "
          f"{mark(cold)} the {TARGET:.0f} s target")
    print(f"  the same, one shell        {one:6.2f} s (IMAGEKIT_GRUB097_SPLIT=off: kernel, then initrd; "
          f"{one / cold:.2f}x)")
    print(f"  one shell, Debian's GRUB   {debian:6.2f} s (IMAGEKIT_GRUB097=debian: grub_memmove unpatched; "
          f"{debian / cold:.1f}x)")
    print(f"lint --reader native, warm   {warm:6.2f} s (median of {args.runs}; cached verdict) "
          f"{mark(warm)} the {TARGET:.0f} s target")
    print(f"lint --reader guestfs, cold  {guestfs:6.2f} s (one libguestfs appliance launch)")
    print(f"ratio guestfs / cold, / warm {guestfs / cold:6.1f}x {guestfs / warm:6.1f}x")
    print(f"findings                     {len(fast['findings'])} cold, {len(cached['findings'])} warm, "
          f"{len(slow['findings'])} guestfs, {len(one_runs[-1][1]['findings'])} one shell, "
          f"{len(unpatched['findings'])} Debian's GRUB: "
          f"{'the same' if same else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
