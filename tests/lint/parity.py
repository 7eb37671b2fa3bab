"""Both readers on one image: every target's findings through the native reader and through libguestfs
(one appliance launch per image, every target linted in it) must be the same."""

from __future__ import annotations

from pathlib import Path

from imagekit.kernel.config import Target
from imagekit.lint import lint_view
from imagekit.lint.native import NotNative, open_native
from imagekit.lint.view import open_guestfs_view
from imagekit.manifest import read_manifest

TARGETS = (Target.PV, Target.HVM, Target.NITRO)


def findings_by_target(view, manifest) -> dict[str, list]:
    arch = (manifest.arch if manifest else None) or "x86_64"
    return {t.value: lint_view(view, t, arch, manifest) for t in TARGETS}


def assert_readers_agree(image: Path, *, native: bool = True) -> None:
    """The same findings for every target through both readers; `native=False`: the native reader must
    refuse the image (NotNative), so auto reads it through libguestfs."""
    manifest = read_manifest(image)
    with open_guestfs_view(image) as view:
        through_guestfs = findings_by_target(view, manifest)
    if not native:
        try:
            open_native(image)
        except NotNative:
            return
        raise AssertionError(f"{image}: the native reader opened it; expected NotNative")
    with open_native(image) as view:
        through_native = findings_by_target(view, manifest)
    for target in through_guestfs:
        assert through_native[target] == through_guestfs[target], (image, target)
