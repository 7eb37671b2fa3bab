"""The build pipeline: recipe -> rootfs -> configured tree -> image -> checks -> manifest.

`build_image` reads top to bottom like the recipe. It writes the image under a temporary name beside
the output and renames it only when complete; an interruption (Ctrl-C included) removes the partial
image and the staging area, and leaves any previous output untouched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagekit import __version__
from imagekit.image.filesystem import EXT, TooSmall, check_filesystem, make_filesystem, mke2fs_argv, mke2fs_env
from imagekit.image.firmware import esp_filesystem_records, install_bootloader, partition_records, write_table
from imagekit.image.layout import Placement, align_up, boot_overhead, plan_firmware, plan_layout
from imagekit.image.lvm import assemble_lvm
from imagekit.image.partition import write_mbr
from imagekit.image.sizing import BLOCK, TreeUsage, fits, measure_tree, probe, read_superblock, smallest_size
from imagekit.manifest import manifest_path, start_image_facts, write_manifest
from imagekit.recipe.kernel_profiles import KernelProfile, load_profile
from imagekit.recipe.model import GiB, MiB, Recipe, Virtualization
from imagekit.rootfs.bootstrap import Tree, prepare_rootfs
from imagekit.rootfs.configure import (
    FsIds,
    KernelInfo,
    boot_config,
    check_entry_files,
    copy_files,
    fstab_text,
    install_kernel,
    install_pv_kernel,
    installed_packages,
    kernel_cmdline,
    make_esp_mountpoint,
    split_boot,
    write_boot_config,
    write_fstab,
    write_identity,
)
from imagekit.rootfs.volumes import (
    commit_volume_images,
    configure_volumes,
    make_volume_images,
    split_mounts,
    volume_records,
)
from imagekit.util.errors import ImagekitError, RecipeError, UsageError
from imagekit.util.hostdisk import host_disk
from imagekit.util.progress import Progress
from imagekit.util.reproducible import UUID_NAMESPACE, clamp_times, resolve_epoch

DISK_HINT = "free space there or build elsewhere (-o; the work dir sits beside the image); the recipe's size is fine"


@dataclass(frozen=True)
class BuildResult:
    image: Path
    manifest_path: Path
    manifest: dict[str, Any]


def assign_ids(recipe: Recipe, epoch: int | None) -> FsIds:
    """Filesystem UUIDs: derived from the recipe when the build is reproducible, random otherwise."""
    def make(label: str) -> str:
        if epoch is None:
            return str(uuid.uuid4())
        return str(uuid.uuid5(UUID_NAMESPACE, f"{recipe.sha256}:{epoch}:{label}"))

    esp = make("esp")[:8].upper() if recipe.layout.uefi else None
    return FsIds(make("root"), make("boot") if recipe.separate_boot else None,
                 f"{esp[:4]}-{esp[4:]}" if esp else None)


def _fs_key(place: Placement) -> str:
    return "filesystems.boot.size" if place.mountpoint == "/boot" else "size"


def check_fits(recipe: Recipe, place: Placement, usage: TreeUsage, *, boot: bool) -> None:
    """Fail before writing anything when the tree cannot fit its filesystem, saying by how much."""
    if place.fs.type not in EXT:  # xfs, btrfs: no probe; their metadata is small next to a /boot
        if usage.bytes + (16 << 20) > place.size:
            short = -(-(usage.bytes + (16 << 20) - place.size) // MiB)
            raise RecipeError(recipe.path, _fs_key(place), f"too small: {place.mountpoint} needs about "
                              f"{usage.bytes >> 20} MiB of files, short by {short} MiB")
        return
    mkfs, env = mke2fs_argv(place.fs, boot=boot), mke2fs_env(None)
    if fits(probe(place.size, mkfs, env), usage, 0):
        return
    need = smallest_size(usage, 0, mkfs, env)
    raise RecipeError(recipe.path, _fs_key(place),
                      f"too small: {place.mountpoint} holds {usage.bytes >> 20} MiB in {usage.inodes} inodes, "
                      f"which needs a {need >> 20} MiB {place.fs.type.value} filesystem (root reserve and "
                      f"journal included) but gets {place.size >> 20} MiB: short by {(need - place.size) >> 20} MiB")


def decide_size(recipe: Recipe, usage: TreeUsage, *, boot: bool) -> int:
    """The disk size: the recipe's, or for size = "auto" the smallest whole GiB holding the tree plus `free`."""
    if recipe.size != "auto":
        return int(recipe.size)
    free = int(usage.bytes * recipe.free) if isinstance(recipe.free, float) else recipe.free
    root = recipe.filesystems.root
    if root.type not in EXT:
        root_size = usage.bytes + free + max(64 * MiB, usage.bytes // 10)
    else:
        root_size = smallest_size(usage, free, mke2fs_argv(root, boot=boot), mke2fs_env(None))
    return align_up(boot_overhead(recipe) + root_size, GiB)


def filesystem_usage(image: Path, place: Placement) -> dict[str, int]:
    """used / free / total bytes of a built ext filesystem, from its superblock."""
    if place.fs.type not in EXT:
        return {}
    cap = read_superblock(image, place.offset)
    free = cap.blocks * BLOCK
    return {"total": cap.size, "used": cap.size - free - cap.reserved * BLOCK, "free": free}


def lint_built(partial: Path, recipe: Recipe, manifest: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """Lint the finished image (read natively; libguestfs for what that cannot open) before it takes its
    final name; errors fail the build."""
    from imagekit.kernel.config import Target
    from imagekit.lint import Severity, lint_view
    from imagekit.lint.view import open_view

    hvm = recipe.layout.virtualization is Virtualization.HVM
    target, rules = (Target.HVM, "HVM") if hvm else (Target.PV, "PV-GRUB")
    with progress.stage("lint", f"{rules} and EC2 rules"), open_view(partial, warn=progress.warn) as view:
        findings = lint_view(view, target, recipe.arch.value, manifest)
    errors = [f for f in findings if f.severity is Severity.ERROR]
    for f in findings:
        if f.severity is not Severity.ERROR:
            progress.warn(f"lint {f.rule}: {f.object}: {f.message}")
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ImagekitError(f"lint {first.rule}: {first.object}: {first.message}{more}",
                            hint=f"{first.hint}; `imagekit build --no-lint` keeps such an image")
    return {"errors": 0, "warnings": len(findings),
            "findings": [{"rule": f.rule, "severity": f.severity.value, "object": f.object, "message": f.message}
                         for f in findings]}


def build_image(recipe: Recipe, output: Path, progress: Progress, *, lint: bool = True) -> BuildResult:
    started = time.monotonic()
    epoch = resolve_epoch(recipe)
    profile = load_profile(recipe.kernel.profile, recipe_path=recipe.path, kernels_dir=recipe.kernels_dir)
    if profile.arch != recipe.arch:
        raise RecipeError(recipe.path, "kernel.profile",
                          f"profile {profile.name} is for {profile.arch.value}, the recipe is {recipe.arch.value}")
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.is_dir():
        raise UsageError(f"--output: {output} is a directory")
    with ExitStack() as stack:
        # Entered first, so it sees an error last: a full host disk is reported with the free space
        # left once the work dir and the partial files below are gone.
        stack.enter_context(host_disk(f"building {output.name}", [output.parent], hint=DISK_HINT,
                                      measured=" once the partial build is removed"))
        workdir = Path(tempfile.mkdtemp(prefix=".imagekit-build-", dir=output.parent))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        partial = output.with_name(f".{output.name}.partial")
        stack.callback(partial.unlink, missing_ok=True)

        tree = prepare_rootfs(recipe, profile, workdir, progress)
        hvm = recipe.layout.virtualization is Virtualization.HVM
        with progress.stage("configure", f"kernel, {'grub.cfg' if hvm else 'menu.lst'}, fstab, hostname, files"):
            kernel, ids, menu, cmdline = configure_tree(recipe, profile, tree, epoch)
        boot_tree = split_boot(tree, workdir, nest_grub=not hvm) if recipe.separate_boot else None
        packages = installed_packages(tree)
        trees = split_mounts(recipe, tree, workdir)  # logical volumes and copy-initialised data volumes
        with progress.stage("size", "measure the tree against mke2fs"):
            root_usage = measure_tree(tree.path)
            boot_usage = measure_tree(boot_tree.path) if boot_tree else root_usage
            disk_size, placements = plan_layout(recipe, decide_size(recipe, root_usage, boot=boot_tree is None))
            for place in placements:
                is_boot = place.mountpoint == "/boot"
                check_fits(recipe, place, boot_usage if is_boot else root_usage, boot=is_boot or boot_tree is None)

        with progress.stage("image", f"{recipe.layout.value}, {disk_size >> 20} MiB"):
            if recipe.lvm is not None:  # /boot + LVM physical volume (imagekit/image/lvm.py)
                filesystems, placements = assemble_lvm(recipe, partial, disk_size, placements, tree, boot_tree,
                                                       trees, ids, workdir, epoch)
            else:
                filesystems = assemble(recipe, partial, disk_size, placements, tree, boot_tree, ids, workdir, epoch)
        firmware = plan_firmware(recipe)
        if hvm:
            with progress.stage("bootloader", f"GRUB 2 for {recipe.layout.boot_mode}"):
                install_bootloader(recipe, partial, firmware, boot_uuid=ids.boot_fs_uuid, esp_id=ids.esp_id,
                                   workdir=workdir, epoch=epoch, tree=tree.path)
            filesystems = [*esp_filesystem_records(recipe, firmware, ids.esp_id), *filesystems]  # partition order
        with progress.stage("check", "e2fsck -fn"):
            for place in placements:
                check_filesystem(place, partial)
        volume_images = []
        if recipe.volumes:
            with progress.stage("volumes", ", ".join(v.name for v in recipe.volumes)):
                volume_images = make_volume_images(recipe, output, trees, workdir, epoch, stack)
        pending = start_image_facts(partial)  # the block map runs beside the rest of the build
        shutil.rmtree(tree.path, ignore_errors=True)  # the staged tree is no longer needed
        manifest: dict[str, Any] = {
            "imagekit": __version__,
            "name": recipe.name,
            "recipe": {"path": str(recipe.path), "sha256": recipe.sha256},
            "arch": recipe.arch.value,
            "layout": recipe.layout.value,
            "virtualization": recipe.layout.virtualization.value,
            "boot_mode": recipe.layout.boot_mode.value if recipe.layout.boot_mode else None,
            "image": None,  # filled in when the digest is done
            "filesystems": filesystems,
            "kernel": kernel_record(recipe, profile, kernel),
            "initrd": {"path": boot_path(recipe, kernel.initrd)} if kernel.initrd else None,
            "cmdline": cmdline,
            "menu_lst": None if hvm else {"path": recipe.layout.spec.config, "text": menu},
            "fstab": fstab_text(recipe, ids),
            "source_date_epoch": epoch,
            "packages": packages,
        }
        if hvm:
            manifest["grub_cfg"] = {"path": recipe.layout.spec.config, "text": menu}
            manifest["partitions"] = partition_records(recipe, firmware, placements, ids.esp_id)
        manifest["data_volumes"] = volume_records(recipe, volume_images)
        manifest["lint"] = lint_built(partial, recipe, manifest, progress) if lint else None
        with progress.stage("manifest", "block map"):
            manifest["image"] = {**pending.result(), "path": output.name}
        manifest["timings"] = {**progress.timings, "total": round(time.monotonic() - started, 3)}
        # The manifest is written in full before the image takes its name, then renamed after it:
        # a full disk cannot leave a new image beside an old manifest (or none).
        staged_manifest = write_manifest(partial, manifest)
        stack.callback(staged_manifest.unlink, missing_ok=True)
        os.replace(partial, output)
        commit_volume_images(volume_images)
        path = manifest_path(output)
        os.replace(staged_manifest, path)
        return BuildResult(output, path, manifest)
    raise AssertionError("unreachable")


def kernel_record(recipe: Recipe, profile: KernelProfile, kernel: KernelInfo) -> dict[str, Any]:
    """The manifest's kernel: the file the boot entries boot, its format, and what it was made from."""
    return {"profile": profile.name, "version": kernel.version, "path": boot_path(recipe, kernel.kernel),
            "format": kernel.format, "pv_format": profile.pv_format,
            "original": boot_path(recipe, kernel.original) if kernel.original else None,
            "original_payload": kernel.payload, "xen_pv": profile.xen_pv}


def boot_path(recipe: Recipe, name: str) -> str:
    """A /boot file's path on the boot filesystem (what menu.lst names)."""
    return f"/{name}" if recipe.separate_boot else f"/boot/{name}"


def configure_tree(recipe: Recipe, profile: KernelProfile, tree: Tree,
                   epoch: int | None) -> tuple[KernelInfo, FsIds, str, str]:
    kernel = install_pv_kernel(tree, recipe, profile, install_kernel(tree, profile))
    check_entry_files(recipe, tree)
    ids = assign_ids(recipe, epoch)
    path, menu = boot_config(recipe, profile, kernel, ids)
    write_boot_config(tree, path, menu)
    write_fstab(tree, fstab_text(recipe, ids))
    make_esp_mountpoint(tree, recipe)
    configure_volumes(recipe, tree)  # logical and data volumes: fstab, service drop-ins
    write_identity(tree, recipe)
    copy_files(tree, recipe)
    return kernel, ids, menu, kernel_cmdline(recipe, profile, ids)


def assemble(recipe: Recipe, image: Path, disk_size: int, placements: list[Placement], tree: Tree,
             boot_tree: Tree | None, ids: FsIds, workdir: Path, epoch: int | None) -> list[dict[str, Any]]:
    with open(image, "wb") as f:
        f.truncate(disk_size)
    if recipe.layout.spec.partitioned and recipe.layout.spec.pv:  # PV-GRUB's MBR: no firmware partitions
        disk_id = int(ids.root_uuid.replace("-", "")[:8], 16) if epoch is not None else None
        write_mbr(image, placements, disk_id=disk_id)
    elif recipe.layout.spec.partitioned:
        derive = uuid.uuid5(UUID_NAMESPACE, ids.root_uuid) if epoch is not None else None
        write_table(recipe, image, plan_firmware(recipe), placements, derive=derive)
    records = []
    for place in placements:
        is_boot = place.mountpoint == "/boot"
        source = boot_tree if is_boot and boot_tree else tree
        fs_uuid = ids.boot_uuid if is_boot and ids.boot_uuid else ids.root_uuid
        seed = str(uuid.uuid5(UUID_NAMESPACE, fs_uuid)) if epoch is not None else None
        holds_boot = is_boot or boot_tree is None
        try:
            make_filesystem(place, image, source, fs_uuid, workdir, boot=holds_boot, hash_seed=seed, epoch=epoch)
        except TooSmall as exc:
            raise RecipeError(recipe.path, _fs_key(place), exc.message) from None
        if epoch is not None and place.fs.type in EXT:
            clamp_times(image, place.offset, source.path, epoch, workdir)
        records.append({"mountpoint": place.mountpoint, "type": place.fs.type.value, "label": place.fs.label,
                        "uuid": fs_uuid, "partition": place.partition, "offset": place.offset, "size": place.size,
                        "usage": filesystem_usage(image, place)})
    return records


__all__ = ["BuildResult", "ImagekitError", "build_image"]
