"""The hostile-image corpus (issue 13) through the real CLI: `imagekit lint` and `imagekit diff` of every
variant give a finding or a one-line exit 2, never a traceback; no host file is opened (the qcow2s
name one, watched with inotify); no image changes (sha256 before and after).

Launches are kept few: variants refused before libguestfs cost none, and diff compares two variants
in one launch.
"""

from __future__ import annotations

import json

import pytest
from hostile_images import Variant, build_corpus

from tests.util import run_imagekit, sha256
from tests.watch import OpenWatch

pytestmark = pytest.mark.slow

# what lint must say of each variant: (exit status, a rule among the findings or a phrase of the error)
LINT = {
    "truncated": (1, None),
    "random": (1, "disk-unreadable"),
    "qcow2-backing": (2, "starts with a qcow2 header"),
    "qcow2-backing-asked": (2, "has a backing file"),
    "qcow2-data-file-asked": (2, "external file"),
    "menulst-symlink-loop": (1, "file-unreadable"),
    "relative-kernel": (1, "menulst-path"),
    "sparse-3g-kernel": (1, "kernel-too-large"),
    "default-superscript": (1, "menulst-parse"),
    "default-5000-digits": (1, "menulst-parse"),
    "duplicate-label": (1, "duplicate-label"),
}


def assert_clean(proc, what: str) -> None:
    """Exit 0, 1 or 2 and no traceback; an exit 2 is one `error:` line (and maybe a hint)."""
    assert "Traceback" not in proc.stderr, f"{what}:\n{proc.stderr}"
    assert proc.returncode in (0, 1, 2), f"{what}: exit {proc.returncode}\n{proc.stderr}"
    if proc.returncode == 2:
        lines = proc.stderr.splitlines()
        assert lines[0].startswith("error: ") and len(lines) <= 2, f"{what}:\n{proc.stderr}"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    sentinel = tmp / "host-secret"
    sentinel.write_bytes(bytes(16 * 1024 * 1024))
    base, variants = build_corpus(tmp, sentinel)
    assert {v.name for v in variants} == set(LINT)
    sums = {p: sha256(p) for p in {base, *(v.image for v in variants)}}
    with OpenWatch(sentinel) as watch:
        yield base, {v.name: v for v in variants}, watch
        assert watch.opens() == 0, f"something opened {sentinel}"
    assert {p: sha256(p) for p in sums} == sums, "an image changed"


@pytest.mark.parametrize("name", sorted(LINT))
def test_lint_hostile_variant(corpus, name: str) -> None:
    _, variants, watch = corpus
    v: Variant = variants[name]
    proc = run_imagekit("lint", v.image, "--json", *(["--format", v.fmt] if v.fmt else []))
    assert_clean(proc, f"lint {name}")
    status, expected = LINT[name]
    assert proc.returncode == status, proc.stderr
    if status == 2:
        assert expected in proc.stderr
    else:
        rules = {f["rule"] for f in json.loads(proc.stdout)["findings"]}
        assert expected is None or expected in rules, rules
    assert watch.opens() == 0, f"lint {name} opened the host file its image names"


# pairs compared in one launch each; an image diff cannot read is exit 2 naming it
DIFFS = [("truncated", None), ("random", None), ("qcow2-backing", None), ("qcow2-backing-asked", None),
         ("qcow2-data-file-asked", None), ("menulst-symlink-loop", "relative-kernel"),
         ("sparse-3g-kernel", "default-superscript"), ("default-5000-digits", "duplicate-label")]


@pytest.mark.parametrize(("a", "b"), DIFFS, ids=[f"{a}+{b or 'base'}" for a, b in DIFFS])
def test_diff_hostile_variants(corpus, a: str, b: str | None) -> None:
    base, variants, watch = corpus
    first, second = variants[a], variants[b] if b else None
    fmt = first.fmt
    left = base if second is None else first.image
    right = first.image if second is None else second.image
    if fmt == "qcow2":
        left = right  # both sides must be of the format asked for
    proc = run_imagekit("diff", left, right, "--json", *(["--format", fmt] if fmt else []))
    assert_clean(proc, f"diff {a} {b}")
    if a in ("truncated", "random") or a.startswith("qcow2"):
        assert proc.returncode == 2, proc.stderr
        assert (str(right) in proc.stderr) or not a.startswith(("truncated", "random")), proc.stderr
    else:
        assert proc.returncode == 1, proc.stderr  # they differ
        names = [c["name"] for c in json.loads(proc.stdout)["changes"]]
        assert not [n for n in names if n.startswith("//")], names
    assert watch.opens() == 0, f"diff {a} opened the host file its image names"
