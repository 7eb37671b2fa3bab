"""Small real disk images for lint tests, made with the tools imagekit itself uses (mke2fs -d,
sfdisk, mkswap, mkfs.vfat/mtools, libguestfs for LVM), each holding the host's cloud kernel."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from imagekit.kernel.pvsafe import cached_pv_safe_kernel, pv_kernel_name

MiB = 1024 * 1024


def sh(*argv: str | Path, input: str | None = None) -> str:
    return subprocess.run([str(a) for a in argv], input=input, capture_output=True, text=True, check=True).stdout


def boot_tree(root: Path, kernel: Path, *, menu: str | None, fstab: str | None, prefix: str = "/boot",
              pv_safe: bool = False) -> Path:
    """A tree with the kernel, its initrd and config in `prefix`, and menu.lst / fstab as given; `pv_safe`:
    also the gzipped ELF vmlinux a PV build installs (pvgrub-vmlinux-VERSION.gz)."""
    version = kernel.name.removeprefix("vmlinuz-")
    boot = root / prefix.strip("/")
    boot.mkdir(parents=True, exist_ok=True)
    for name in (f"vmlinuz-{version}", f"initrd.img-{version}", f"config-{version}"):
        shutil.copy(kernel.with_name(name), boot / name)
    if pv_safe:
        (boot / pv_kernel_name(version)).write_bytes(cached_pv_safe_kernel(kernel.read_bytes(), str(kernel))[0])
    if menu is not None:
        (boot / "grub").mkdir(exist_ok=True)
        (boot / "grub" / "menu.lst").write_text(menu)
    if fstab is not None:
        (root / "etc").mkdir(exist_ok=True)
        (root / "etc" / "fstab").write_text(fstab)
    return root


def mkext(image: Path, tree: Path | None, size: int, *, fstype: str = "ext4", label: str = "root",
          features: str | None = "^64bit", uuid: str | None = None, block: int = 4096) -> None:
    argv: list[str | Path] = [f"mkfs.{fstype}", "-q", "-F", "-L", label, "-b", str(block)]  # 4 KiB: as imagekit's
    if features and fstype == "ext4":
        argv += ["-O", features]
    if uuid:
        argv += ["-U", uuid]
    if tree is not None:
        argv += ["-d", tree]
    image.unlink(missing_ok=True)
    sh(*argv, image, f"{size // 1024}k")


def partitioned(image: Path, label: str, parts: list[tuple[Path, str]]) -> None:
    """A disk with a `label` (dos or gpt) table and each filesystem file copied into its partition."""
    sizes = [p.stat().st_size for p, _ in parts]
    total = MiB + sum(-(-s // MiB) * MiB for s in sizes) + MiB
    with open(image, "wb") as f:
        f.truncate(total)
    script = f"label: {label}\n" + "".join(f"size={-(-s // MiB)}MiB, type={t}\n" for s, (_, t) in
                                            zip(sizes, parts, strict=True))
    sh("sfdisk", "-q", image, input=script)
    offset = MiB
    for (fs, _), size in zip(parts, sizes, strict=True):
        sh("dd", f"if={fs}", f"of={image}", "bs=1M", f"seek={offset // MiB}", "conv=notrunc,sparse", "status=none")
        offset += -(-size // MiB) * MiB


def mkvfat(image: Path, tree: Path, size: int, fat: int | None = None, volume_id: str | None = None) -> None:
    image.unlink(missing_ok=True)
    fat_args = (["-F", str(fat)] if fat else []) + (["-s", "1"] if fat == 32 else [])
    fat_args += ["-i", volume_id.replace("-", "")] if volume_id else []
    sh("mkfs.vfat", *fat_args, "-C", image, str(size // 1024))
    for path in sorted(tree.rglob("*")):
        inner = "::/" + str(path.relative_to(tree))
        if path.is_dir():
            sh("mmd", "-i", image, inner)
        else:
            sh("mcopy", "-i", image, path, inner)


def lvm_image(image: Path, kernel: Path, menu: str) -> None:
    """MBR, one partition holding an LVM PV, / (with /boot) on a logical volume: no /boot outside LVM."""
    import guestfs

    from imagekit.util.accel import detect

    with open(image, "wb") as f:
        f.truncate(128 * MiB)
    g = guestfs.GuestFS(python_return_dict=True)
    try:
        if detect().name == "tcg":
            g.set_backend("direct")
            g.set_backend_settings(["force_tcg"])
        g.add_drive_opts(str(image), format="raw", readonly=False)
        g.launch()
        g.part_disk("/dev/sda", "mbr")
        g.pvcreate("/dev/sda1")
        g.vgcreate("vg0", ["/dev/sda1"])
        g.lvcreate("root", "vg0", 100)
        g.mkfs("ext4", "/dev/vg0/root")
        g.set_label("/dev/vg0/root", "root")
        g.mount("/dev/vg0/root", "/")
        g.mkdir_p("/boot/grub")
        g.upload(str(kernel), f"/boot/{kernel.name}")
        g.write("/boot/grub/menu.lst", menu.encode())
        g.umount_all()
        g.shutdown()
    finally:
        g.close()
