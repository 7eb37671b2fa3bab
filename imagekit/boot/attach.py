"""The disks and network an EC2 instance gets besides its root volume, for `imagekit boot`.

- data volumes (seed 000): by default the volume images the build manifest lists under "data_volumes"
  (files beside the image); `--volume PATH` chooses others, `--no-volumes` boots without any (the
  degraded case). Each is attached through its own qcow2 overlay: a volume image is never written.
- an instance store (seed 000: "a local instance-store scratch space (/dev/sdb), by default"): a sparse
  raw file in the workdir, preformatted ext3 as m1/m3 instance stores came, on the SECOND disk.
- user-data: the local metadata service and its network (metadata.py); a NoCloud seed (nocloud.py).

Disks are ordered as EC2 orders them: root, instance store (sdb, ephemeral0), then the volumes by
their EC2 device name. They are attached as the root disk is: virtio for PV images (vdb, vdc, ...), NVMe
for HVM images on NVMe (as on Nitro, where EBS volumes and instance stores are NVMe controllers too:
nvme1n1, nvme2n1, ...; the root is nvme0n1). Guests name them by PCI order, which is command-line order.
Only the root disk has a boot index; the NoCloud seed is always virtio. HVM boots of a hybrid image get
fresh disks for each firmware (attach_disks into a directory of their own). Under TCG the overlay's fstab
gives each attached volume TCG_DEVICE_WAIT times the image's device timeout (volume_waits); a volume left
out (--no-volumes) keeps the image's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagekit.boot import mounts
from imagekit.boot.console import Watcher
from imagekit.boot.imds import Config as ImdsConfig
from imagekit.boot.metadata import name_nic_eth0, netdev_args, start_imds, user_data_report
from imagekit.boot.nocloud import make_seed
from imagekit.boot.overlay import image_file
from imagekit.boot.probe import ProbeKind
from imagekit.boot.userdata import LIMIT as USER_DATA_LIMIT
from imagekit.manifest import Manifest, manifest_path
from imagekit.util.accel import Accel
from imagekit.util.errors import UsageError
from imagekit.util.run import run

if TYPE_CHECKING:
    from imagekit.boot.prepared import Prepared

GIB = 1 << 30
DEFAULT_INSTANCE_STORE = 4 * GIB  # m3.medium's 4 GB SSD (the instance type imds.py reports)
INSTANCE_STORE_DEVICE = "/dev/sdb"
FREE_DEVICES = [f"/dev/sd{c}" for c in "fghijklmnopqrstuvwxyz"]  # EC2's advice for EBS: sdf..sdp first
# how much longer an emulated (TCG) guest waits for an attached volume than the image says: TCG boots to the
# sentinel in 25-65 s what EC2 boots in a few seconds
TCG_DEVICE_WAIT = 6


@dataclass(frozen=True)
class AttachOptions:
    volumes: tuple[Path, ...] | None = None  # None: the manifest's data volumes
    no_volumes: bool = False
    instance_store: int = DEFAULT_INSTANCE_STORE  # bytes; 0: none
    user_data: Path | None = None
    nocloud: bool = False  # also a NoCloud `cidata` seed disk (cloud-init images)


@dataclass(frozen=True)
class Attachment:
    role: str  # "instance-store", "volume" or "nocloud-seed"
    name: str
    ec2_device: str  # /dev/sdb, /dev/sdh: where EC2 attaches it
    qemu_device: str  # vdb, nvme1n1: what the guest's kernel calls it (PCI order)
    file: str  # what QEMU opens: an overlay or the scratch file
    source: str | None  # the volume image behind the overlay (never written)
    label: str | None = None
    mountpoint: str | None = None
    interface: str = "virtio"  # "virtio" or "nvme" (HVM boots on NVMe, as on Nitro)


@dataclass(frozen=True)
class Attached:
    disks: tuple[Attachment, ...] = ()
    imds: ImdsConfig | None = None
    imds_config: Path | None = None


def parse_store_size(value: str) -> int:
    """`--instance-store`: a size (4G, 512M) or 0/none/off."""
    from imagekit.recipe.model import parse_size

    if value.strip().lower() in ("0", "none", "off", "no"):
        return 0
    try:
        size = parse_size(value)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--instance-store: {value!r} is not a size ({exc})") from None
    if size < 16 << 20:
        raise UsageError(f"--instance-store: {value!r} is too small (16M at least, or 0 for none)")
    return size


def check_attach(opts: AttachOptions, hypervisor: str = "qemu") -> None:
    if hypervisor != "qemu" and (opts.volumes or opts.user_data or opts.nocloud):
        raise UsageError(f"--hypervisor {hypervisor}: --volume, --user-data and --nocloud work under QEMU only")
    if opts.no_volumes and opts.volumes:
        raise UsageError("--no-volumes: cannot be combined with --volume")
    for path in opts.volumes or ():
        if not path.is_file():
            raise UsageError(f"--volume: {path} does not exist or is not a file")
    if opts.user_data is None:
        return
    if not opts.user_data.is_file():
        raise UsageError(f"--user-data: {opts.user_data} does not exist or is not a file")
    size = opts.user_data.stat().st_size
    if size > USER_DATA_LIMIT:
        raise UsageError(f"--user-data: {opts.user_data} is {size} bytes; EC2 takes at most {USER_DATA_LIMIT}")


@dataclass(frozen=True)
class Wanted:
    """A data volume to attach: its image, where EC2 puts it, what the recipe says of it."""

    path: Path
    ec2_device: str
    name: str
    label: str | None = None
    mountpoint: str | None = None


def listed_volumes(image: Path, manifest: Manifest | None) -> list[Wanted]:
    """The data volumes the manifest lists with an image file (beside the image)."""
    wanted = []
    for n, r in enumerate((manifest.data_volumes if manifest else None) or []):
        if not r.image:
            continue
        if not r.device or not r.name:
            raise UsageError(f"{manifest_path(image)}: data_volumes.{n}: a volume with an image needs a name "
                             "and a device")
        wanted.append(Wanted((image.parent / r.image).resolve(), r.device, r.name, r.label, r.mountpoint))
    return wanted


def check_present(image: Path, wanted: list[Wanted]) -> list[Wanted]:
    for w in wanted:
        if not w.path.is_file():
            raise UsageError(f"IMAGE: {image.name}'s data volume {w.name!r} should be {w.path}, which is missing",
                             hint="rebuild the image, pass --volume PATH, or boot without it: --no-volumes")
    return wanted


def choose_volumes(image: Path, manifest: Manifest | None, opts: AttachOptions) -> list[Wanted]:
    """The volumes to attach, in EC2's order (by device name). `--volume` files the manifest knows keep
    their device; others take the next free one from sdf."""
    if opts.no_volumes:
        return []
    known = listed_volumes(image, manifest)
    if opts.volumes is None:
        return sorted(check_present(image, known), key=lambda w: _device_key(w.ec2_device))
    by_path = {w.path.resolve(): w for w in known}
    chosen = [by_path.get(p.resolve()) for p in opts.volumes]
    taken = {w.ec2_device for w in chosen if w is not None}
    free = iter(d for d in FREE_DEVICES if d not in taken)
    result: list[Wanted] = []
    for path, w in zip(opts.volumes, chosen, strict=True):
        if any(r.path == path.resolve() for r in result):
            raise UsageError(f"--volume: {path} is given twice")
        device = w.ec2_device if w else next(free, None)
        if device is None:
            raise UsageError(f"--volume: {path}: no free EC2 device name left (sdf..sdz)")
        result.append(w or Wanted(path.resolve(), device, path.name))
    return sorted(result, key=lambda w: _device_key(w.ec2_device))


def _device_key(device: str) -> tuple[int, str]:
    name = device.removeprefix("/dev/").removeprefix("xvd").removeprefix("sd")
    return len(name), name


def qemu_disk_name(index: int) -> str:
    """virtio disk `index` (0 is the root): vda, vdb, ..."""
    return "vd" + "abcdefghijklmnopqrstuvwxyz"[index]


def extra_interface(root_interface: str) -> str:
    """How the instance store and volumes are attached: NVMe beside an NVMe root (Nitro), else virtio."""
    return "nvme" if root_interface == "nvme" else "virtio"


class _Names:
    """What the guest's kernel calls each disk, per interface in PCI order; the root disk takes the first."""

    def __init__(self, root_interface: str) -> None:
        self.count = Counter({root_interface: 1})

    def next(self, interface: str) -> str:
        n = self.count[interface]
        self.count[interface] += 1
        return f"nvme{n}n1" if interface == "nvme" else qemu_disk_name(n)


def make_instance_store(workdir: Path, size: int) -> Path:
    """A sparse raw scratch disk, preformatted ext3 (seed 000: instance stores "are given preformatted")."""
    path = workdir / "instance-store.raw"
    with open(path, "wb") as f:
        f.truncate(size)
    run(["mkfs.ext3", "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1", path])
    return path


def volume_overlay(workdir: Path, n: int, wanted: Wanted) -> Path:
    """A qcow2 overlay on the volume image: the guest writes there, the volume image stays as built."""
    path = workdir / f"volume-{n}-{wanted.name}.qcow2"
    source = image_file(wanted.path, "--volume")
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", source.format, "-b", source.path, path])
    return path


def attach_disks(image: Path, manifest: Manifest | None, opts: AttachOptions, workdir: Path,
                 root_interface: str = "virtio") -> Attached:
    """Make the instance store and the volume overlays in `workdir` (removed with it); EC2's order. They are
    attached as `extra_interface(root_interface)`; the NoCloud seed as virtio."""
    check_attach(opts)
    workdir.mkdir(parents=True, exist_ok=True)
    interface = extra_interface(root_interface)
    names = _Names(root_interface)
    disks: list[Attachment] = []
    if opts.instance_store:
        store = make_instance_store(workdir, opts.instance_store)
        disks.append(Attachment("instance-store", "ephemeral0", INSTANCE_STORE_DEVICE, names.next(interface),
                                str(store), None, interface=interface))
    for n, wanted in enumerate(choose_volumes(image, manifest, opts)):
        ov = volume_overlay(workdir, n, wanted)
        disks.append(Attachment("volume", wanted.name, wanted.ec2_device, names.next(interface), str(ov),
                                str(wanted.path), wanted.label, wanted.mountpoint, interface))
    imds, cfg_path = start_imds(opts.user_data, block_device_mapping(disks), workdir)
    if opts.nocloud:
        seed = make_seed(workdir, opts.user_data, imds)
        disks.append(Attachment("nocloud-seed", "cidata", "-", names.next("virtio"), str(seed), None))
    return Attached(tuple(disks), imds, cfg_path)


def block_device_mapping(disks: tuple[Attachment, ...] | list[Attachment]) -> dict[str, str]:
    """meta-data/block-device-mapping/ as EC2 gives it for these disks."""
    mapping = {"ami": "sda1", "root": "/dev/sda1"}
    volumes = 0
    for d in disks:
        short = d.ec2_device.removeprefix("/dev/")
        if d.role == "instance-store":
            mapping["ephemeral0"] = short
        elif d.role == "volume":
            volumes += 1
            mapping[f"ebs{volumes}"] = short
    return mapping


def nvme_serial(disk: Attachment) -> str:
    """An NVMe controller's serial (at most 20 characters): its EC2 device, so /dev/disk/by-id says which it is
    (nvme-QEMU_NVMe_Ctrl_imagekit-sdh); Nitro's EBS serial is the volume id, not reproducible here."""
    return f"imagekit-{disk.ec2_device.removeprefix('/dev/')}"[:20]


def drive_args(disks: tuple[Attachment, ...]) -> list[str]:
    """The extra disks, in order, none bootable: virtio (`if=virtio`) or each its own NVMe controller."""
    args = []
    for n, d in enumerate(disks, 1):
        fmt = "qcow2" if d.role == "volume" else "raw"
        ro = ",readonly=on" if d.role == "nocloud-seed" else ""
        file = d.file.replace(",", ",,")
        if d.interface == "nvme":
            args += ["-drive", f"file={file},if=none,id=disk{n},format={fmt},cache=unsafe{ro}",
                     "-device", f"nvme,drive=disk{n},serial={nvme_serial(d)}"]
        else:
            args += ["-drive", f"file={file},if=virtio,format={fmt},cache=unsafe{ro}"]
    return args


def nic_args(attached: Attached, nic: str = "virtio-net-pci") -> list[str]:
    """User networking and one NIC (`nic`: the -device driver and its options); with a metadata service,
    the network that forwards 169.254.169.254 to it (metadata.py)."""
    if attached.imds_config is not None:
        return netdev_args(attached.imds_config, nic)
    return ["-netdev", "user,id=n0", "-device", f"{nic},netdev=n0"]


def extend_argv(argv: list[str], attached: Attached) -> list[str]:
    """A PV boot's QEMU command line with the extra disks after the root disk (PCI order = EC2's order) and,
    with a metadata service, the user network replaced by one that forwards 169.254.169.254."""
    out = list(argv)
    if attached.imds_config is not None and "-nic" in out:
        i = out.index("-nic")
        out[i:i + 2] = nic_args(attached)
    roots = [i for i, a in enumerate(out) if a == "-drive"]
    at = roots[-1] + 2 if roots else len(out)
    out[at:at] = drive_args(attached.disks)
    return out


def attachments_report(attached: Attached) -> list[dict[str, Any]]:
    return [asdict(d) for d in attached.disks]


def prepare_instance(g: Any, prepared: Prepared, manifest: Manifest | None, opts: AttachOptions,
                     waits: Sequence[str] = ()) -> Prepared:
    """What the overlay gets for the instance beyond its root (PV and HVM alike): the mounts probe, the
    longer device timeouts of `waits` (volume_waits), and the NIC named eth0 when a metadata service will
    answer (user-data)."""
    edits = with_volume_waits(g, with_mounts_probe(g, prepared, manifest), waits)
    return name_nic_eth0(g, edits, opts.user_data is not None)


def volume_waits(attached: Attached, accel: Accel) -> tuple[str, ...]:
    """The labels of the attached volumes whose device timeout the overlay stretches: under TCG only
    (mounts.stretch_device_timeouts says why); with KVM the guest runs at the speed the image expects."""
    if accel.name != "tcg":
        return ()
    return tuple(sorted({d.label for d in attached.disks if d.role == "volume" and d.label}))


def with_volume_waits(g: Any, prepared: Prepared, labels: Sequence[str]) -> Prepared:
    added = mounts.stretch_device_timeouts(g, labels, TCG_DEVICE_WAIT)
    return replace(prepared, added=(*prepared.added, *added)) if added else prepared


def with_mounts_probe(g: Any, prepared: Prepared, manifest: Manifest | None) -> Prepared:
    """The systemd probe also reports mounts and the services ordered after them (mounts.py)."""
    if prepared.kind is not ProbeKind.SYSTEMD:
        return prepared
    return replace(prepared, added=(*prepared.added, *mounts.install_mounts_probe(g, manifest)))


def instance_fields(attached: Attached, watcher: Watcher) -> dict[str, Any]:
    """The report's fields for disks, mounts, services and user-data (BootReport's, by name)."""
    found = mounts.read_mounts(watcher.lines)
    degraded = bool(found["missing_mounts"]) or watcher.system_state == "degraded"
    return {"attachments": attachments_report(attached), "user_data": user_data_report(attached.imds),
            "degraded": degraded, **found}
