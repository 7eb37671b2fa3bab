"""scripts/bench-lint: `imagekit lint` through the native reader against `--reader guestfs`, one image.

Each lint is a fresh `imagekit lint --json` process (what a user or CI runs), timed wall-clock: the
native reader --runs times (median), libguestfs once (an appliance launch under TCG is tens of seconds).
Prints both times, the ratio, and whether the two readers' findings are the same. Asserts nothing
(target: native under 3 s for the default image).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_RECIPE = "recipes/debian-12-pvgrub-hd0.toml"


def lint(image: Path, reader: str) -> tuple[float, dict]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "imagekit", "lint", str(image), "--json", "--reader", reader],
                          capture_output=True, text=True)
    wall = time.monotonic() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"imagekit lint --reader {reader} {image} failed:\n{proc.stderr}")
    return wall, json.loads(proc.stdout)


def build(recipe: str, out: Path) -> Path:
    proc = subprocess.run([sys.executable, "-m", "imagekit", "build", recipe, "-o", str(out), "--no-lint"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"imagekit build {recipe} failed:\n{proc.stderr}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image", nargs="?", help=f"the image to lint (default: build {DEFAULT_RECIPE})")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="imagekit-bench-", dir=os.environ.get("TMPDIR", "/var/tmp")) as tmp:
        image = Path(args.image) if args.image else build(DEFAULT_RECIPE, Path(tmp) / "default.img")
        runs = [lint(image, "native") for _ in range(args.runs)]
        native = statistics.median(wall for wall, _ in runs)
        guestfs, slow = lint(image, "guestfs")
    fast = runs[-1][1]
    same = fast["findings"] == slow["findings"]
    print(f"image                    {args.image or DEFAULT_RECIPE} ({image.name})")
    print(f"lint --reader native     {native:6.2f} s (median of {args.runs}; target < 3 s)  reader: {fast['reader']}")
    print(f"lint --reader guestfs    {guestfs:6.2f} s (one libguestfs appliance launch)")
    print(f"ratio guestfs / native   {guestfs / native:6.1f}x")
    print(f"findings                 {len(fast['findings'])} native, {len(slow['findings'])} guestfs: "
          f"{'the same' if same else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
