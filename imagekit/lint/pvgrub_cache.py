"""An on-disk cache of PV-GRUB verdicts (imagekit/lint/pvgrub.py): GRUB 0.97 reading the kernel and initrd
whole through its filesystem code is most of a lint (about 10 s of 11 s for the default image, TCG or not).

An entry is the findings of `check_pvgrub` for one image file, under `cache_dir()/lint-pvgrub/`, keyed on:
  - the file's identity: (st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns). A write to the file always
    changes its ctime (the kernel sets it; `os.utime` cannot restore it), so a changed file always misses;
  - the AKI (variant, version) and the image format;
  - the grub binary's identity (its package version and .deb sha256, its size and mtime) and imagekit's
    version with a sha256 of the source of the modules that decide the verdict (SOURCES).
What it trusts: that nobody rewrites the file's blocks behind the kernel's back (a raw block device write to
the filesystem holding it, a restored backup with the same inode and forged times). `IMAGEKIT_LINT_CACHE=off`
bypasses it (neither read nor written). Entries are written to a temporary name and renamed; an entry that
cannot be read or parsed, or whose inputs differ from the key's, is ignored (and replaced). A crash of GRUB's
shell is never stored. The build lints `.NAME.partial` and renames it: `carry` moves the entries to the
renamed file's identity (same inode, same bytes; rename changes only its ctime), so the first
`imagekit lint` of a fresh build is a hit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import asdict
from functools import cache
from importlib import util as importlib_util
from pathlib import Path
from typing import Any

import imagekit
from imagekit.lint.findings import Finding, Severity
from imagekit.util.atomic import write_bytes
from imagekit.util.cache import cache_dir, key_of, unwritable

ENV = "IMAGEKIT_LINT_CACHE"
SCHEMA = "imagekit.lint-pvgrub-cache/1"
SOURCES = ("imagekit.lint.pvgrub", "imagekit.lint.findings", "imagekit.lint.pvgrub_cache", "imagekit.pvgrub.plan",
           "imagekit.pvgrub.menu", "imagekit.pvgrub.shell", "imagekit.pvgrub.fetch", "imagekit.pvgrub.variant",
           "imagekit.pvgrub.aki", "imagekit.kernel.xenload")


def enabled() -> bool:
    return os.environ.get(ENV, "").lower() not in ("0", "off", "no", "false")


def directory() -> Path:
    return cache_dir() / "lint-pvgrub"


def identity(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


@cache
def source_hash() -> str:
    """sha256 over the source of the modules that decide the verdict (an edit, even uncommitted, misses)."""
    digest = hashlib.sha256(imagekit.__version__.encode())
    for name in SOURCES:
        spec = importlib_util.find_spec(name)
        origin = spec.origin if spec else None
        digest.update(name.encode() + b"\0" + (Path(origin).read_bytes() if origin else b"") + b"\0")
    return digest.hexdigest()


def grub_identity() -> list[Any]:
    """The GRUB 0.97 that decides the verdict, by its bytes: the patched shell is made from the pinned .deb
    on first use, and two processes that make it at once each rename their own (equal) copy into place, so
    its mtime is no identity (a build's verdict then missed in the lint after it: seen in CI)."""
    from imagekit.pvgrub.fetch import DEB_SHA256, VERSION, grub_binary

    binary = grub_binary()
    st = binary.stat()
    return [VERSION, DEB_SHA256, binary.name, _content_sha256(binary, st.st_ino, st.st_size, st.st_mtime_ns)]


@cache
def _content_sha256(path: Path, _ino: int, _size: int, _mtime_ns: int) -> str:
    """sha256 of the file, hashed once per process for each (inode, size, mtime) it has had."""
    from imagekit.pvgrub.fetch import sha256_of

    return sha256_of(path)


def _inputs(file_id: list[int], aki: list[str]) -> dict[str, Any]:
    return {"schema": SCHEMA, "file": file_id, "aki": aki, "grub": grub_identity(), "imagekit": source_hash()}


def _entry(inputs: dict[str, Any]) -> Path:
    return directory() / f"{key_of(inputs['file'])}-{key_of(inputs)}.json"


def load(st: os.stat_result, aki: list[str]) -> list[Finding] | None:
    """The stored findings for this file identity and AKI, or None (a miss, or an entry not to be trusted)."""
    if not enabled():
        return None
    inputs = _inputs(identity(st), aki)
    entry = _read(_entry(inputs))
    if entry is None or entry[0] != _as_stored(inputs):
        return None
    return entry[1]


def _read(path: Path) -> tuple[dict[str, Any], list[Finding]] | None:
    """An entry's inputs and findings; None when it is missing, unreadable, not JSON or not our shape."""
    try:
        stored = json.loads(path.read_text())
        return stored["inputs"], [Finding(f["rule"], Severity(f["severity"]), f["object"], f["message"], f["hint"])
                                  for f in stored["findings"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _as_stored(inputs: dict[str, Any]) -> Any:
    """The inputs as they read back from an entry's JSON (tuples as lists): what a stored entry is compared to."""
    return json.loads(json.dumps(inputs))


def store(st: os.stat_result, aki: list[str], findings: list[Finding]) -> None:
    if not enabled() or unwritable(directory()) is not None:
        return
    inputs = _inputs(identity(st), aki)
    _write(_entry(inputs), {"inputs": inputs, "findings": [asdict(f) for f in findings]})


def _write(path: Path, data: dict[str, Any]) -> None:
    """A whole entry or none (util/atomic); a cache that cannot be written is no error."""
    with contextlib.suppress(OSError):
        write_bytes(path, json.dumps(data).encode())


def carry(before: os.stat_result, after: Path) -> None:
    """Entries of a file the caller renamed (the same inode, not written since `before`) under its new
    identity: how the build's own lint of `.NAME.partial` serves the `imagekit lint NAME` that follows."""
    if not enabled():
        return
    st = after.stat()
    if identity(st)[:4] != identity(before)[:4]:
        return  # not the same file, or written since: nothing carries over
    for old in directory().glob(f"{key_of(identity(before))}-*.json"):
        entry = _read(old)
        if entry is None or not isinstance(entry[0], dict) or "aki" not in entry[0]:
            continue
        inputs, findings = entry
        if inputs == _as_stored(_inputs(identity(before), inputs["aki"])):
            store(st, inputs["aki"], findings)
        with contextlib.suppress(OSError):
            old.unlink()
