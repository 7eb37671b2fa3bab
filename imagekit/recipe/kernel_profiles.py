"""Kernel profiles (kernels/*.toml): where the kernel and initrd come from and how they boot.

A recipe names its profile; `search_path` says where `load_profile` looks for NAME.toml, first hit wins:
`--kernels-dir DIR` (env IMAGEKIT_KERNELS_DIR), then a kernels/ directory beside the recipe (RECIPE_DIR/kernels,
then RECIPE_DIR/../kernels: the checkout's recipes/ and kernels/ are siblings), then the profiles shipped with
imagekit (imagekit/_kernels: a symlink to the top-level kernels/ in a checkout, copies of its files in a wheel).

A profile names either packages a bootstrap installs (the kernel lands in the rootfs's /boot and the
distribution's hook makes the initrd), or files on the build host to copy into /boot. `initrd` says
who makes the initrd: the rootfs's initramfs-tools or dracut, a file, or none (a static kernel, as the
Gentoo seed suggests).
"""

from __future__ import annotations

import glob
import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import ValidationError, model_validator

from imagekit.recipe.model import PROFILE_RE, Arch, Model, PackageName, Virtualization, describe, one_line
from imagekit.util.errors import RecipeError, UsageError

PACKAGED_DIR = Path(__file__).resolve().parents[1] / "_kernels"


class KernelFiles(Model):
    kernel: str  # host path or glob, e.g. /boot/vmlinuz-*-cloud-amd64
    initrd: str | None = None  # host path or glob; "{version}" is replaced by the kernel's version


HVM_CMDLINE = "ro console=tty0 console=ttyS0,115200 nvme_core.io_timeout=4294967295 net.ifnames=0"


class KernelProfile(Model):
    name: str
    description: str = ""
    arch: Arch = Arch.X86_64
    packages: tuple[PackageName, ...] = ()  # installed by a bootstrap
    files: KernelFiles | None = None  # copied from the build host
    initrd: Literal["initramfs-tools", "dracut", "file", "none"] = "initramfs-tools"
    cmdline: str = "ro"  # PV (PV-GRUB): the console is hvc0
    # HVM (GRUB 2, SeaBIOS/OVMF, Nitro): the console is the serial port; Nitro's NVMe must never time out;
    # the NIC keeps the name eth0 (net.ifnames=0) that EC2 PV gives it and images configure.
    cmdline_hvm: str = HVM_CMDLINE
    xen_pv: bool = True  # the kernel can run as a Xen PV guest (PV-GRUB)
    # What a PV image's menu.lst boots (imagekit/kernel/pvsafe.py): "auto" a gzipped ELF vmlinux made from
    # the kernel when EC2's PV-GRUB cannot decompress its payload (lz4, zstd), else the kernel itself;
    # "bzimage" the kernel file as installed; "vmlinux-gz" always the gzipped vmlinux.
    pv_format: Literal["auto", "bzimage", "vmlinux-gz"] = "auto"
    # what a PV image's kernel postinst hook needs to convert a later kernel (Debian's cloud kernel is LZ4: the
    # lz4 tool); installed by every bootstrap with this profile, so one bootstrap serves PV and HVM layouts
    pv_packages: tuple[PackageName, ...] = ()

    @model_validator(mode="after")
    def _one_source(self) -> KernelProfile:
        if bool(self.packages) == bool(self.files):
            raise ValueError("give either packages (installed by a bootstrap) or files (copied from the host)")
        if self.initrd == "file" and not (self.files and self.files.initrd):
            raise ValueError("initrd = \"file\" needs files.initrd")
        return self

    def cmdline_for(self, virtualization: Virtualization) -> str:
        return self.cmdline_hvm if virtualization is Virtualization.HVM else self.cmdline


def search_path(recipe_path: Path, kernels_dir: Path | None = None) -> list[Path]:
    """Where a recipe's profile is looked for, in order (directories beside the recipe only if they exist)."""
    beside = [d for d in (recipe_path.parent / "kernels", recipe_path.parent.parent / "kernels") if d.is_dir()]
    dirs = ([kernels_dir] if kernels_dir is not None else []) + beside + [PACKAGED_DIR]
    unique: list[Path] = []
    for d in dirs:
        if not any(d.resolve() == u.resolve() for u in unique):
            unique.append(d)
    return unique


def find_profile(name: str, *, recipe_path: Path, kernels_dir: Path | None = None) -> Path:
    """The file of profile `name`; an error names the recipe key, the places looked and the known profiles."""
    dirs = search_path(recipe_path, kernels_dir)
    # a name, bounded, before it becomes a path (a 251-character name would be ENAMETOOLONG)
    if PROFILE_RE.fullmatch(name):
        found = next((d / f"{name}.toml" for d in dirs if (d / f"{name}.toml").is_file()), None)
        if found is not None:
            return found
    known = ", ".join(sorted({p.stem for d in dirs for p in d.glob("*.toml")})) or "none"
    shown = name if len(name) <= 64 else name[:60] + "..."
    raise RecipeError(recipe_path, "kernel.profile",
                      one_line(f"no kernel profile {shown!r} (looked in {', '.join(map(str, dirs))}; known: {known})"),
                      hint="name one of the known profiles, or add NAME.toml to --kernels-dir DIR "
                           "(env IMAGEKIT_KERNELS_DIR) or to a kernels/ directory beside the recipe")


def load_profile(name: str, *, recipe_path: Path, kernels_dir: Path | None = None) -> KernelProfile:
    """The profile `name` from the search path; errors name the recipe key or the profile file."""
    path = find_profile(name, recipe_path=recipe_path, kernels_dir=kernels_dir)
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RecipeError(path, None, one_line(f"not valid TOML: {exc}")) from None
    except OSError as exc:
        raise RecipeError(path, None, f"cannot read: {exc.strerror}") from None
    except RecursionError:
        raise RecipeError(path, None, "not valid TOML: nested too deeply") from None
    except ValueError:  # tomllib: an integer past Python's 4300-digit limit for int("...")
        raise RecipeError(path, None, "not valid TOML: a number too long to read") from None
    try:
        return KernelProfile.model_validate(data)
    except ValidationError as exc:
        key, message = describe(exc.errors()[0])
        raise RecipeError(path, one_line(key), one_line(message)) from None


def kernel_version(name: str) -> str:
    """'vmlinuz-6.1.0-28-cloud-amd64' -> '6.1.0-28-cloud-amd64'."""
    return re.sub(r"^(vmlinuz|vmlinux|bzImage|kernel)-", "", name)


def host_files(profile: KernelProfile) -> tuple[Path, Path | None]:
    """The newest host kernel matching the profile's glob, and its initrd."""
    assert profile.files is not None
    matches = sorted(glob.glob(profile.files.kernel))
    if not matches:
        raise UsageError(f"kernel profile {profile.name}: no file matches {profile.files.kernel}")
    kernel = Path(matches[-1])
    initrd = None
    if profile.files.initrd and profile.initrd == "file":
        pattern = profile.files.initrd.replace("{version}", kernel_version(kernel.name))
        found = sorted(glob.glob(pattern))
        if not found:
            raise UsageError(f"kernel profile {profile.name}: no initrd matches {pattern}")
        initrd = Path(found[-1])
    return kernel, initrd
