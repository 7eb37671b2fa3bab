"""Amazon's PV-GRUB AKIs, listed by every region's DescribeImages (owner amazon), as on AWS.

They come from imagekit.aki's 1.05 table, named `pv-grub-hd0_1.05-<arch>.gz`, so that
`--kernel-id auto` finds them by name against the local cloud too.
"""

from __future__ import annotations

from typing import Any

_installed = False


def seed(backend: Any) -> None:
    from moto.ec2.models.amis import Ami

    from imagekit.aki import load_table

    for aki in load_table("1.05"):
        if aki.region != backend.region_name or aki.id in backend.amis:
            continue
        backend.amis[aki.id] = Ami(
            backend,
            aki.id,
            name=f"pv-grub-{aki.layout}_{aki.version}-{aki.arch}.gz",
            description=f"PV-GRUB {aki.version} {aki.layout} {aki.arch}",
            owner_id="amazon",
            owner_alias="amazon",
            public=True,
            architecture=aki.arch,
            virtualization_type="paravirtual",
            image_type="kernel",
            image_location=f"amazon/pv-grub-{aki.layout}_{aki.version}-{aki.arch}.gz",
        )
        backend.snapshots.pop(backend.amis[aki.id].ebs_snapshot.id, None)


def install() -> None:
    global _installed
    if _installed:
        return
    from moto.ec2.models.amis import AmiBackend

    load = AmiBackend._load_amis

    def _load_amis(self: Any) -> None:
        load(self)
        seed(self)

    AmiBackend._load_amis = _load_amis  # type: ignore[method-assign]
    _installed = True
