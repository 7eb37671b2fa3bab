"""The on-disk PV-GRUB verdict cache (imagekit/lint/pvgrub_cache.py): the build's lint serves the next
`imagekit lint` of the same file, a changed file misses (even with its mtime put back), a corrupt entry is
ignored. GRUB 0.97 runs for real; the entries are the real cache's, keyed on files only these tests make."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit.lint import pvgrub_cache
from imagekit.lint.pvgrub import _check_pvgrub, check_pvgrub
from imagekit.pvgrub.aki import default_version
from imagekit.pvgrub.variant import Variant
from tests.util import run_imagekit

pytestmark = pytest.mark.slow  # the default recipe built, GRUB 0.97 run 5 times: ~45 s (the fast loop: README, Tests)

DEFAULT = "debian-12-pvgrub-hd0"
AKI = [str(Variant.HD0), default_version("hd0"), "raw"]


def entry_of(image: Path) -> Path:
    (entry,) = pvgrub_cache.directory().glob(f"{pvgrub_cache.key_of(pvgrub_cache.identity(image.stat()))}-*.json")
    return entry


def fresh(image: Path) -> list:
    """GRUB 0.97 run on the image now, no cache."""
    found, crashed = _check_pvgrub(image, Variant.HD0, AKI[1], "raw")
    assert not crashed
    return found


@pytest.fixture(scope="module")
def copy(recipe_images: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sparse copy of the default image: its own inode, so its entries are these tests' alone."""
    dest = tmp_path_factory.mktemp("pvgrub-cache") / "copy.img"
    subprocess.run(["cp", "--sparse=always", recipe_images(DEFAULT), dest], check=True)
    return dest


@pytest.fixture(scope="module")
def verdict(copy: Path) -> list:
    """GRUB 0.97's findings on the default image, run once for the module (the copy's bytes never change)."""
    return fresh(copy)


def test_build_leaves_a_hit_for_the_built_file(recipe_images: Callable[..., Path], verdict: list) -> None:
    image = recipe_images(DEFAULT)  # `imagekit build` linted .NAME.partial, then renamed it
    cached = pvgrub_cache.load(image.stat(), AKI)
    assert cached is not None, "the build's lint verdict was not carried to the renamed file"
    assert [f.rule for f in cached] == [] and cached == verdict  # the copy has the built file's bytes


def test_lint_reads_the_entry(copy: Path) -> None:
    """A second `imagekit lint` takes the stored verdict: a marker written into the entry comes back."""
    first = run_imagekit("lint", copy, "--json")
    assert first.returncode == 0, first.stderr
    entry = entry_of(copy)
    stored = json.loads(entry.read_text())
    stored["findings"] = [{"rule": "pvgrub-entry", "severity": "warning", "object": "marker",
                           "message": "from the cache", "hint": "none"}]
    entry.write_text(json.dumps(stored))
    try:
        second = json.loads(run_imagekit("lint", copy, "--json").stdout)
        assert {"rule": "pvgrub-entry", "object": "marker"}.items() <= next(
            f for f in second["findings"] if f["rule"] == "pvgrub-entry").items()
        bypassed = json.loads(run_imagekit("lint", copy, "--json", env={pvgrub_cache.ENV: "off"}).stdout)
        assert not any(f["rule"] == "pvgrub-entry" for f in bypassed["findings"])
        assert [f["rule"] for f in bypassed["findings"]] == [f["rule"] for f in json.loads(first.stdout)["findings"]]
    finally:
        entry.unlink()


def test_corrupt_entry_is_ignored_and_replaced(copy: Path, verdict: list) -> None:
    st = copy.stat()
    expected = verdict
    pvgrub_cache.store(st, AKI, expected)
    entry = entry_of(copy)
    entry.write_bytes(b"\x00{not json")
    assert pvgrub_cache.load(st, AKI) is None
    entry.write_text(json.dumps({"inputs": {"file": [0]}, "findings": []}))  # JSON, not this file's inputs
    assert pvgrub_cache.load(st, AKI) is None
    run = json.loads(run_imagekit("lint", copy, "--json").stdout)  # GRUB runs again and stores the verdict
    assert [f["rule"] for f in run["findings"]] == ["menulst-no-fallback"]
    assert pvgrub_cache.load(st, AKI) == expected


def test_modified_file_misses_even_with_mtime_restored(copy: Path, verdict: list) -> None:
    before = copy.stat()
    pvgrub_cache.store(before, AKI, verdict)
    assert pvgrub_cache.load(before, AKI) is not None
    with copy.open("r+b") as f:  # the same bytes back over the boot sector's first 512 (unused by ext4)
        block = f.read(512)
        f.seek(0)
        f.write(block)
    os.utime(copy, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = copy.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    assert after.st_ctime_ns != before.st_ctime_ns
    assert pvgrub_cache.load(after, AKI) is None
    assert check_pvgrub(copy, Variant.HD0, None) == verdict  # GRUB ran again: the same bytes, the same verdict
    assert pvgrub_cache.load(after, AKI) is not None
