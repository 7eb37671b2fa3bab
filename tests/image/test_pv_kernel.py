"""PV-safe kernels (issue 14 item 1): the configure stage of a PV build installs the gzipped ELF vmlinux of the
host's LZ4 bzImage and boots it; the image's kernel hooks, run on the staged tree (IMAGEKIT_ROOT), convert a
later kernel the same way and rewrite menu.lst, which GRUB 0.97 then boots."""

from __future__ import annotations

import glob
import gzip
import os
import shutil
import subprocess
from contextlib import ExitStack
from pathlib import Path

import pytest

from imagekit.boot.pvgrub import Variant
from imagekit.boot.pvgrub097 import plan
from imagekit.build import assign_ids, configure_rootfs
from imagekit.image.context import BuildContext
from imagekit.kernel.bzimage import load_vmlinux
from imagekit.kernel.xenload import xen_load
from imagekit.recipe.kernel_profiles import load_profile
from imagekit.recipe.load import load_recipe
from imagekit.rootfs.bootstrap import Tree
from imagekit.rootfs.configure import KernelInfo
from imagekit.util.errors import RecipeError
from imagekit.util.progress import Progress
from tests.util import REPO, SMALL_RECIPE, make_small_tree, menu_lst

HOST_KERNELS = sorted(glob.glob("/boot/vmlinuz-*-cloud-amd64"))
pytestmark = pytest.mark.skipif(not HOST_KERNELS, reason="no /boot/vmlinuz-*-cloud-amd64 on this host")
NEW = "6.1.0-99-cloud-amd64"  # the "later" kernel: the host's, under another version
HOOKS = ("/etc/kernel/postinst.d/zz-imagekit-pv-kernel", "/etc/kernel/postrm.d/zz-imagekit-pv-kernel")


def staged(tmp_path: Path, layout: str = "hd0", extra: str = "") -> tuple[Tree, KernelInfo, str]:
    """A small tree configured as a build configures it (host-cloud-amd64: the host's LZ4 bzImage)."""
    make_small_tree(tmp_path / "tree")
    recipe_path = tmp_path / "pv.toml"
    recipe_path.write_text(SMALL_RECIPE.format(name="pv", layout=layout, size="2G", extra=extra))
    recipe = load_recipe(recipe_path)
    profile = load_profile(recipe.kernel.profile, recipe_path=recipe_path)
    tree = Tree(tmp_path / "tree")
    with ExitStack() as stack:
        ctx = BuildContext(recipe, profile, tmp_path / "pv.img", tmp_path, Progress("quiet"), stack, None,
                           assign_ids(recipe, None), tree)
        configure_rootfs(ctx)
    assert ctx.kernel is not None
    return tree, ctx.kernel, ctx.menu


def hook(tree: Tree, action: str, version: str, path: str | None = None,
         params: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the hook as run-parts does (`params`: DEB_MAINT_PARAMS, the kernel package script's arguments)."""
    script = tree.path / f"etc/kernel/{action}.d/zz-imagekit-pv-kernel"
    env = {**os.environ, "IMAGEKIT_ROOT": str(tree.path), **({"DEB_MAINT_PARAMS": params} if params else {})}
    mawk = shutil.which("mawk")  # a minimal Debian's awk (the host's may be gawk)
    if mawk:
        shim = tree.path.parent / "mawk-as-awk"
        shim.mkdir(exist_ok=True)
        if not (shim / "awk").exists():
            (shim / "awk").symlink_to(mawk)
        env["PATH"] = f"{shim}:{env['PATH']}"
    return subprocess.run(["sh", str(script), version, f"/boot/vmlinuz-{version}" if path is None else path],
                          env=env, capture_output=True, text=True)


def add_kernel(tree: Tree, version: str = NEW) -> None:
    """What apt would leave in /boot before run-parts calls the hooks (initramfs-tools' hook runs first)."""
    shutil.copy(HOST_KERNELS[-1], tree.path / f"boot/vmlinuz-{version}")
    shutil.copy(HOST_KERNELS[-1].replace("vmlinuz", "initrd.img"), tree.path / f"boot/initrd.img-{version}")


def test_pv_build_boots_a_gzipped_vmlinux_beside_the_bzimage(tmp_path: Path) -> None:
    tree, kernel, menu = staged(tmp_path)
    original = Path(HOST_KERNELS[-1]).name
    version = original.removeprefix("vmlinuz-")
    assert (kernel.kernel, kernel.format, kernel.original, kernel.payload) == \
        (f"pvgrub-vmlinux-{version}.gz", "vmlinux-gz", original, "lz4")
    assert (tree.path / "boot" / original).read_bytes() == Path(HOST_KERNELS[-1]).read_bytes()
    data = (tree.path / "boot" / kernel.kernel).read_bytes()
    assert data[:10] == bytes.fromhex("1f8b0800000000000003")  # mtime 0, no name: reproducible
    assert gzip.decompress(data) == load_vmlinux(Path(HOST_KERNELS[-1]).read_bytes()).data
    xen = xen_load(data)
    assert xen.path == ("gunzip (whole file, xc_dom_try_gunzip)", "ELF loader") and xen.pvh
    _, [entry] = menu_lst(menu)
    assert entry["kernel"].split()[0] == f"/boot/{kernel.kernel}" and entry["initrd"] == f"/boot/initrd.img-{version}"
    for path in HOOKS:
        assert (tree.path / path.lstrip("/")).stat().st_mode & 0o777 == 0o755


def test_hvm_layout_and_pv_format_bzimage_keep_the_bzimage(tmp_path: Path) -> None:
    tree, kernel, menu = staged(tmp_path / "hvm", layout="gpt-uefi")
    assert kernel.kernel.startswith("vmlinuz-") and (kernel.format, kernel.original) == ("bzimage", None)
    assert f"/boot/{kernel.kernel}" in menu and not (tree.path / "etc/kernel").exists()
    profiles = tmp_path / "kernels"
    profiles.mkdir()
    text = (REPO / "kernels/host-cloud-amd64.toml").read_text()
    (profiles / "host-cloud-amd64.toml").write_text(text.replace('pv_format = "auto"', 'pv_format = "bzimage"'))
    profile = load_profile("host-cloud-amd64", recipe_path=tmp_path / "r.toml", kernels_dir=profiles)
    assert profile.pv_format == "bzimage"
    (profiles / "host-cloud-amd64.toml").write_text(text.replace('pv_format = "auto"', 'pv_format = "elf"'))
    with pytest.raises(RecipeError) as exc:
        load_profile("host-cloud-amd64", recipe_path=tmp_path / "r.toml", kernels_dir=profiles)
    assert exc.value.key == "pv_format" and "'elf' is not one of auto, bzimage, vmlinux-gz" in exc.value.message


@pytest.mark.slow  # runs the hook on a 60 MiB kernel: ~7 s (the fast loop: README, Tests)
def test_postinst_hook_converts_a_later_kernel(tmp_path: Path) -> None:
    tree, kernel, _ = staged(tmp_path)
    add_kernel(tree)
    proc = hook(tree, "postinst", NEW, params="configure ")
    assert proc.returncode == 0, proc.stderr
    assert f"pvgrub-vmlinux-{NEW}.gz is the default entry of /boot/grub/menu.lst" in proc.stderr
    converted = tree.path / f"boot/pvgrub-vmlinux-{NEW}.gz"
    assert gzip.decompress(converted.read_bytes()) == load_vmlinux(Path(HOST_KERNELS[-1]).read_bytes()).data
    assert xen_load(converted.read_bytes()).pvh
    assert not list((tree.path / "boot").glob(".pvgrub-*"))  # no temporary file left
    text = (tree.path / "boot/grub/menu.lst").read_text()
    head, (new, old) = menu_lst(text)
    assert (head["default"], head["fallback"]) == ("0", "1")
    new_path, *new_args = new["kernel"].split()
    old_path, *old_args = old["kernel"].split()
    assert (new_path, new["initrd"]) == (f"/boot/pvgrub-vmlinux-{NEW}.gz", f"/boot/initrd.img-{NEW}")
    assert new["title"] == f"pv ({NEW})" and new_args == old_args and new["root"] == "(hd0)"
    assert old_path == f"/boot/{kernel.kernel}"
    again = hook(tree, "postinst", NEW)  # dpkg-reconfigure: the same entry, not a second one
    assert again.returncode == 0 and (tree.path / "boot/grub/menu.lst").read_text() == text

    upgrade = hook(tree, "postrm", NEW, params="upgrade 6.1.0-99-cloud-amd64+1")  # the new revision's
    assert (upgrade.returncode, upgrade.stderr) == (0, "") and converted.exists()  # postinst will redo it
    proc = hook(tree, "postrm", NEW, params="remove")
    assert proc.returncode == 0, proc.stderr
    assert not converted.exists()
    head, entries = menu_lst((tree.path / "boot/grub/menu.lst").read_text())
    assert [e["kernel"].split()[0] for e in entries] == [f"/boot/{kernel.kernel}"]
    assert head["default"] == "0" and "fallback" not in head


@pytest.mark.slow  # GRUB 0.97 gunzips the 60 MiB vmlinux: ~15 s, more under load
def test_grub097_boots_the_kernel_the_postinst_hook_made(tmp_path: Path) -> None:
    """GRUB 0.97 (Debian's 0.97-80) reads the menu.lst the hook rewrote on a 4 KiB-block ext4 of the tree and
    boots the new entry; Xen's loader rules take the kernel it read."""
    tree, _, _ = staged(tmp_path)
    add_kernel(tree)
    proc = hook(tree, "postinst", NEW, params="configure ")
    assert proc.returncode == 0, proc.stderr
    image = tmp_path / "hd0.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "4096", "-O", "^64bit", "-L", "root", "-d", str(tree.path),
                    str(image), "400M"], check=True)
    result = plan(image, Variant.HD0, "1.05", tmp_path / "keep")
    assert result.booted is not None and result.booted.entry.title.startswith(f"pv ({NEW})"), result.why()
    assert not result.fell_back and result.xen is not None and result.xen.pvh


def test_postinst_hook_without_lz4_leaves_menu_lst_alone(tmp_path: Path) -> None:
    tree, _, _ = staged(tmp_path)
    add_kernel(tree)
    bin_dir = tmp_path / "bin"  # a PATH with the shell tools of a minimal Debian, no lz4
    bin_dir.mkdir()
    for tool in ("sh", "od", "tr", "tail", "head", "gzip", "wc", "mktemp", "mv", "rm", "cp", "chmod", "awk", "cat"):
        found = shutil.which("mawk" if tool == "awk" and shutil.which("mawk") else tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    before = (tree.path / "boot/grub/menu.lst").read_text()
    script = tree.path / "etc/kernel/postinst.d/zz-imagekit-pv-kernel"
    proc = subprocess.run([str(bin_dir / "sh"), str(script), NEW, f"/boot/vmlinuz-{NEW}"], capture_output=True,
                          text=True, env={"PATH": str(bin_dir), "IMAGEKIT_ROOT": str(tree.path)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == (f"zz-imagekit-pv-kernel: /boot/vmlinuz-{NEW}: the payload needs lz4, which is not "
                           "installed (apt-get install lz4); menu.lst unchanged: PV-GRUB keeps booting its "
                           "current default\n")
    assert (tree.path / "boot/grub/menu.lst").read_text() == before
    assert not list((tree.path / "boot").glob("*pvgrub-vmlinux-6.1.0-99*"))
    bad = hook(tree, "postinst", "../../etc")
    assert bad.returncode == 2 and "usage:" in bad.stderr


def test_hooks_of_a_boot_partition_image_name_paths_on_it(tmp_path: Path) -> None:
    """hd00 with a /boot partition: menu.lst names /NAME; the running system has it at /boot/boot/grub."""
    boot = '[filesystems.boot]\ntype = "ext2"\nlabel = "boot"\nsize = "64M"\n'
    tree, kernel, menu = staged(tmp_path, layout="hd00", extra=boot)
    assert menu_lst(menu)[1][0]["kernel"].split()[0] == f"/{kernel.kernel}"
    script = (tree.path / HOOKS[0].lstrip("/")).read_text()
    assert "prefix=''" in script and 'menu="$root/boot/boot/grub/menu.lst"' in script
