"""The build pipeline: recipe -> rootfs -> configured tree -> image -> checks -> manifest.

`build_image` reads top to bottom like the recipe: a list of `verb_noun(ctx)` steps on one
`BuildContext` (imagekit/image/context.py), each returning early when it does not apply. It writes the
image under a temporary name beside the output and renames it only when complete; an interruption
(Ctrl-C included) removes the partial image and the staging area, and leaves any previous output untouched.
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

from imagekit import __version__
from imagekit.image.context import BuildContext, fill_filesystem
from imagekit.image.filesystem import EXT, check_filesystem, mke2fs_argv, mke2fs_env
from imagekit.image.firmware import esp_filesystem_records, install_bootloader, partition_records, write_table
from imagekit.image.layout import Placement, align_up, boot_overhead, plan_layout
from imagekit.image.lvm import assemble_lvm
from imagekit.image.partition import write_mbr
from imagekit.image.sizing import BLOCK, TreeUsage, fits, measure_tree, probe, read_superblock, smallest_size
from imagekit.manifest import (
    DataVolumeRecord,
    FilesystemRecord,
    KernelRecord,
    LintFinding,
    LintRecord,
    Manifest,
    Package,
    PartitionRecord,
    PathRecord,
    RecipeRef,
    TextRecord,
    manifest_path,
    start_image_facts,
    write_manifest,
)
from imagekit.recipe.kernel_profiles import KernelProfile, load_profile
from imagekit.recipe.model import GiB, MiB, Recipe
from imagekit.rootfs.bootstrap import prepare_rootfs
from imagekit.rootfs.configure import (
    FsIds,
    boot_config,
    check_entry_files,
    copy_files,
    fstab_text,
    install_kernel,
    install_pv_kernel,
    installed_packages,
    kernel_cmdline,
    make_esp_mountpoint,
    remove_ssh_host_keys,
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
from imagekit.util.reproducible import UUID_NAMESPACE, resolve_epoch

DISK_HINT = "free space there or build elsewhere (-o; the work dir sits beside the image); the recipe's size is fine"


@dataclass(frozen=True)
class BuildResult:
    image: Path
    manifest_path: Path
    manifest: Manifest


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


def lint_built(ctx: BuildContext, manifest: Manifest) -> LintRecord:
    """Lint the finished image (read natively; libguestfs for what that cannot open) before it takes its
    final name; errors fail the build."""
    from imagekit.kernel.config import Target
    from imagekit.lint import Severity, lint_view
    from imagekit.lint.view import open_view

    target, rules = (Target.HVM, "HVM") if ctx.hvm else (Target.PV, "PV-GRUB")
    progress = ctx.progress
    with progress.stage("lint", f"{rules} and EC2 rules") as stage, \
            open_view(ctx.partial, warn=progress.warn) as view:
        findings = lint_view(view, target, ctx.recipe.arch.value, manifest, stage=stage)  # the row counts checks
    errors = [f for f in findings if f.severity is Severity.ERROR]
    for f in findings:
        if f.severity is not Severity.ERROR:
            progress.warn(f"lint {f.rule}: {f.object}: {f.message}")
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ImagekitError(f"lint {first.rule}: {first.object}: {first.message}{more}",
                            hint=f"{first.hint}; `imagekit build --no-lint` keeps such an image")
    return LintRecord(errors=0, warnings=len(findings),
                      findings=[LintFinding(rule=f.rule, severity=f.severity.value, object=f.object, message=f.message)
                                for f in findings])


def build_image(recipe: Recipe, output: Path, progress: Progress, *, lint: bool = True) -> BuildResult:
    started = time.monotonic()
    epoch = resolve_epoch(recipe)
    profile = load_checked_profile(recipe)
    check_output_path(output)
    with ExitStack() as stack:
        ctx = start_build(recipe, profile, output, progress, stack, epoch)
        configure_rootfs(ctx)
        split_boot_tree(ctx)
        read_packages(ctx)
        split_mount_trees(ctx)
        plan_disk(ctx)
        with progress.stage("image", f"{recipe.layout.value}, {ctx.disk_size >> 20} MiB"):
            make_lvm_disk(ctx)
            make_partitioned_disk(ctx)
        install_firmware(ctx)
        check_filesystems(ctx)
        make_data_volumes(ctx)
        pending = start_image_facts(ctx.partial)  # the block map runs beside the rest of the build
        shutil.rmtree(ctx.tree.path, ignore_errors=True)  # the staged tree is no longer needed
        manifest = describe_build(ctx)
        manifest = manifest.model_copy(update={"lint": lint_built(ctx, manifest) if lint else None})
        with progress.stage("manifest", "block map"):
            image = pending.result().model_copy(update={"path": output.name})
        timings = {**progress.timings, "total": round(time.monotonic() - started, 3)}
        return commit_build(ctx, manifest.model_copy(update={"image": image, "timings": timings}))
    raise AssertionError("unreachable")


def load_checked_profile(recipe: Recipe) -> KernelProfile:
    profile = load_profile(recipe.kernel.profile, recipe_path=recipe.path, kernels_dir=recipe.kernels_dir)
    if profile.arch != recipe.arch:
        raise RecipeError(recipe.path, "kernel.profile",
                          f"profile {profile.name} is for {profile.arch.value}, the recipe is {recipe.arch.value}")
    return profile


def check_output_path(output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.is_dir():
        raise UsageError(f"--output: {output} is a directory")


def start_build(recipe: Recipe, profile: KernelProfile, output: Path, progress: Progress, stack: ExitStack,
                epoch: int | None) -> BuildContext:
    """The work dir and the partial image, owned by `stack`, and the bootstrapped root tree in it."""
    # Entered first, so it sees an error last: a full host disk is reported with the free space
    # left once the work dir and the partial files below are gone.
    stack.enter_context(host_disk(f"building {output.name}", [output.parent], hint=DISK_HINT,
                                  measured=" once the partial build is removed"))
    workdir = Path(tempfile.mkdtemp(prefix=".imagekit-build-", dir=output.parent))
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    stack.callback(output.with_name(f".{output.name}.partial").unlink, missing_ok=True)
    tree = prepare_rootfs(recipe, profile, workdir, progress)
    return BuildContext(recipe, profile, output, workdir, progress, stack, epoch, assign_ids(recipe, epoch), tree)


def configure_rootfs(ctx: BuildContext) -> None:
    """Kernel (PV-safe for PV layouts), menu.lst or grub.cfg, fstab, volumes, hostname, files."""
    recipe, profile, tree, ids = ctx.recipe, ctx.profile, ctx.tree, ctx.ids
    with ctx.progress.stage("configure", f"kernel, {'grub.cfg' if ctx.hvm else 'menu.lst'}, fstab, hostname, "
                                           "SSH host keys, files"):
        ctx.kernel = install_pv_kernel(tree, recipe, profile, install_kernel(tree, profile))
        check_entry_files(recipe, tree)
        path, ctx.menu = boot_config(recipe, profile, ctx.kernel, ids)
        write_boot_config(tree, path, ctx.menu)
        write_fstab(tree, fstab_text(recipe, ids))
        make_esp_mountpoint(tree, recipe)
        configure_volumes(recipe, tree)  # logical and data volumes: fstab, service drop-ins
        write_identity(tree, recipe)
        remove_ssh_host_keys(tree)  # the bootstrap's: each instance makes its own at first boot
        copy_files(tree, recipe)
        ctx.cmdline = kernel_cmdline(recipe, profile, ids)


def split_boot_tree(ctx: BuildContext) -> None:
    """A /boot partition gets /boot as a tree of its own."""
    if not ctx.recipe.separate_boot:
        return
    ctx.boot_tree = split_boot(ctx.tree, ctx.workdir, nest_grub=not ctx.hvm)


def read_packages(ctx: BuildContext) -> None:
    """The dpkg database, read before split_mount_trees can move /var into a logical volume's tree."""
    ctx.packages = installed_packages(ctx.tree)


def split_mount_trees(ctx: BuildContext) -> None:
    """Logical volumes and copy-initialised data volumes get their mount point's files as trees of their own."""
    ctx.trees = split_mounts(ctx.recipe, ctx.tree, ctx.workdir)


def plan_disk(ctx: BuildContext) -> None:
    """The disk's size and placements, and each tree checked to fit its filesystem before anything is written."""
    recipe, boot_tree = ctx.recipe, ctx.boot_tree
    with ctx.progress.stage("size", "measure the tree against mke2fs"):
        root_usage = measure_tree(ctx.tree.path)
        boot_usage = measure_tree(boot_tree.path) if boot_tree else root_usage
        ctx.disk_size, ctx.placements = plan_layout(recipe, decide_size(recipe, root_usage, boot=boot_tree is None))
        for place in ctx.placements:
            is_boot = place.mountpoint == "/boot"
            check_fits(recipe, place, boot_usage if is_boot else root_usage, boot=is_boot or boot_tree is None)


def make_lvm_disk(ctx: BuildContext) -> None:
    """/boot + an LVM physical volume (imagekit/image/lvm.py)."""
    if ctx.recipe.lvm is None:
        return
    ctx.filesystems, ctx.placements = assemble_lvm(ctx)


def make_partitioned_disk(ctx: BuildContext) -> None:
    """The partition table (hd00: MBR; HVM: the layout's), then each placement's filesystem."""
    if ctx.recipe.lvm is not None:
        return
    recipe, image, ids = ctx.recipe, ctx.partial, ctx.ids
    with open(image, "wb") as f:
        f.truncate(ctx.disk_size)
    if recipe.layout.spec.partitioned and recipe.layout.spec.pv:  # PV-GRUB's MBR: no firmware partitions
        disk_id = int(ids.root_uuid.replace("-", "")[:8], 16) if ctx.reproducible else None
        write_mbr(image, ctx.placements, disk_id=disk_id)
    elif recipe.layout.spec.partitioned:
        write_table(recipe, image, ctx.firmware, ctx.placements, derive=ctx.derive(ids.root_uuid))
    for place in ctx.placements:
        is_boot = place.mountpoint == "/boot"
        source = ctx.boot_tree if is_boot and ctx.boot_tree else ctx.tree
        fs_uuid = ids.boot_uuid if is_boot and ids.boot_uuid else ids.root_uuid
        fill_filesystem(ctx, place, source, fs_uuid, key=_fs_key(place), holds_boot=is_boot or ctx.boot_tree is None)
        ctx.filesystems.append(FilesystemRecord(
            mountpoint=place.mountpoint, type=place.fs.type.value, label=place.fs.label, uuid=fs_uuid,
            partition=place.partition, offset=place.offset, size=place.size, usage=filesystem_usage(image, place)))


def install_firmware(ctx: BuildContext) -> None:
    """HVM: GRUB 2 for the layout's firmware (the ESP's filesystem goes first in the records: partition order)."""
    if not ctx.hvm:
        return
    with ctx.progress.stage("bootloader", f"GRUB 2 for {ctx.recipe.layout.boot_mode}"):
        install_bootloader(ctx)
    esp = [FilesystemRecord.model_validate(r) for r in esp_filesystem_records(ctx.recipe, ctx.firmware, ctx.ids.esp_id)]
    ctx.filesystems = [*esp, *ctx.filesystems]


def check_filesystems(ctx: BuildContext) -> None:
    with ctx.progress.stage("check", "e2fsck -fn"):
        for place in ctx.placements:
            check_filesystem(place, ctx.partial)


def make_data_volumes(ctx: BuildContext) -> None:
    """Each data volume with an image as `<image>.<name>.img` (imagekit/rootfs/volumes.py)."""
    if not ctx.recipe.volumes:
        return
    with ctx.progress.stage("volumes", ", ".join(v.name for v in ctx.recipe.volumes)):
        ctx.volume_images = make_volume_images(ctx.recipe, ctx.output, ctx.trees, ctx.workdir, ctx.epoch, ctx.stack)


def describe_build(ctx: BuildContext) -> Manifest:
    """The manifest of what went in; `image`, `lint` and `timings` are added when they are known."""
    recipe, kernel, ids = ctx.recipe, ctx.kernel, ctx.ids
    assert kernel is not None
    manifest = Manifest(
        imagekit=__version__,
        name=recipe.name,
        recipe=RecipeRef(path=str(recipe.path), sha256=recipe.sha256),
        arch=recipe.arch.value,
        layout=recipe.layout,
        virtualization=recipe.layout.virtualization,
        boot_mode=recipe.layout.boot_mode,
        image=None,  # filled in when the digest is done
        filesystems=ctx.filesystems,
        kernel=kernel_record(ctx),
        initrd=PathRecord(path=boot_path(recipe, kernel.initrd)) if kernel.initrd else None,
        cmdline=ctx.cmdline,
        menu_lst=None if ctx.hvm else TextRecord(path=recipe.layout.spec.config, text=ctx.menu),
        fstab=fstab_text(recipe, ids),
        source_date_epoch=ctx.epoch,
        packages=[Package(**p) for p in ctx.packages],
        data_volumes=[DataVolumeRecord(**r) for r in volume_records(recipe, ctx.volume_images)],
    )
    if not ctx.hvm:
        return manifest
    partitions = partition_records(recipe, ctx.firmware, ctx.placements, ids.esp_id)
    return manifest.model_copy(update={"grub_cfg": TextRecord(path=ctx.recipe.layout.spec.config, text=ctx.menu),
                                       "partitions": [PartitionRecord.model_validate(r) for r in partitions]})


def commit_build(ctx: BuildContext, manifest: Manifest) -> BuildResult:
    """The manifest is written in full before the image takes its name, then renamed after it: a full
    disk cannot leave a new image beside an old manifest (or none)."""
    staged_manifest = write_manifest(ctx.partial, manifest)
    ctx.stack.callback(staged_manifest.unlink, missing_ok=True)
    linted = ctx.partial.stat()
    os.replace(ctx.partial, ctx.output)
    carry_lint_cache(linted, ctx.output)
    commit_volume_images(ctx.volume_images)
    path = manifest_path(ctx.output)
    os.replace(staged_manifest, path)
    return BuildResult(ctx.output, path, manifest)


def carry_lint_cache(linted: os.stat_result, output: Path) -> None:
    """The build's lint verdict (of the partial file) serves `imagekit lint OUTPUT`: the rename changed only
    the file's ctime (imagekit/lint/pvgrub_cache.py)."""
    from imagekit.lint.pvgrub_cache import carry

    carry(linted, output)


def kernel_record(ctx: BuildContext) -> KernelRecord:
    """The manifest's kernel: the file the boot entries boot, its format, and what it was made from."""
    recipe, profile, kernel = ctx.recipe, ctx.profile, ctx.kernel
    assert kernel is not None
    return KernelRecord(profile=profile.name, version=kernel.version, path=boot_path(recipe, kernel.kernel),
                        format=kernel.format, pv_format=profile.pv_format,
                        original=boot_path(recipe, kernel.original) if kernel.original else None,
                        original_payload=kernel.payload, xen_pv=profile.xen_pv)


def boot_path(recipe: Recipe, name: str) -> str:
    """A /boot file's path on the boot filesystem (what menu.lst names)."""
    return f"/{name}" if recipe.separate_boot else f"/boot/{name}"


__all__ = ["BuildResult", "ImagekitError", "build_image"]
