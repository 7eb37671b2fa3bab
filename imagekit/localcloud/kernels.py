"""Amazon's PV-GRUB AKIs, listed by every region's DescribeImages (owner amazon), as on AWS.

They come from imagekit.pvgrub.aki's 1.05 table, named `pv-grub-hd0_1.05-<arch>.gz`, so that
`--kernel-id auto` finds them by name against the local cloud too.
"""

from __future__ import annotations

from typing import Any

_installed = False


def seed(backend: Any) -> None:
    from moto.ec2.models.amis import Ami

    from imagekit.pvgrub.aki import load_table

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


KERNEL_PREFIXES = ("aki-", "ari-")


def describe_with_kernels(original: Any) -> Any:
    """AmiBackend.describe_images that also finds aki-/ari- ids (InvalidAMIID.NotFound when unknown)."""

    def describe_images(self: Any, ami_ids: list[str] | None = None, *args: Any, **kwargs: Any) -> list[Any]:
        from moto.ec2.exceptions import InvalidAMIIdError

        kernel_ids = [i for i in ami_ids or [] if i.startswith(KERNEL_PREFIXES)]
        if not kernel_ids:
            return list(original(self, ami_ids, *args, **kwargs))
        missing = [i for i in kernel_ids if i not in self.amis]
        if missing:
            raise InvalidAMIIdError(missing)
        rest = [i for i in ami_ids or [] if i not in kernel_ids]
        found = list(original(self, rest, *args, **kwargs)) if rest else []
        return [self.amis[i] for i in kernel_ids] + found

    return describe_images


def install() -> None:
    global _installed
    if _installed:
        return
    from moto.ec2.models.amis import AmiBackend

    AmiBackend.describe_images = describe_with_kernels(AmiBackend.describe_images)  # type: ignore[method-assign]
    load = AmiBackend._load_amis

    def _load_amis(self: Any) -> None:
        load(self)
        seed(self)

    AmiBackend._load_amis = _load_amis  # type: ignore[method-assign]
    _installed = True
