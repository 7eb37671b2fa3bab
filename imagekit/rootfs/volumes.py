"""Persistent data volumes (seed 000): fstab by LABEL, services ordered after their mounts, volume images.

The root volume is disposable ("tweak and go"); data lives on EBS volumes attached as /dev/sdh etc.
For each data volume of the recipe the image gets:

- an fstab line by LABEL with `nofail` and `x-systemd.device-timeout=`, so an instance still boots
  (degraded) when the volume is not attached;
- a systemd drop-in `RequiresMountsFor=<mountpoint>` for every service named, so PostgreSQL never
  starts on an empty /var/lib/postgresql: without the volume the service fails its dependency;

and `imagekit build` writes the volume itself as `<image>.<name>.img`, a labelled raw filesystem,
empty or (initial = "copy") holding what the image had under the mount point. The manifest lists them
under "data_volumes" for `imagekit publish` to snapshot and map.
"""

from __future__ import annotations

import os
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagekit.image.blockmap import block_map_of
from imagekit.image.filesystem import EXT, NewFilesystem, TooSmall, make_filesystem
from imagekit.image.layout import Placement, align_up
from imagekit.recipe.model import DataVolume, Filesystem, Recipe
from imagekit.rootfs.bootstrap import Tree
from imagekit.rootfs.tree_paths import (
    TreePathError,
    make_directory_in_tree,
    read_in_tree,
    resolve_in_tree,
    write_in_tree,
)
from imagekit.util.errors import RecipeError
from imagekit.util.run import output

DROPIN = "imagekit-volumes.conf"
VOLUME_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://imagekit/data-volumes")


def passno(fstype: str) -> int:
    """fsck order for a non-root filesystem: 2, or 0 where fsck does nothing useful (xfs, btrfs)."""
    return 0 if fstype in ("xfs", "btrfs") else 2


def volume_fstab_line(vol: DataVolume) -> str:
    options = f"defaults,nofail,x-systemd.device-timeout={vol.device_timeout}s"
    return f"LABEL={vol.label}\t{vol.mountpoint}\t{vol.type.value}\t{options}\t0\t{passno(vol.type.value)}"


def service_dropins(recipe: Recipe) -> dict[str, str]:
    """Drop-in path in the image -> text: each named unit requires (and is ordered after) its mounts."""
    mounts: dict[str, list[str]] = {}
    for vol in recipe.volumes:
        for unit in vol.services:
            mounts.setdefault(unit, []).append(vol.mountpoint)
    return {
        f"/etc/systemd/system/{unit}.d/{DROPIN}":
            "# Written by imagekit: start only once the data volume is mounted (never on an empty directory).\n"
            f"[Unit]\nRequiresMountsFor={' '.join(paths)}\n"
        for unit, paths in sorted(mounts.items())
    }


def lvm_fstab_lines(recipe: Recipe) -> list[str]:
    """fstab lines for the logical volumes other than / (fstab_text writes /), by LABEL."""
    if recipe.lvm is None:
        return []
    lines = []
    for lv in recipe.lvm.volumes:
        if lv.mountpoint == "/":
            continue
        if lv.type == "swap":
            lines.append(f"LABEL={lv.label}\tnone\tswap\tsw\t0\t0")
        else:
            fsck = 0 if lv.type in ("xfs", "btrfs") else 2
            lines.append(f"LABEL={lv.label}\t{lv.mountpoint}\t{lv.type}\tdefaults\t0\t{fsck}")
    return lines


def configure_volumes(recipe: Recipe, tree: Tree) -> None:
    """Append the logical and data volumes to the tree's fstab; write the services' drop-ins."""
    lines = [*lvm_fstab_lines(recipe), *(volume_fstab_line(v) for v in recipe.volumes)]
    if not lines:
        return
    old = read_in_tree(tree.path, "/etc/fstab") or ""
    write_in_tree(tree.path, "/etc/fstab", (old + "".join(line + "\n" for line in lines)).encode())
    for path, text in service_dropins(recipe).items():
        write_in_tree(tree.path, path, text.encode())
    for vol in recipe.volumes:
        make_directory_in_tree(tree.path, vol.mountpoint)


def split_mounts(recipe: Recipe, tree: Tree, workdir: Path) -> dict[str, Tree]:
    """Move what goes on other filesystems (logical volumes, copy-initialised data volumes) out of the tree.

    Deepest mount points first, so /var/lib/postgresql leaves /var before /var leaves /. The tree keeps
    an empty directory as each mount point. Returns mount point -> its tree.
    """
    points = [lv.mountpoint for lv in (recipe.lvm.volumes if recipe.lvm else ()) if lv.mountpoint not in (None, "/")]
    points += [v.mountpoint for v in recipe.volumes if v.initial == "copy"]
    trees = {}
    for n, point in enumerate(sorted((p for p in points if p), key=lambda p: (-p.count("/"), p))):
        src = resolve_in_tree(tree.path, point)  # what the mount covers at boot (symlinks followed in the image)
        if src == tree.path:
            raise TreePathError(point, "is a symlink to the image's root directory: it cannot be a mount point")
        dest = workdir / f"mount-{n}"
        if src.is_dir() and not src.is_symlink():
            mode = src.stat().st_mode & 0o7777
            os.replace(src, dest)  # same inode: a rootless build's fakeroot state still knows its owner
            src.mkdir(mode=mode)
        else:
            dest.mkdir()
            make_directory_in_tree(tree.path, point)
        trees[point] = Tree(dest, tree.fakeroot_state)
    return trees


def volume_image_path(image: Path, name: str) -> Path:
    return image.with_name(f"{image.name}.{name}.img")


@dataclass(frozen=True)
class VolumeImage:
    volume: DataVolume
    partial: Path
    path: Path
    uuid: str


def volume_uuid(recipe: Recipe, vol: DataVolume, epoch: int | None) -> str:
    if epoch is None:
        return str(uuid.uuid4())
    return str(uuid.uuid5(VOLUME_NAMESPACE, f"{recipe.sha256}:{epoch}:{vol.name}"))


def _tree_owner(tree: Tree) -> tuple[int, int, int]:
    """(uid, gid, mode) of a tree's top directory, as the image will have it (through fakeroot)."""
    argv = ["stat", "-c", "%u %g %a", os.fspath(tree.path)]
    if tree.fakeroot_state is not None:
        argv = ["fakeroot", "-i", os.fspath(tree.fakeroot_state), "--", *argv]
    uid, gid, mode = output(argv).split()
    return int(uid), int(gid), int(mode, 8)


def set_root_owner(image: Path, owner: tuple[int, int, int]) -> None:
    """Give an ext filesystem's root directory the mount point's owner and mode (mke2fs makes it root's)."""
    from imagekit.util.run import run

    uid, gid, mode = owner
    if (uid, gid, mode) == (0, 0, 0o755):
        return
    script = "\n".join([f"sif / uid {uid}", f"sif / gid {gid}", f"sif / mode 0{0o40000 | mode:o}"]) + "\n"
    run(["debugfs", "-w", "-f", "-", image], input=script.encode())


def make_volume_images(recipe: Recipe, output_image: Path, trees: dict[str, Tree], workdir: Path,
                       epoch: int | None, stack: ExitStack) -> list[VolumeImage]:
    """Each data volume as `<image>.<name>.img` (under a partial name until `commit_volume_images`)."""
    made = []
    empty = workdir / "empty-volume"
    for n, vol in enumerate(recipe.volumes):
        if not vol.image:
            continue
        final = volume_image_path(output_image, vol.name)
        partial = final.with_name(f".{final.name}.partial")
        stack.callback(partial.unlink, missing_ok=True)
        with open(partial, "wb") as f:
            f.truncate(align_up(vol.size))
        tree = trees.get(vol.mountpoint)
        if tree is None:
            empty.mkdir(exist_ok=True)
            tree = Tree(empty, None)
        fs = Filesystem(type=vol.type, label=vol.label)
        place = Placement(vol.mountpoint, fs, None, 0, align_up(vol.size))
        fs_uuid = volume_uuid(recipe, vol, epoch)
        seed = str(uuid.uuid5(VOLUME_NAMESPACE, fs_uuid)) if epoch is not None else None
        try:
            make_filesystem(NewFilesystem(place, tree, fs_uuid, hash_seed=seed, epoch=epoch), partial, workdir)
        except TooSmall as exc:
            raise RecipeError(recipe.path, f"volumes.{n}.size", exc.message) from None
        if vol.type in EXT and tree.path != empty:
            set_root_owner(partial, _tree_owner(tree))
        if epoch is not None and vol.type in EXT and tree.path != empty:
            from imagekit.util.reproducible import clamp_times

            clamp_times(partial, 0, tree.path, epoch, workdir)
        made.append(VolumeImage(vol, partial, final, fs_uuid))
    return made


def commit_volume_images(images: list[VolumeImage]) -> None:
    """Give each finished volume image its final name (after the disk image got its own)."""
    for img in images:
        os.replace(img.partial, img.path)


def volume_digest(img: VolumeImage | None) -> dict[str, Any]:
    """A volume image's id and block map, as the disk image's (imagekit/image/blockmap.py)."""
    if img is None:
        return {"id": None, "block_map": None}
    blocks = block_map_of(img.partial if img.partial.exists() else img.path)
    return {"id": blocks.image_id, "block_map": blocks.record()}


def volume_records(recipe: Recipe, images: list[VolumeImage]) -> list[dict[str, Any]]:
    """The manifest's "data_volumes": what publish needs to snapshot and map each volume."""
    by_name = {img.volume.name: img for img in images}
    records = []
    for vol in recipe.volumes:
        img = by_name.get(vol.name)
        records.append({
            "name": vol.name, "mountpoint": vol.mountpoint, "label": vol.label, "type": vol.type.value,
            "size": align_up(vol.size), "device": vol.device,
            "image": img.path.name if img else None,
            "delete_on_termination": vol.delete_on_termination, "services": list(vol.services),
            "uuid": img.uuid if img else None, "initial": vol.initial,
            **volume_digest(img),
        })
    return records
