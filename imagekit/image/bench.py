"""scripts/bench-build: how fast imagekit builds compared with the floor and a peer tool.

Warm build: `imagekit build --no-lint` with the bootstrap cached (stage times from the manifest),
median of --runs. Floor: `mkfs.ext4 -d` of the very tree imagekit stages (the cached bootstrap,
unpacked) into a sparse file of the image's size. Peer: `virt-make-fs` of the same tree. Cold
(--cold): a build with an empty cache against a bare `mmdebstrap` of the same package set.
--epoch N: warm builds without and with SOURCE_DATE_EPOCH=N side by side (what a reproducible build
costs: for LVM, the metadata rewrite and its check by LVM's tools), and whether the epoch builds match.
Prints figures; asserts nothing (targets: warm <= 2x floor, cold <= 1.2x bare mmdebstrap).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from imagekit.image.filesystem import mke2fs_env
from imagekit.recipe.kernel_profiles import load_profile
from imagekit.recipe.load import load_recipe
from imagekit.recipe.model import Bootstrap
from imagekit.rootfs.bootstrap import bootstrap_key, bootstrap_packages
from imagekit.util.accel import detect
from imagekit.util.cache import cache_dir
from imagekit.util.run import output, run


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.monotonic()
    run(argv, env=env)
    return time.monotonic() - start


def digest_seconds(image: Path) -> tuple[float, float]:
    """How long the manifest's block map of `image` takes (data read, holes skipped), beside the whole-file
    sha256 that manifests recorded before (holes hashed from a zero buffer)."""
    from imagekit.image.blockmap import block_map_of
    from imagekit.manifest import sha256_file

    start = time.monotonic()
    block_map_of(image)
    mapped = time.monotonic() - start
    start = time.monotonic()
    sha256_file(image)
    return mapped, time.monotonic() - start


def build(recipe: Path, out: Path, env: dict[str, str] | None = None) -> dict:
    start = time.monotonic()
    proc = run([sys.executable, "-m", "imagekit", "build", recipe, "-o", out, "--no-lint", "--json"], env=env,
               check=False)
    if proc.returncode != 0:
        raise SystemExit(f"imagekit build {recipe} failed:\n{proc.stderr.decode(errors='replace')}")
    manifest = json.loads(proc.stdout)
    manifest["wall"] = time.monotonic() - start
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(prog="scripts/bench-build", description=__doc__.splitlines()[0])
    ap.add_argument("recipe", nargs="?", default="recipes/debian-12-pvgrub-hd0.toml")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--beside", nargs="+", metavar="RECIPE",
                    help="instead: warm builds of RECIPE and these side by side, stage by stage (e.g. "
                         "recipes/debian-12-hvm-uefi.toml --beside recipes/debian-12-arm64-uefi.toml); the first "
                         "build of each also times its bootstrap when the cache lacks it")
    ap.add_argument("--epoch", type=int, metavar="N",
                    help="instead: warm builds of RECIPE without and with SOURCE_DATE_EPOCH=N side by side, and "
                         "whether the builds with it are byte-identical")
    args = ap.parse_args()
    if args.epoch is not None:
        with_epoch(args.recipe, args.runs, args.epoch)
        return
    if args.beside:
        beside([args.recipe, *args.beside], args.runs)
        return
    recipe = load_recipe(args.recipe)
    profile = load_profile(recipe.kernel.profile, recipe_path=recipe.path)
    with tempfile.TemporaryDirectory(prefix="imagekit-bench-", dir=os.environ.get("TMPDIR", "/var/tmp")) as tmp:
        work = Path(tmp)
        build(recipe.path, work / "warmup.img")  # fills the cache if it is empty
        runs = [build(recipe.path, work / f"run{i}.img") for i in range(args.runs)]
        walls = [r["wall"] for r in runs]
        last = runs[-1]
        size = last["image"]["size"]
        print(f"recipe                {recipe.path} ({recipe.layout.value}, {size >> 20} MiB)")
        print(f"warm build (median of {args.runs}) {statistics.median(walls):6.2f} s wall")
        for stage, seconds in last["timings"].items():
            print(f"  {stage:<18} {seconds:6.2f} s")
        print(f"image allocated       {last['image']['allocated'] >> 20} MiB of {size >> 20} MiB")

        src = recipe.rootfs
        assert isinstance(src, Bootstrap), "the floor needs a bootstrap recipe"
        tarball = cache_dir() / "rootfs" / f"{src.suite}-{bootstrap_key(recipe, profile)}.tar"
        tree = work / "tree"
        tree.mkdir()
        untar = timed(["tar", "--numeric-owner", "-xpf", str(tarball), "-C", str(tree)])
        apparent = int(output(["du", "-s", "--apparent-size", "-B1", tree]).split()[0])
        floors = []
        for i in range(args.runs):
            target = work / f"floor{i}.img"
            with open(target, "wb") as f:
                f.truncate(size)
            floors.append(timed(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(target)], env=mke2fs_env(None)))
            target.unlink()
        floor = statistics.median(floors)
        print(f"floor: mkfs.ext4 -d   {floor:6.2f} s (median of {args.runs}; unpacking the tree took {untar:.2f} s)")
        print(f"ratio warm / floor    {statistics.median(walls) / floor:6.2f}  (target <= 2.0)")
        print(f"ratio image stage / floor {last['timings']['image'] / floor:6.2f}")
        mapped, whole = digest_seconds(work / "run0.img")
        allocated = last["image"]["allocated"]
        print(f"block map of the image {mapped:6.2f} s ({allocated / mapped / 1e9:.2f} GB/s of data; the manifest "
              "records it, the floor does not)")
        print(f"whole-file sha256      {whole:6.2f} s ({size / whole / 1e9:.2f} GB/s of disk; what manifests recorded "
              f"before: {whole / mapped:.1f}x the block map)")
        print(f"floor + block map      {floor + mapped:6.2f} s = {(floor + mapped) / floor:.2f}x the floor: the least "
              "any build that records the image's block map can take")
        if shutil.which("virt-make-fs"):
            env = detect().libguestfs_env()
            peer = timed(["virt-make-fs", "--format=raw", "--type=ext4", f"--size={size}", str(tree),
                          str(work / "peer.img")], env=env)
            print(f"peer: virt-make-fs    {peer:6.2f} s   ratio warm / peer {statistics.median(walls) / peer:5.2f}")
        print(f"tree apparent size    {apparent >> 20} MiB; used in the image "
              f"{last['filesystems'][-1].get('usage', {}).get('used', 0) >> 20} MiB")

        auto = work / "auto.toml"
        text = recipe.path.read_text()
        auto.write_text(text.replace(f'size = "{_size_text(text)}"', 'size = "auto"\nfree = "0"')
                        .replace('src = "files/', f'src = "{recipe.directory.resolve()}/files/'))
        auto_run = build(auto, work / "auto.img")
        print(f"size = auto (free 0)  {auto_run['image']['size'] >> 20} MiB disk for {apparent >> 20} MiB apparent; "
              f"filesystem free {auto_run['filesystems'][-1]['usage']['free'] >> 20} MiB")

        if args.cold:
            cold_cache = work / "cache"
            cold = build(recipe.path, work / "cold.img", env={"IMAGEKIT_CACHE_DIR": str(cold_cache)})
            packages = bootstrap_packages(recipe, profile)
            bare = timed(["mmdebstrap", f"--variant={src.variant}", f"--components={','.join(src.components)}",
                          f"--include={','.join(packages)}", "--format=tar", src.suite, str(work / "bare.tar"),
                          src.source_url])
            print(f"cold build            {cold['wall']:6.2f} s; bare mmdebstrap {bare:6.2f} s; "
                  f"ratio {cold['wall'] / bare:5.2f} (target <= 1.2)")


def beside(recipes: list[str], runs: int) -> None:
    """Warm `imagekit build --no-lint` of each recipe, interleaved; one column per recipe (medians), and the
    first build's bootstrap when it made one (a cold cache: an arm64 bootstrap runs its scripts under qemu-user)."""
    loaded = [load_recipe(r) for r in recipes]
    with tempfile.TemporaryDirectory(prefix="imagekit-bench-", dir=os.environ.get("TMPDIR", "/var/tmp")) as tmp:
        work = Path(tmp)
        first = [build(r.path, work / f"warmup-{n}.img") for n, r in enumerate(loaded)]
        runs_of: list[list[dict]] = [[] for _ in loaded]
        for i in range(runs):
            for n, r in enumerate(loaded):
                runs_of[n].append(build(r.path, work / f"run{i}-{n}.img"))
    print(f"{'':22}" + "".join(f"{r.name[:24]:>26}" for r in loaded))
    print(f"{'arch':22}" + "".join(f"{r.arch.value:>26}" for r in loaded))
    walls = _stage_rows(runs_of, runs)
    cold = [f"{m['timings']['bootstrap']:.2f} s" if "bootstrap" in m["timings"] else "cached" for m in first]
    print(f"{'bootstrap (1st build)':22}" + "".join(f"{c:>26}" for c in cold))
    if len(walls) > 1:
        print(f"ratio warm {loaded[1].arch.value} / {loaded[0].arch.value}: {walls[1] / walls[0]:.2f}x")


def _stage_rows(runs_of: list[list[dict]], runs: int) -> list[float]:
    """The wall and stage rows of a side-by-side table (medians, one column per list of runs); the walls."""
    stages = list(dict.fromkeys(s for rs in runs_of for s in rs[-1]["timings"]))
    walls = [statistics.median(x["wall"] for x in rs) for rs in runs_of]
    print(f"{f'warm build (median {runs})':22}" + "".join(f"{w:>24.2f} s" for w in walls))
    for stage in stages:
        cells = [statistics.median(x["timings"].get(stage, 0.0) for x in rs) for rs in runs_of]
        print(f"  {stage:<20}" + "".join(f"{c:>24.2f} s" for c in cells))
    return walls


def with_epoch(recipe: str, runs: int, epoch: int) -> None:
    """Warm builds of `recipe` without and with SOURCE_DATE_EPOCH, interleaved; whether the latter are identical."""
    path = load_recipe(recipe).path
    env = {"SOURCE_DATE_EPOCH": str(epoch)}
    with tempfile.TemporaryDirectory(prefix="imagekit-bench-", dir=os.environ.get("TMPDIR", "/var/tmp")) as tmp:
        work = Path(tmp)
        build(path, work / "warmup.img")
        runs_of: list[list[dict]] = [[], []]
        for i in range(runs):
            runs_of[0].append(build(path, work / f"plain{i}.img"))
            runs_of[1].append(build(path, work / f"epoch{i}.img", env))
        same = [all(filecmp.cmp(work / f"{kind}0.img", work / f"{kind}{i}.img", shallow=False) for i in range(1, runs))
                for kind in ("plain", "epoch")]
    print(f"{path.name:22}" + "".join(f"{c:>26}" for c in ("no epoch", f"epoch {epoch}")))
    walls = _stage_rows(runs_of, runs)
    cells = ["yes" if s else "no" for s in same] if runs > 1 else ["one run", "one run"]
    print(f"{'images identical':22}" + "".join(f"{c:>26}" for c in cells))
    print(f"reproducible / plain: {walls[1] / walls[0]:.2f}x ({walls[1] - walls[0]:+.2f} s)")


def _size_text(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("size = "):
            return line.split('"')[1]
    raise SystemExit("recipe has no size line")


if __name__ == "__main__":
    main()
