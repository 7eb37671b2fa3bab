"""Rules about the installed system: root=, /etc/fstab, and (HVM) a bootloader for the boot mode.

EC2 attaches a PV root as /dev/sda1, modern kernels call it /dev/xvda1, QEMU /dev/vda, Nitro
/dev/nvme0n1p1: only LABEL= and UUID= name it everywhere. The instance store is /dev/sdb (xvdb)
on the instance types that have one: mounted without `nofail` an instance without it stops at boot.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from imagekit.image.disklabel import ESP_TYPE
from imagekit.kernel.config import Target
from imagekit.lint.findings import Finding, Severity, finding
from imagekit.lint.view import Filesystem, ImageView
from imagekit.recipe.arch import spec_named
from imagekit.recipe.layouts import Firmware

EC2_DEVICE = re.compile(r"^/dev/(?:sd|xvd|hd)([a-z])(\d*)$")
INSTANCE_STORE = re.compile(r"^/dev/(?:sd|xvd)[b-e]\d*$")
PSEUDO = {"proc", "sysfs", "tmpfs", "devpts", "none", "devtmpfs", "cgroup", "cgroup2", "debugfs", "securityfs"}
ESP_GUID = ESP_TYPE  # as libguestfs and lint/native.py print it


def resolve(view: ImageView, spec: str) -> Filesystem | None:
    """The filesystem LABEL=/UUID=/PARTUUID=/PARTLABEL= (or /dev/disk/by-*) names, if the image has it."""
    key, _, value = spec.partition("=")
    for prefix, name in (("/dev/disk/by-label/", "LABEL"), ("/dev/disk/by-uuid/", "UUID")):
        if spec.startswith(prefix):
            key, value = name, spec[len(prefix):]
    value = value.strip('"')
    if key == "LABEL":
        return next((f for f in view.filesystems if f.label and f.label == value), None)
    if key == "UUID":
        return next((f for f in view.filesystems if f.uuid and f.uuid.lower() == value.lower()), None)
    if key == "PARTUUID":
        return _by_partuuid(view, value.lower())
    return None


def _by_partuuid(view: ImageView, value: str) -> Filesystem | None:
    if view.parttype == "msdos":
        signature = view.disk_bytes(440, 4)[::-1].hex()
        for p in view.partitions:
            if value == f"{signature}-{p.number:02x}":
                return view.filesystem_on_partition(p.number)
        return None
    for p in view.partitions:
        if p.guid == value:
            return view.filesystem_on_partition(p.number)
    return None


def is_tagged(spec: str) -> bool:
    return spec.split("=", 1)[0] in ("LABEL", "UUID", "PARTUUID", "PARTLABEL") or spec.startswith("/dev/disk/by-")


def check_root_arg(view: ImageView, label: str, root: str | None, target: Target) -> Iterator[Finding]:
    if root is None:
        yield finding("root-missing", label, "no root= on the kernel command line",
                      "add root=LABEL=<root label> (or root=UUID=...)")
        return
    if is_tagged(root):
        if resolve(view, root) is None:
            yield finding("root-unresolved", f"{label} root={root}", f"no filesystem in the image has {root}",
                          "set root= to the LABEL or UUID of the root filesystem")
        return
    if EC2_DEVICE.match(root):
        severity = Severity.ERROR if target is Target.NITRO else None
        yield finding("root-device-name", f"{label} root={root}", f"root={root} is a device name: EC2 attaches "
                      "the root as /dev/sda1, kernels name it /dev/xvda1 (Nitro: /dev/nvme0n1p1, QEMU: /dev/vda)",
                      "use root=LABEL=... or root=UUID=...", severity=severity)


def root_filesystem(view: ImageView, root: str | None) -> Filesystem | None:
    """The root filesystem: what root= names, else the filesystem holding /etc/fstab."""
    if root and is_tagged(root) and (fs := resolve(view, root)) is not None:
        return fs
    for fs in view.filesystems:
        if fs.type not in ("swap", "unknown") and view.exists(fs.device, "/etc/fstab"):
            return fs
    return None


def check_fstab(view: ImageView, root_fs: Filesystem, target: Target) -> Iterator[Finding]:
    text = view.read_text(root_fs.device, "/etc/fstab")
    if text is None:
        yield finding("fstab-missing", f"{root_fs.device}:/etc/fstab", "the root filesystem has no /etc/fstab",
                      "write one (systemd mounts / read-write from it)")
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if len(fields) < 3:
            continue
        spec, mountpoint, fstype = fields[:3]
        options = fields[3].split(",") if len(fields) > 3 else []
        obj = f"/etc/fstab line {lineno} ({spec} {mountpoint})"
        if fstype in PSEUDO or spec in PSEUDO:
            continue
        nofail = "nofail" in options or "noauto" in options
        yield from _fstab_entry(view, obj, spec, nofail, target)


FS_FAMILY = {"ext2": "ext", "ext3": "ext", "ext4": "ext", "msdos": "vfat", "fat": "vfat"}


def check_fstab_types(view: ImageView, root_fs: Filesystem) -> Iterator[Finding]:
    """Each fstab entry's type against the filesystem it names: `mount -t xfs` of an ext4 filesystem fails,
    and systemd stops the boot in emergency mode for an entry without nofail. ext2/3/4 are one family here
    (the ext4 driver serves all three; an ext3 entry of an ext4 filesystem is not flagged). On / the kernel
    has mounted root already (a warning), but fsck and remount read fstab's type."""
    text = view.read_text(root_fs.device, "/etc/fstab")
    if text is None:
        return  # fstab-missing says so
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if len(fields) < 3 or fields[2] in ("auto", "none") or "," in fields[2]:
            continue
        spec, mountpoint, fstype = fields[:3]
        fs = resolve(view, spec)
        if fs is None or fs.type == "unknown" or FS_FAMILY.get(fs.type, fs.type) == FS_FAMILY.get(fstype, fstype):
            continue
        options = fields[3].split(",") if len(fields) > 3 else []
        mild = mountpoint == "/" or "nofail" in options or "noauto" in options
        yield finding("fstab-type-mismatch", f"/etc/fstab line {lineno} ({spec} {mountpoint})",
                      f"the entry says {fstype}, but {spec} is {fs.type}: mounting it as {fstype} fails",
                      f"write {fs.type} (or auto) in the entry's third field",
                      severity=Severity.WARNING if mild else None)


def _fstab_mounts(text: str) -> Iterator[tuple[str, str]]:
    """(spec, mount point) of each fstab entry."""
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2:
            yield fields[0], fields[1]


def esp_filesystems(view: ImageView) -> list[Filesystem]:
    """The FAT filesystems on EFI system partitions (GPT type or MBR 0xEF)."""
    found = []
    for p in view.partitions:
        if p.gpt_type == ESP_GUID or p.mbr_id == 0xEF:
            fs = view.filesystem_on_partition(p.number)
            if fs is not None and fs.type == "vfat":
                found.append(fs)
    return found


def check_fstab_esp(view: ImageView, root_fs: Filesystem) -> Iterator[Finding]:
    """HVM: the ESP mounted at /boot/efi, as Debian and Ubuntu do; without it grub-install and GRUB's package
    updates write to an empty /boot/efi on the root filesystem and the ESP keeps the old loader."""
    text = view.read_text(root_fs.device, "/etc/fstab")
    if text is None:
        return  # fstab-missing says so
    entries = list(_fstab_mounts(text))
    for esp in esp_filesystems(view):
        if any(mountpoint in ("/boot/efi", "/efi") or (is_tagged(spec) and resolve(view, spec) == esp)
               for spec, mountpoint in entries):
            continue
        name = f"UUID={esp.uuid}" if esp.uuid else esp.device
        yield finding("fstab-esp-missing", f"{root_fs.device}:/etc/fstab", f"the EFI system partition "
                      f"({esp.device}, {name}) is not in fstab: /boot/efi stays empty in the running system",
                      f"add '{name} /boot/efi vfat umask=0077 0 1'")


SSH_HOST_KEY = re.compile(r"^ssh_host_[A-Za-z0-9]+_key$")  # the private half; its .pub goes with it


def check_ssh_host_keys(view: ImageView, root_fs: Filesystem) -> Iterator[Finding]:
    """No SSH host private keys in /etc/ssh (AWS's guidelines for shared AMIs: remove them, so that each
    instance makes its own). Every instance launched from an image that has them presents the same host
    identity, and whoever has the image (a public AMI: anyone) holds the private keys."""
    keys = sorted(n for n in view.ls(root_fs.device, "/etc/ssh") if SSH_HOST_KEY.match(n))
    if keys:
        yield finding("ssh-host-keys-shipped", f"{root_fs.device}:/etc/ssh", f"the image holds SSH host private "
                      f"keys ({', '.join(keys)}): every instance launched from it shares them, and anyone with "
                      "the image has them", "remove /etc/ssh/ssh_host_* and make them at first boot "
                      "(ssh-keygen -A before ssh.service: imagekit build does both)")


IFUPDOWN_NAME = re.compile(r"^\s*(?:auto|allow-hotplug|iface)\s+(.+?)\s*$", re.M)


def ifupdown_interfaces(view: ImageView, root_fs: Filesystem) -> set[str]:
    """The interfaces /etc/network/interfaces (and interfaces.d/) brings up or configures, by name."""
    texts = [view.read_text(root_fs.device, "/etc/network/interfaces")]
    texts += [view.read_text(root_fs.device, f"/etc/network/interfaces.d/{n}")
              for n in view.ls(root_fs.device, "/etc/network/interfaces.d")]
    names: set[str] = set()
    for text in filter(None, texts):
        for m in IFUPDOWN_NAME.finditer(text):
            words = m[1].split()
            names.update(words[:1] if m[0].lstrip().startswith("iface") else words)
    return names - {"lo"}


def check_nic_name(view: ImageView, root_fs: Filesystem, where: str, args: str) -> Iterator[Finding]:
    """HVM: a NIC keeps the name eth0 only under Xen PV (netfront); on Nitro the ENA NIC is ens5 and under QEMU
    ens3, unless net.ifnames=0 (or a udev/systemd .link rule) keeps the kernel's name. An image whose ifupdown
    config names eth0 alone then comes up with no network: no SSH, no metadata."""
    if "net.ifnames=0" in args.split():
        return
    if view.exists(root_fs.device, "/etc/udev/rules.d/80-net-setup-link.rules") or any(
            n.endswith(".link") for n in view.ls(root_fs.device, "/etc/systemd/network")):
        return  # naming chosen by the image itself
    names = ifupdown_interfaces(view, root_fs)
    if "eth0" in names and not any(n.startswith("en") for n in names):
        yield finding("nic-name-eth0", where, "ifupdown configures eth0, but with predictable names the NIC is "
                      "ens5 on Nitro (ens3 under QEMU): the instance would have no network",
                      "add net.ifnames=0 to the kernel command line (the kernel profiles' cmdline_hvm has it)")


def _fstab_entry(view: ImageView, obj: str, spec: str, nofail: bool, target: Target) -> Iterator[Finding]:
    if is_tagged(spec):
        if resolve(view, spec) is None and not nofail:
            yield finding("fstab-unresolved", obj, f"no filesystem in the image has {spec} and the entry has "
                          "no nofail: boot stops in emergency mode", "fix the LABEL/UUID or add nofail")
        return
    if not EC2_DEVICE.match(spec):
        return
    if INSTANCE_STORE.match(spec) and not nofail:
        yield finding("fstab-instance-store-nofail", obj, f"{spec} (the instance store) is mounted without "
                      "nofail: instance types without one stop at boot",
                      "add nofail (and x-systemd.device-timeout=10s)")
        return
    if target is not Target.PV:
        yield finding("fstab-xvd-names", obj, f"{spec}: on Nitro instances EBS volumes are /dev/nvme*n1",
                      "use LABEL= or UUID=", severity=None if not nofail else Severity.WARNING)
    elif not INSTANCE_STORE.match(spec):
        yield finding("fstab-device-name", obj, f"{spec} is a device name: EC2 calls the root /dev/sda1 and "
                      "the kernel /dev/xvda1", "use LABEL= or UUID=")


def _bios_loader(view: ImageView) -> bool:
    mbr = view.disk_bytes(0, 512)
    if b"GRUB" not in mbr[:440]:
        return False
    return any(view.exists(f.device, p) for f in view.filesystems if f.type not in ("swap", "unknown")
               for p in ("/boot/grub/grub.cfg", "/grub/grub.cfg"))


def _uefi_loader(view: ImageView, efi_path: str) -> bool:
    for p in view.partitions:
        if p.gpt_type == ESP_GUID or p.mbr_id == 0xEF:
            fs = view.filesystem_on_partition(p.number)
            if fs is not None and view.exists(fs.device, efi_path):
                return True
    return False


def check_hvm_boot(view: ImageView, boot_mode: str | None, arch: str = "x86_64") -> Iterator[Finding]:
    """An HVM image needs GRUB in the MBR (legacy BIOS) and/or an ESP with the arch's removable-media file
    (UEFI: BOOTX64.EFI, BOOTAA64.EFI on arm64, which boots UEFI only)."""
    spec = spec_named(arch)
    efi_path = f"/{spec.esp_path}"
    boots_bios = Firmware.BIOS in spec.firmwares
    bios, uefi = boots_bios and _bios_loader(view), _uefi_loader(view, efi_path)
    if not boots_bios and not uefi:
        yield finding("hvm-bootloader-missing", "disk", f"an {arch} image boots UEFI only and needs an EFI "
                      f"system partition with {efi_path}", "build it with layout = \"gpt-uefi\"")
        return
    needs = {"legacy-bios": ("bios",), "uefi": ("uefi",), "uefi-preferred": ("bios", "uefi")}.get(
        boot_mode or "", ())
    have = {"bios": bios, "uefi": uefi}
    if needs:
        for mode in needs:
            if not have[mode]:
                what = ("GRUB in the MBR with a grub.cfg" if mode == "bios"
                        else f"an EFI system partition with {efi_path}")
                yield finding("hvm-bootloader-missing", "disk", f"boot mode {boot_mode} needs {what}",
                              "install the bootloader (grub-install) for that boot mode")
    elif not (bios or uefi):
        yield finding("hvm-bootloader-missing", "disk", "no bootloader: neither GRUB in the MBR nor an EFI "
                      f"system partition with {efi_path}", "build the image with an HVM layout")
