"""Lint a disk image against the PV-GRUB and EC2 rules, before an upload is spent on it.

    from imagekit.lint import lint_image
    findings = lint_image("out/img.raw", target="pv")

Works on any image (raw, or a self-contained qcow2 when asked for with fmt="qcow2"), not only
imagekit's: read in this process (reader "native", lint/native.py) or through one read-only libguestfs
launch (reader "guestfs"; "auto", the default, is native with libguestfs for what it cannot open, see
lint/view.py), the facts read from the image itself; a build manifest
beside the image, if there is one, only supplies the architecture and the boot mode (a manifest that
does not validate is a UsageError naming it). Each Finding has a stable rule id (RULES). The image is
hostile input: a file a rule cannot read (a symlink loop, a relative path, a huge file) is a finding,
and the other rules still run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from imagekit.image.disklabel import MBR_GPT_PROTECTIVE, read_head
from imagekit.kernel.config import Target
from imagekit.lint.findings import RULES, Finding, Severity
from imagekit.lint.rules import REGISTRY, lint_view
from imagekit.lint.view import open_view
from imagekit.manifest import read_manifest
from imagekit.recipe.layouts import Virtualization
from imagekit.util.errors import UsageError
from imagekit.util.progress import Progress

__all__ = ["REGISTRY", "RULES", "Finding", "LintReport", "Severity", "default_target", "has_errors", "lint_image",
           "lint_report", "lint_view"]


def has_errors(findings: list[Finding]) -> bool:
    return any(f.severity is Severity.ERROR for f in findings)


def _target(target: str) -> Target:
    try:
        return Target(target)
    except ValueError:
        raise UsageError(f"--target: {target!r} is not one of {', '.join(t.value for t in Target)}") from None


def default_target(image: Path) -> str:
    """pv or hvm, for an image linted without --target: its manifest's virtualization, else its first
    sector (a GPT protective MBR or GRUB 2 boot code means HVM; PV-GRUB images carry no boot code)."""
    manifest = read_manifest(image) if image.is_file() else None
    if manifest and manifest.virtualization is not None:
        return "hvm" if manifest.virtualization is Virtualization.HVM else "pv"
    try:
        label = read_head(image)
    except OSError:
        return "pv"
    if label.mbr and (label.mbr_types[0] == MBR_GPT_PROTECTIVE or label.grub_in_mbr):
        return "hvm"
    return "pv"


@dataclass
class LintReport:
    findings: list[Finding]
    reader: str  # "native" or "guestfs": which reader read the image
    notes: list[str] = field(default_factory=list)  # why auto fell back to libguestfs, if it did


def lint_image(  # noqa: PLR0913 - `imagekit lint`'s options as optional keywords (the API tests call)
    path: str | os.PathLike[str], target: str | None = None, progress: Progress | None = None,
    arch: str | None = None, fmt: str | None = None, reader: str = "auto", aki_version: str | None = None,
) -> list[Finding]:
    """Every finding for the image at `path` on `target` (pv, hvm or nitro; default: `default_target`).
    `fmt` is raw or qcow2 (None: raw, and a file with a qcow2 header is refused; appliance.disk_format);
    `reader` is auto, native or guestfs (lint/view.py); `aki_version`: the PV-GRUB whose rules apply
    (default: what `imagekit aki` registers). Never writes to it."""
    return lint_report(path, target, progress, arch, fmt, reader, aki_version).findings


def lint_report(  # noqa: PLR0913 - lint_image's options, the same keywords
    path: str | os.PathLike[str], target: str | None = None, progress: Progress | None = None,
    arch: str | None = None, fmt: str | None = None, reader: str = "auto", aki_version: str | None = None,
) -> LintReport:
    """`lint_image`, and which reader read the image (and why auto fell back, when it did)."""
    from imagekit.util.appliance import disk_format

    image = Path(path)
    chosen = _target(target) if target else None
    if not image.is_file():
        raise UsageError(f"{image}: no such image file")
    disk = disk_format(image, fmt)
    manifest = read_manifest(image)  # validated: a bad one is a UsageError naming file and key
    tgt = chosen or _target(default_target(image))
    arch = arch or (manifest.arch if manifest else None) or "x86_64"
    progress = progress or Progress("quiet")
    notes: list[str] = []

    def fell_back(note: str) -> None:
        notes.append(note)
        progress.warn(f"lint: {note}")

    with progress.stage("lint", f"{image.name} --target {tgt}") as stage:
        stage.phase("reading the image")
        with open_view(image, disk, reader, fell_back) as view:
            stage.phase(f"reading the image ({view.reader})")
            findings = lint_view(view, tgt, arch, manifest, aki_version=aki_version, fmt=str(disk), stage=stage)
            return LintReport(findings, view.reader, notes)
