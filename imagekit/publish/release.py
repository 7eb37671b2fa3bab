"""A release: the images of one recipe built for each architecture, published under one name template.

    imagekit publish out/x86.img out/arm64.img --name 'debian-12-{arch}-20270101'

`release_names` decides each image's AMI name before anything is sent: `{arch}` becomes the image's EC2
architecture (x86_64, arm64); two images need `{arch}` (two AMIs cannot share a name) and distinct arches.
`imagekit publish` (cli/publish.py:run_release) builds, preflights and lints every image's request first, then
publishes each in turn; each AMI's record names the release.
"""

from __future__ import annotations

from collections.abc import Sequence

from imagekit.util.errors import UsageError

PLACEHOLDER = "{arch}"


def release_names(template: str, arches: Sequence[str]) -> list[str]:
    """Each image's AMI name (in the order of `arches`), or a UsageError naming --name or the images."""
    seen: dict[str, int] = {}
    for n, arch in enumerate(arches):
        if arch in seen:
            raise UsageError(f"IMAGE: images {seen[arch] + 1} and {n + 1} are both {arch}: a release publishes "
                             "one image per architecture")
        seen[arch] = n
    if len(arches) > 1 and PLACEHOLDER not in template:
        raise UsageError(f"--name {template!r}: the images are {' and '.join(arches)}; the name must contain "
                         f"{PLACEHOLDER} (two AMIs cannot share a name)",
                         hint="e.g. --name 'debian-12-{arch}-20270101'")
    return [template.replace(PLACEHOLDER, arch) for arch in arches]
