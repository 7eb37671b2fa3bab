"""The LVM layout (seeds 001, 002): hd00 with /boot on the first partition, an LVM PV on the rest.

PV-GRUB reads the first partition only and knows nothing of LVM, so /boot stays a plain partition.
Making LVM metadata needs a kernel (device-mapper, block devices), so imagekit launches libguestfs
once to create the physical volume, the volume group, the logical volumes and their swap areas.
Everything else happens on the host: LVM's metadata (read back from the image by lvm_metadata.py)
says where each logical volume's bytes are, and the host's mkfs writes each filesystem straight
there (`mke2fs -d -E offset=`), as for any partition. No file data crosses the appliance.

A reproducible build (an epoch) rewrites the metadata LVM wrote, on the host (lvm_rewrite.py: ids
derived from the recipe, no times or host of the build), while the appliance that made it waits with
the volume group deactivated; then that appliance's LVM tools must report the VG, its PV and its LVs
with the written ids, or the build fails.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagekit.image.context import BuildContext, fill_filesystem
from imagekit.image.layout import Placement
from imagekit.image.lvm_metadata import LogicalExtent, logical_extents, read_metadata_text
from imagekit.image.lvm_rewrite import LvmIds, Rewrite, lvm_id, plain, rewrite_pv
from imagekit.image.partition import write_mbr
from imagekit.manifest import FilesystemRecord, LvmRef
from imagekit.recipe.model import Filesystem, FsType, LogicalVolume, Recipe
from imagekit.rootfs.configure import FsIds
from imagekit.util.appliance import DiskFormat, Drive, session
from imagekit.util.errors import ImagekitError

LV_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://imagekit/logical-volumes")
MBR_LINUX_LVM = 0x8E


@dataclass(frozen=True)
class LvPlan:
    """One logical volume to create: its size in MiB (None: the rest), and a swap label when it is swap."""

    name: str
    mib: int | None
    swap_label: str | None = None
    swap_uuid: str | None = None


def lv_uuid(recipe: Recipe, lv: LogicalVolume, ids: FsIds, epoch: int | None) -> str:
    if lv.mountpoint == "/":
        return ids.root_uuid
    if epoch is None:
        return str(uuid.uuid4())
    return str(uuid.uuid5(LV_NAMESPACE, f"{recipe.sha256}:{epoch}:{lv.name}"))


def lv_filesystem(recipe: Recipe, lv: LogicalVolume) -> Filesystem | None:
    """The filesystem an LV holds (None for swap)."""
    if lv.mountpoint == "/":
        return recipe.filesystems.root
    if lv.type == "swap":
        return None
    assert lv.type is not None and lv.label is not None
    return Filesystem(type=FsType(lv.type), label=lv.label)


def set_mbr_type(image: Path, partition: int, type_id: int) -> None:
    """Set a primary partition's MBR type byte (0x8e: Linux LVM), which pyparted's write_mbr leaves 0x83."""
    with open(image, "r+b") as f:
        f.seek(446 + 16 * (partition - 1) + 4)
        f.write(bytes([type_id]))


def create_volume_group(image: Path, pv: Placement, vg: str, plans: list[LvPlan], rewrite: Rewrite | None) -> None:
    """One libguestfs launch: PV on pv's partition, the VG, the LVs in order, mkswap on the swap ones;
    with `rewrite`, the metadata rewritten on the host and read back by the appliance's LVM tools."""
    with session([Drive(image, DiskFormat.RAW, readonly=False)],
                 error=f"{image}: creating LVM volume group {vg} with libguestfs failed",
                 hint="do the logical volumes fit? (sizes are rounded up to 4 MiB extents)") as g:
        disk = g.list_devices()[0]
        device = f"{disk}{pv.partition}"
        g.pvcreate(device)
        g.vgcreate(vg, [device])
        for plan in plans:
            if plan.mib is None:
                g.lvcreate_free(plan.name, vg, 100)
            else:
                g.lvcreate(plan.name, vg, plan.mib)
        for plan in plans:
            if plan.swap_label is not None:
                g.mkswap(f"/dev/{vg}/{plan.name}", label=plan.swap_label, uuid=plan.swap_uuid)
        g.sync()
        if rewrite is None:
            return
        g.vg_activate(False, [vg])
        text = rewrite_pv(image, pv.offset, rewrite)
        for dev in (disk, device):  # the guest reads what the host wrote, not its buffers of the old metadata
            g.blockdev_flushbufs(dev)
        check_ids(g, image, vg, rewrite.ids)
    if read_metadata_text(image, pv.offset) != text:
        raise ImagekitError(f"{image}: the LVM metadata changed after imagekit rewrote it (the appliance wrote it)")


REWRITE_HINT = "a bug in imagekit/image/lvm_rewrite.py: build without SOURCE_DATE_EPOCH meanwhile (LVM's own ids)"


def check_ids(g: Any, image: Path, vg: str, ids: LvmIds) -> None:
    """The appliance's pvs, vgs and lvs report the VG, its PV and its LVs with `ids`: else the rewrite is wrong."""
    try:
        seen = ({plain(p["pv_uuid"]) for p in g.pvs_full()},
                {v["vg_name"]: plain(v["vg_uuid"]) for v in g.vgs_full()},
                {lv["lv_name"]: plain(lv["lv_uuid"]) for lv in g.lvs_full()})
    except RuntimeError as exc:
        raise ImagekitError(f"{image}: LVM cannot read the metadata imagekit rewrote for volume group {vg}: {exc}",
                            hint=REWRITE_HINT) from None
    want = ({plain(ids.pv)}, {vg: plain(ids.vg)}, {name: plain(i) for name, i in ids.lvs.items()})
    if seen != want:
        raise ImagekitError(f"{image}: after imagekit rewrote the LVM metadata, LVM reports PV {seen[0]}, VG "
                            f"{seen[1]}, LVs {seen[2]}; it wrote PV {want[0]}, VG {want[1]}, LVs {want[2]}",
                            hint=REWRITE_HINT)


def lvm_rewrite(ctx: BuildContext, pv: Placement) -> Rewrite | None:
    """A reproducible build's LVM ids, derived as its filesystem UUIDs are (UUID_NAMESPACE, the recipe's
    sha256 and the epoch), with the epoch and the recipe's hostname for LVM's creation stamps and the PV's
    partition on the first disk as its device hint."""
    recipe = ctx.recipe
    if ctx.epoch is None or recipe.lvm is None:
        return None

    def make(name: str) -> str:
        seed = ctx.derive(f"{recipe.sha256}:{ctx.epoch}:lvm-{name}")
        assert seed is not None
        return lvm_id(seed)

    ids = LvmIds(pv=make("pv"), vg=make(f"vg:{recipe.lvm.vg}"),
                 lvs={lv.name: make(f"lv:{lv.name}") for lv in recipe.lvm.volumes})
    return Rewrite(ids, ctx.epoch, recipe.hostname, device=f"/dev/sda{pv.partition}")


def plan_volumes(recipe: Recipe, ids: FsIds, epoch: int | None) -> list[LvPlan]:
    assert recipe.lvm is not None
    plans = []
    for lv in recipe.lvm.volumes:
        mib = None if lv.size is None else -(-lv.size // (1 << 20))
        if lv.type == "swap":
            plans.append(LvPlan(lv.name, mib, lv.label, lv_uuid(recipe, lv, ids, epoch)))
        else:
            plans.append(LvPlan(lv.name, mib))
    return plans


def assemble_lvm(ctx: BuildContext) -> tuple[list[FilesystemRecord], list[Placement]]:
    """MBR, /boot on partition 1, LVM on partition 2 and a filesystem in each LV.

    Returns the manifest's filesystem records and the placements of every filesystem made (for fsck).
    """
    recipe, image, ids = ctx.recipe, ctx.partial, ctx.ids
    assert recipe.lvm is not None and ctx.boot_tree is not None and ids.boot_uuid is not None
    boot, pv = ctx.placements
    with open(image, "wb") as f:
        f.truncate(ctx.disk_size)
    disk_id = int(ids.root_uuid.replace("-", "")[:8], 16) if ctx.reproducible else None
    write_mbr(image, ctx.placements, disk_id=disk_id)
    assert pv.partition is not None
    set_mbr_type(image, pv.partition, MBR_LINUX_LVM)

    fill_filesystem(ctx, boot, ctx.boot_tree, ids.boot_uuid, key="filesystems.boot.size", holds_boot=True)
    records = [_record(boot, ids.boot_uuid, None)]
    made = [boot]

    create_volume_group(image, pv, recipe.lvm.vg, plan_volumes(recipe, ids, ctx.epoch), lvm_rewrite(ctx, pv))
    extents = logical_extents(image, pv.offset)
    for n, lv in enumerate(recipe.lvm.volumes):
        ext = extents[lv.name]
        fs = lv_filesystem(recipe, lv)
        fs_uuid = lv_uuid(recipe, lv, ids, ctx.epoch)
        if fs is None:  # swap: made by create_volume_group
            records.append(FilesystemRecord(mountpoint=None, type="swap", label=lv.label, uuid=fs_uuid,
                                            partition=pv.partition, offset=ext.offset, size=ext.size,
                                            lvm=LvmRef(vg=recipe.lvm.vg, lv=lv.name)))
            continue
        assert lv.mountpoint is not None
        place = Placement(lv.mountpoint, fs, pv.partition, ext.offset, ext.size)
        source = ctx.tree if lv.mountpoint == "/" else ctx.trees[lv.mountpoint]
        fill_filesystem(ctx, place, source, fs_uuid, key=f"lvm.volumes.{n}.size", holds_boot=False)
        records.append(_record(place, fs_uuid, (recipe.lvm.vg, ext)))
        made.append(place)
    return records, made


def _record(place: Placement, fs_uuid: str, lvm: tuple[str, LogicalExtent] | None) -> FilesystemRecord:
    record = FilesystemRecord(mountpoint=place.mountpoint, type=place.fs.type.value, label=place.fs.label,
                              uuid=fs_uuid, partition=place.partition, offset=place.offset, size=place.size)
    if lvm is None:
        return record
    return record.model_copy(update={"lvm": LvmRef(vg=lvm[0], lv=lvm[1].name)})
