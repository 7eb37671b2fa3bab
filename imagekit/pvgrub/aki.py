"""Which PV-GRUB AKI boots an image: region x arch x layout, from AWS's published tables.

The tables are data (imagekit/data/aki-pvgrub-<version>.toml), not code: seed 002's PV-GRUB 1.03
table (hd0 and hd00, 8 regions) and the 1.05 table (hd0 only, 10 regions). Without a version the
newest table that has the layout is used: 1.05 for hd0, 1.03 for hd00.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources

from imagekit.recipe.layouts import PV_LAYOUT_NAMES
from imagekit.util.errors import UsageError

VERSIONS = ("1.03", "1.05")  # oldest first
LAYOUTS = PV_LAYOUT_NAMES  # the layouts a PV-GRUB AKI reads (the layout table's)
# also the CLI's --arch
ARCH_ALIASES = {"amd64": "x86_64", "x86-64": "x86_64", "i686": "i386", "x86": "i386", "aarch64": "arm64"}


class AkiNotFound(UsageError):
    """No AKI for that region/arch/layout/version; the message lists the known values."""


@dataclass(frozen=True)
class Aki:
    id: str  # aki-xxxxxxxx
    region: str  # us-east-1
    arch: str  # x86_64 | i386
    layout: str  # hd0 | hd00
    version: str  # PV-GRUB version: 1.03 | 1.05
    manifest: str  # the image's manifest location (1.03) or name (1.05)


@cache
def load_table(version: str) -> tuple[Aki, ...]:
    """Every AKI of one PV-GRUB version, as the data file lists them."""
    if version not in VERSIONS:
        raise AkiNotFound(f"--version: PV-GRUB {version!r} is not one of {', '.join(VERSIONS)}")
    text = resources.files("imagekit").joinpath(f"data/aki-pvgrub-{version}.toml").read_text()
    data = tomllib.loads(text)
    return tuple(Aki(version=data["version"], **row) for row in data["aki"])


def all_akis() -> list[Aki]:
    return [aki for version in VERSIONS for aki in load_table(version)]


def normalize_arch(arch: str) -> str:
    arch = arch.strip().lower()
    return ARCH_ALIASES.get(arch, arch)


def _known(values: Iterable[str]) -> str:
    return ", ".join(sorted(set(values)))


def _check_choice(option: str, value: str, known: set[str]) -> None:
    if value not in known:
        raise AkiNotFound(f"{option}: unknown {option.lstrip('-')} {value!r}; known: {_known(known)}")


def default_version(layout: str) -> str:
    """The newest PV-GRUB version whose table has this layout."""
    for version in reversed(VERSIONS):
        if any(aki.layout == layout for aki in load_table(version)):
            return version
    raise AkiNotFound(f"--layout: no PV-GRUB table has layout {layout!r}; known: {_known(LAYOUTS)}")


def check_filters(region: str | None, arch: str | None, layout: str | None) -> None:
    """Raise AkiNotFound, listing the known values, for a region/arch/layout no table has."""
    everything = all_akis()
    if region is not None:
        _check_choice("--region", region, {a.region for a in everything})
    if arch is not None:
        _check_choice("--arch", arch, {a.arch for a in everything})
    if layout is not None:
        _check_choice("--layout", layout, set(LAYOUTS))


def find_aki(region: str, arch: str, layout: str, version: str | None = None) -> Aki:
    """The PV-GRUB AKI for region x arch x layout (version None: newest table with that layout)."""
    region, arch, layout = region.strip().lower(), normalize_arch(arch), layout.strip().lower()
    check_filters(region, arch, layout)
    version = version or default_version(layout)
    table = load_table(version)
    for aki in table:
        if (aki.region, aki.arch, aki.layout) == (region, arch, layout):
            return aki
    regions = {a.region for a in table if a.layout == layout}
    if not regions:
        layouts = {a.layout for a in table}
        raise AkiNotFound(f"--layout: PV-GRUB {version} has no {layout} AKI; it has {_known(layouts)}")
    raise AkiNotFound(
        f"--region: PV-GRUB {version} has no {layout} AKI in {region}; it covers {_known(regions)}"
    )


def list_akis(
    region: str | None = None, arch: str | None = None, layout: str | None = None, version: str | None = None
) -> list[Aki]:
    """Every AKI matching the filters given (all versions when version is None)."""
    region = region.strip().lower() if region else None
    arch = normalize_arch(arch) if arch else None
    layout = layout.strip().lower() if layout else None
    check_filters(region, arch, layout)
    rows = list(load_table(version)) if version else all_akis()
    return [
        a for a in rows
        if region in (None, a.region) and arch in (None, a.arch) and layout in (None, a.layout)
    ]
