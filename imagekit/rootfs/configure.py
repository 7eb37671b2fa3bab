"""Stage 2b: make the staged tree an EC2 image: kernel in /boot, menu.lst or grub.cfg, fstab, hostname, files.

Everything here writes into the staging tree (never the host), through `Tree.run` when a command is
involved, so a rootless build records ownership in its fakeroot state. Files are written fresh
(never in place), so a cache the tree was unpacked from is never touched.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

from imagekit.bootloader.grub2 import render_grub_cfg
from imagekit.bootloader.menulst import Entry, render_menu_lst
from imagekit.recipe.arch import ARCHES
from imagekit.recipe.kernel_profiles import KernelProfile, host_files, kernel_version
from imagekit.recipe.layouts import Bootloader
from imagekit.recipe.model import VIRTUAL_DIRS, Recipe
from imagekit.rootfs.bootstrap import Tree
from imagekit.rootfs.tree_paths import (
    TreePathError,
    copy_into_tree,
    image_path,
    is_file_in_tree,
    make_directory_in_tree,
    read_bytes_in_tree,
    read_in_tree,
    resolve_in_tree,
    write_in_tree,
)
from imagekit.util.errors import RecipeError, UsageError

KERNEL_VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}")


@dataclass(frozen=True)
class KernelInfo:
    version: str
    kernel: str  # file name in /boot: what the boot entries boot
    initrd: str | None  # file name in /boot
    format: str = "bzimage"  # of `kernel`: bzimage, vmlinux-gz, vmlinux (imagekit/kernel/pvsafe.py)
    original: str | None = None  # the installed kernel `kernel` was made from (PV-safe kernels), in /boot
    payload: str | None = None  # the compression of the original's payload, when it was converted


@dataclass(frozen=True)
class FsIds:
    """Identities decided before mkfs, so fstab and root= can name them."""

    root_uuid: str
    boot_uuid: str | None
    esp_id: str | None = None  # FAT volume id of the ESP, as blkid shows it: 1A2B-3C4D

    @property
    def boot_fs_uuid(self) -> str:
        """The filesystem GRUB reads grub.cfg and the kernel from."""
        return self.boot_uuid or self.root_uuid


def write_file(tree: Tree, path: str, text: str, mode: int = 0o644) -> None:
    """Replace the image's `path` with new content (a new inode, resolved inside the tree: tree_paths)."""
    write_in_tree(tree.path, path, text.encode(), mode)


def write_fstab(tree: Tree, text: str) -> None:
    write_file(tree, "/etc/fstab", text)


def install_kernel(tree: Tree, profile: KernelProfile) -> KernelInfo:
    """Put the profile's kernel (and initrd) in /boot; return what is there."""
    boot = make_directory_in_tree(tree.path, "/boot")
    if profile.files is not None:
        kernel, initrd = host_files(profile)
        for src in (kernel, initrd):
            if src is not None:
                copy_into_tree(tree.path, f"/boot/{src.name}", src, 0o644)
    kernels = sorted(p.name for p in boot.glob("vmlinu[xz]-*"))
    if not kernels:
        raise UsageError(f"kernel profile {profile.name}: no kernel in the rootfs's /boot after install",
                         hint="does the profile's package install a kernel for this architecture?")
    name = kernels[-1]
    version = kernel_version(name)
    if not KERNEL_VERSION_RE.fullmatch(version):  # it lands in menu.lst, grub.cfg and the boot titles
        raise UsageError(f"kernel profile {profile.name}: /boot/{name!r} is not a kernel file name like "
                         "vmlinuz-6.1.0-28-cloud-amd64")
    initrd_name = None
    if profile.initrd != "none":
        candidates = [f"initrd.img-{version}", f"initramfs-{version}.img", f"initrd-{version}"]
        if profile.files and profile.files.initrd:
            candidates.insert(0, Path(profile.files.initrd.replace("{version}", version)).name)
        initrd_name = next((c for c in candidates if is_file_in_tree(tree.path, f"/boot/{c}")), None)
        if initrd_name is None:
            raise UsageError(f"kernel profile {profile.name}: no initrd for {version} in /boot "
                             f"(initrd = {profile.initrd!r})", hint="set initrd = \"none\" for a static kernel")
    return KernelInfo(version, name, initrd_name)


def install_pv_kernel(tree: Tree, recipe: Recipe, profile: KernelProfile, kernel: KernelInfo) -> KernelInfo:
    """PV layouts: the kernel file menu.lst should boot, per the profile's pv_format (imagekit/kernel/pvsafe.py);
    a converted kernel goes beside the original, which HVM layouts of the same rootfs keep booting."""
    from imagekit.kernel.pvsafe import cached_pv_safe_kernel, file_format, needs_conversion, pv_kernel_name

    data = read_bytes_in_tree(tree.path, f"/boot/{kernel.kernel}")
    if data is None:
        raise UsageError(f"kernel profile {profile.name}: /boot/{kernel.kernel} is not a file")
    found = file_format(data)
    kernel = replace(kernel, format=str(found) if found else "unknown")
    if recipe.layout.spec.bootloader is not Bootloader.PVGRUB:
        return kernel
    if not needs_conversion(data, profile.pv_format, f"/boot/{kernel.kernel}"):
        return kernel
    converted, payload = cached_pv_safe_kernel(data, f"/boot/{kernel.kernel}")
    name = pv_kernel_name(kernel.version)
    write_in_tree(tree.path, f"/boot/{name}", converted, 0o644)
    write_pv_kernel_hooks(tree, recipe)
    return replace(kernel, kernel=name, format="vmlinux-gz", original=kernel.kernel,
                   payload=str(payload) if payload else None)


PV_HOOK = "zz-imagekit-pv-kernel"


def pv_kernel_hook(action: str, recipe: Recipe) -> str:
    """The POSIX sh kernel hook (postinst or postrm) that keeps a later kernel PV-safe on the instance."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("imagekit", "templates"), keep_trailing_newline=True,
                             autoescape=False, undefined=jinja2.StrictUndefined)
    running_menu = "/boot/boot/grub/menu.lst" if recipe.separate_boot else "/boot/grub/menu.lst"
    prefix = "" if recipe.separate_boot else "/boot"
    return env.get_template("pv-kernel-hook.sh.j2").render(action=action, prefix=prefix, menu=running_menu)


def write_pv_kernel_hooks(tree: Tree, recipe: Recipe) -> None:
    """/etc/kernel/postinst.d and postrm.d: Debian's kernel packages run these with VERSION and IMAGE."""
    for action in ("postinst", "postrm"):
        write_file(tree, f"/etc/kernel/{action}.d/{PV_HOOK}", pv_kernel_hook(action, recipe), 0o755)


def root_spec(recipe: Recipe, ids: FsIds) -> str:
    """How root= and fstab name the root filesystem: LABEL=, UUID= or a device the recipe insists on."""
    how = recipe.kernel.root
    if how == "label":
        return f"LABEL={recipe.filesystems.root.label}"
    if how == "uuid":
        return f"UUID={ids.root_uuid}"
    return how


def kernel_cmdline(recipe: Recipe, profile: KernelProfile, ids: FsIds) -> str:
    """root=, the profile's command line for the layout's virtualization (hvc0 or ttyS0), the recipe's."""
    profile_words = profile.cmdline_for(recipe.layout.virtualization).split()
    words = [f"root={root_spec(recipe, ids)}", *profile_words, *recipe.kernel.cmdline.split()]
    return " ".join(words)


def boot_entries(recipe: Recipe, profile: KernelProfile, kernel: KernelInfo, ids: FsIds) -> list[Entry]:
    """The recipe's boot entries, paths relative to the boot filesystem (menu.lst and grub.cfg alike)."""
    prefix = "" if recipe.separate_boot else "/boot"
    cmdline = kernel_cmdline(recipe, profile, ids)
    entries = []
    for n, e in enumerate(recipe.boot.entries):
        title = e.title.format(name=recipe.name, kernel_version=kernel.version)
        kfile = e.kernel or kernel.kernel
        ifile = e.initrd or kernel.initrd
        for key, value in (("kernel", kfile), ("initrd", ifile)):
            if value and "/" in value:
                raise RecipeError(recipe.path, f"boot.entries.{n}.{key}", f"{value!r}: give a file name in /boot")
        args = " ".join(x for x in (cmdline, e.args) if x)
        entries.append(Entry(title, kernel=f"{prefix}/{kfile}", kernel_args=args,
                             initrd=f"{prefix}/{ifile}" if ifile else None))
    return entries


def menu_lst_text(recipe: Recipe, profile: KernelProfile, kernel: KernelInfo, ids: FsIds) -> str:
    """menu.lst for the recipe's boot entries, paths relative to the boot filesystem."""
    aki = recipe.layout.spec.aki
    assert aki is not None, "menu.lst is PV-GRUB's: a PV layout"
    root_device = aki.legacy_root
    return render_menu_lst(boot_entries(recipe, profile, kernel, ids), root_device=root_device,
                           default=recipe.boot.default, fallback=recipe.boot.fallback, timeout=recipe.boot.timeout)


def grub_cfg_text(recipe: Recipe, profile: KernelProfile, kernel: KernelInfo, ids: FsIds) -> str:
    """grub.cfg (HVM): the same entries, default, fallback and timeout as menu.lst would have."""
    mode = recipe.layout.boot_mode
    assert mode is not None
    return render_grub_cfg(boot_entries(recipe, profile, kernel, ids), boot_uuid=ids.boot_fs_uuid,
                           boot_mode=mode.value, default=recipe.boot.default, fallback=recipe.boot.fallback,
                           timeout=recipe.boot.timeout, serial=ARCHES[recipe.arch].grub_serial)


def boot_config(recipe: Recipe, profile: KernelProfile, kernel: KernelInfo, ids: FsIds) -> tuple[str, str]:
    """(path in the tree, text): PV-GRUB's menu.lst, or GRUB 2's grub.cfg for an HVM layout."""
    spec = recipe.layout.spec
    if spec.bootloader is Bootloader.GRUB2:
        return spec.config, grub_cfg_text(recipe, profile, kernel, ids)
    return spec.config, menu_lst_text(recipe, profile, kernel, ids)


def check_entry_files(recipe: Recipe, tree: Tree) -> None:
    for n, e in enumerate(recipe.boot.entries):
        for key, value in (("kernel", e.kernel), ("initrd", e.initrd)):
            if value and not is_file_in_tree(tree.path, f"/boot/{value}"):
                raise RecipeError(recipe.path, f"boot.entries.{n}.{key}", f"no file /boot/{value} in the rootfs")


# The ESP as Debian's installer and Ubuntu's cloud images mount it: umask=0077 (root's alone), fsck pass 1
# as Debian's installer writes it (systemd-fsck skips a vfat check when dosfstools is not installed).
# No `nofail`: the ESP is on the root disk, there whenever / is; if it cannot be mounted, that should show.
ESP_MOUNTPOINT = "/boot/efi"
ESP_OPTIONS = "umask=0077"


def fstab_text(recipe: Recipe, ids: FsIds) -> str:
    root = recipe.filesystems.root
    passno_root = 0 if root.type.value in ("xfs", "btrfs") else 1
    lines = [
        "# /etc/fstab: written by imagekit. Filesystems by LABEL/UUID: EC2 names devices sda1 or xvda1.",
        f"{root_spec(recipe, ids)}\t/\t{root.type.value}\tdefaults\t0\t{passno_root}",
    ]
    boot = recipe.filesystems.boot
    if boot is not None:
        spec = f"UUID={ids.boot_uuid}" if recipe.kernel.root == "uuid" else f"LABEL={boot.label}"
        passno = 0 if boot.type.value in ("xfs", "btrfs") else 2
        lines.append(f"{spec}\t/boot\t{boot.type.value}\tdefaults\t0\t{passno}")
    esp = recipe.esp
    if esp is not None:
        assert ids.esp_id is not None
        spec = f"UUID={ids.esp_id}" if recipe.kernel.root == "uuid" else f"LABEL={esp.label}"
        lines.append(f"{spec}\t{ESP_MOUNTPOINT}\tvfat\t{ESP_OPTIONS}\t0\t1")
    return "\n".join(lines) + "\n"


def make_esp_mountpoint(tree: Tree, recipe: Recipe) -> None:
    """/boot/efi, where fstab mounts the ESP (on the /boot filesystem once split_boot moves /boot)."""
    if recipe.esp is not None:
        os.chmod(make_directory_in_tree(tree.path, ESP_MOUNTPOINT), 0o755)


def write_identity(tree: Tree, recipe: Recipe) -> None:
    write_file(tree, "/etc/hostname", recipe.hostname + "\n")
    write_file(tree, "/etc/hosts",
           f"127.0.0.1\tlocalhost\n127.0.1.1\t{recipe.hostname}\n"
           "::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n")


SSH_DIR = "/etc/ssh"
SSH_HOST_KEY = re.compile(r"^ssh_host_[A-Za-z0-9]+_key(\.pub)?$")
SSH_KEYS_UNIT = "ssh-host-keys.service"
SSH_KEYS_UNIT_TEXT = """\
# Written by imagekit: the image ships no SSH host keys (each instance must have its own; AWS's guidelines
# for shared AMIs), so the first boot makes them, before sshd starts. cloud-init, where installed, makes
# them first (its ssh module); this unit then finds them and does nothing.
[Unit]
Description=Generate this instance's SSH host keys
Documentation=man:ssh-keygen(1)
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key
After=cloud-init.service
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
"""


def remove_ssh_host_keys(tree: Tree) -> list[str]:
    """The SSH host keys the bootstrap made (openssh-server's postinst) out of the image, and, where sshd is
    installed, a unit that makes each instance's own at its first boot (`ssh-keygen -A`, before ssh.service).
    Kept, every image built from one cached bootstrap and every instance launched from it would share one
    host identity, and whoever has the image would hold the private keys. Returns the names removed."""
    try:
        ssh = resolve_in_tree(tree.path, SSH_DIR)
    except TreePathError:
        return []
    removed = sorted(n for n in (os.listdir(ssh) if ssh.is_dir() else []) if SSH_HOST_KEY.match(n))
    for name in removed:
        os.unlink(ssh / name)  # a staged hard link: the cached bootstrap keeps its own
    if is_file_in_tree(tree.path, "/usr/sbin/sshd"):
        write_file(tree, f"/etc/systemd/system/{SSH_KEYS_UNIT}", SSH_KEYS_UNIT_TEXT)
        wants = make_directory_in_tree(tree.path, "/etc/systemd/system/multi-user.target.wants")
        link = wants / SSH_KEYS_UNIT
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(f"/etc/systemd/system/{SSH_KEYS_UNIT}", link)
    return removed


def copy_files(tree: Tree, recipe: Recipe) -> None:
    for n, f in enumerate(recipe.files):
        key = f"files.{n}.dest"
        src = f.src if f.src.is_absolute() else recipe.directory / f.src
        if not src.is_file():
            raise RecipeError(recipe.path, f"files.{n}.src", f"no such file: {src}")
        if not os.access(src, os.R_OK):
            raise RecipeError(recipe.path, f"files.{n}.src", f"cannot read {src}: permission denied")
        mode = int(f.mode, 8) if f.mode else (src.stat().st_mode & 0o7777)
        try:
            resolved = image_path(tree.path, resolve_in_tree(tree.path, f.dest, follow_final=False))
            if resolved.split("/")[1] in VIRTUAL_DIRS:  # through a symlink: the loader refuses the plain path
                raise RecipeError(recipe.path, key, f"{f.dest} is {resolved} in the image, where the kernel "
                                  "mounts a virtual filesystem at boot (nothing written there is seen)")
            copy_into_tree(tree.path, f.dest, src, mode)
        except TreePathError as exc:
            raise RecipeError(recipe.path, key, f"{f.dest}: {exc.reason}") from None


def write_menu_lst(tree: Tree, text: str) -> str:
    """menu.lst where PV-GRUB looks: /boot/grub/menu.lst of the tree (see split_boot for /boot partitions)."""
    write_file(tree, "/boot/grub/menu.lst", text)
    return "/boot/grub/menu.lst"


def write_boot_config(tree: Tree, path: str, text: str) -> None:
    write_file(tree, path, text)


def split_boot(tree: Tree, workdir: Path, *, nest_grub: bool = True) -> Tree:
    """Move /boot into a tree of its own for a /boot partition.

    PV (nest_grub), seed 002: PV-GRUB looks for /boot/grub/menu.lst on the first partition; with that
    partition mounted at /boot the file is /boot/boot/grub/menu.lst in the running system. HVM: GRUB 2
    is told where grub.cfg is (grub/grub.cfg on the boot filesystem, /boot/grub/grub.cfg when running).
    """
    boot_tree = workdir / "boot"
    boot = make_directory_in_tree(tree.path, "/boot")  # a /boot symlink is followed inside the tree
    os.replace(boot, boot_tree)
    boot.mkdir()
    if nest_grub:
        grub = make_directory_in_tree(boot_tree, "/grub")
        os.replace(grub, make_directory_in_tree(boot_tree, "/boot") / "grub")
    return Tree(boot_tree, tree.fakeroot_state)


def tree_usage(path: Path) -> tuple[int, int]:
    """(bytes in 4 KiB blocks, inodes) that a tree needs."""
    blocks = inodes = 0
    for root, dirs, files in os.walk(path):
        inodes += len(dirs) + len(files)
        blocks += len(dirs)
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            blocks += -(-st.st_size // 4096)
    return blocks * 4096, inodes + 1


_PKG_RE = re.compile(r"^Package: (.+)$|^Version: (.+)$|^Status: (.+)$", re.M)


def installed_packages(tree: Tree) -> list[dict[str, str]]:
    """The dpkg database of the tree: [{"name", "version"}] of installed packages."""
    status = read_in_tree(tree.path, "/var/lib/dpkg/status")
    if status is None:
        return []
    out = []
    for para in status.split("\n\n"):
        fields = dict(re.findall(r"^(Package|Version|Status): (.+)$", para, re.M))
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            out.append({"name": fields["Package"], "version": fields.get("Version", "")})
    return sorted(out, key=lambda p: p["name"])
