"""What a build's steps share: one `BuildContext` (mkosi's Context is the model).

It holds the inputs (recipe, kernel profile, output, epoch, filesystem ids), what the build owns (the
work directory, the partial image, the ExitStack that removes them) and what the steps have made so far
(the staged trees, the disk's placements, the filesystem records). Paths derived from them are
properties, so no step builds a path string of its own. `imagekit/build.py:build_image` creates it and
runs its steps on it; image/ and the build read it, nothing else does.
"""

from __future__ import annotations

import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from imagekit.image.filesystem import EXT, NewFilesystem, TooSmall, make_filesystem
from imagekit.image.layout import FirmwarePart, Placement, plan_firmware
from imagekit.manifest import FilesystemRecord
from imagekit.recipe.kernel_profiles import KernelProfile
from imagekit.recipe.model import Recipe, Virtualization
from imagekit.rootfs.bootstrap import Tree
from imagekit.rootfs.configure import FsIds, KernelInfo
from imagekit.rootfs.volumes import VolumeImage
from imagekit.util.errors import RecipeError
from imagekit.util.progress import Progress
from imagekit.util.reproducible import UUID_NAMESPACE, clamp_times


@dataclass
class BuildContext:
    recipe: Recipe
    profile: KernelProfile
    output: Path  # the image's final name
    workdir: Path  # the build's staging area (removed by `stack`)
    progress: Progress
    stack: ExitStack  # owns the work dir and the partial files; unwinds on any error
    epoch: int | None  # None: not a reproducible build
    ids: FsIds
    tree: Tree  # the staged root tree
    # What the steps make, in the order they make it:
    kernel: KernelInfo | None = None
    menu: str = ""  # menu.lst (PV) or grub.cfg (HVM)
    cmdline: str = ""
    boot_tree: Tree | None = None  # /boot split off for a /boot partition
    packages: list[dict[str, str]] = field(default_factory=list)
    trees: dict[str, Tree] = field(default_factory=dict)  # mount point -> tree: logical and data volumes
    disk_size: int = 0
    placements: list[Placement] = field(default_factory=list)  # every filesystem made (fsck checks each)
    filesystems: list[FilesystemRecord] = field(default_factory=list)  # in partition order
    volume_images: list[VolumeImage] = field(default_factory=list)

    @property
    def partial(self) -> Path:
        """The image under its temporary name until the build is complete."""
        return self.output.with_name(f".{self.output.name}.partial")

    @property
    def hvm(self) -> bool:
        return self.recipe.layout.virtualization is Virtualization.HVM

    @property
    def reproducible(self) -> bool:
        return self.epoch is not None

    @property
    def firmware(self) -> list[FirmwarePart]:
        """HVM: the firmware partitions (BIOS boot, ESP) the layout puts before the filesystems."""
        return plan_firmware(self.recipe)

    def derive(self, name: str) -> uuid.UUID | None:
        """A reproducible id derived from `name` (a filesystem UUID), None for an ordinary build."""
        return uuid.uuid5(UUID_NAMESPACE, name) if self.reproducible else None


def fill_filesystem(ctx: BuildContext, place: Placement, source: Tree, fs_uuid: str, *, key: str,
                    holds_boot: bool) -> None:
    """mkfs at `place` in the partial image, filled from `source`; reproducible: seeded and time-clamped.
    A tree that does not fit is the recipe's error at `key`."""
    seed = ctx.derive(fs_uuid)
    new = NewFilesystem(place, source, fs_uuid, boot=holds_boot, hash_seed=str(seed) if seed else None,
                        epoch=ctx.epoch)
    try:
        make_filesystem(new, ctx.partial, ctx.workdir)
    except TooSmall as exc:
        raise RecipeError(ctx.recipe.path, key, exc.message) from None
    if ctx.epoch is not None and place.fs.type in EXT:
        clamp_times(ctx.partial, place.offset, source.path, ctx.epoch, ctx.workdir)
