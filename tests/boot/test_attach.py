"""What `imagekit boot` attaches besides the root disk, and what it reads back, without a guest: real files,
real qemu-img and mkfs, the exact QEMU arguments (PV, and HVM on NVMe and virtio); the probe's mount lines
parsed into report fields."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from imagekit.boot.attach import (
    TCG_DEVICE_WAIT,
    Attached,
    AttachOptions,
    attach_disks,
    choose_volumes,
    extend_argv,
    instance_fields,
    parse_store_size,
    volume_waits,
    with_volume_waits,
)
from imagekit.boot.console import Line, Watcher
from imagekit.boot.extfs import ExtFs, ExtTree
from imagekit.boot.firmware import BOTH, Firmware
from imagekit.boot.guest import Disk
from imagekit.boot.harness import BootOptions
from imagekit.boot.hvm_boot import attach_each, combine, hvm_argv
from imagekit.boot.imds import Config
from imagekit.boot.mounts import mount_unit_name, read_mounts, script
from imagekit.boot.overlay import image_file
from imagekit.boot.prepared import Prepared
from imagekit.boot.probe import ProbeKind
from imagekit.boot.qemu import Machine
from imagekit.boot.report import BootReport
from imagekit.manifest import DataVolumeRecord, Manifest
from imagekit.util.accel import Accel
from imagekit.util.errors import UsageError
from tests.boot.hvm_images import make_empty_esp
from tests.util import run_imagekit

MIB = 1 << 20
ROOT_ARGV = ["qemu-system-x86_64", "-m", "512", "-drive", "file=/w/overlay.qcow2,if=virtio,format=qcow2,cache=unsafe",
             "-chardev", "file,id=console,path=/w/serial.log", "-serial", "chardev:console",
             "-nic", "user,model=virtio-net-pci", "-kernel", "/k"]


def volume(path: Path, label: str, size: int = 8 * MIB) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", label, str(path)], check=True)
    return path


@pytest.fixture
def image(tmp_path: Path) -> tuple[Path, Manifest]:
    """An image with two data volumes beside it, listed in its manifest out of device order."""
    img = tmp_path / "db.img"
    img.write_bytes(b"\0" * 2 * MIB)
    volume(tmp_path / "db.img.logs.img", "logs")
    volume(tmp_path / "db.img.pgdata.img", "pgdata")
    manifest = Manifest(data_volumes=[
        DataVolumeRecord(name="logs", image="db.img.logs.img", device="/dev/sdj", label="logs", mountpoint="/var/log"),
        DataVolumeRecord(name="pgdata", image="db.img.pgdata.img", device="/dev/sdh", label="pgdata",
                         mountpoint="/var/lib/postgresql"),
        DataVolumeRecord(name="nofile", image=None, device="/dev/sdk", label="x", mountpoint="/x")])
    return img, manifest


def test_manifest_volumes_in_ec2_device_order(image: tuple[Path, Manifest]) -> None:
    img, manifest = image
    assert [(w.name, w.ec2_device) for w in choose_volumes(img, manifest, AttachOptions())] == [
        ("pgdata", "/dev/sdh"), ("logs", "/dev/sdj")]
    assert choose_volumes(img, manifest, AttachOptions(no_volumes=True)) == []


def test_volume_option_chooses_and_unknown_files_take_sdf(image: tuple[Path, Manifest], tmp_path: Path) -> None:
    img, manifest = image
    extra = volume(tmp_path / "scratch.img", "scratch")
    chosen = choose_volumes(img, manifest, AttachOptions(volumes=(extra, tmp_path / "db.img.logs.img")))
    assert [(w.name, w.ec2_device, w.label) for w in chosen] == [("scratch.img", "/dev/sdf", None),
                                                                 ("logs", "/dev/sdj", "logs")]


def test_a_missing_manifest_volume_is_a_usage_error(image: tuple[Path, Manifest], tmp_path: Path) -> None:
    img, manifest = image
    (tmp_path / "db.img.pgdata.img").unlink()
    with pytest.raises(UsageError, match=r"data volume 'pgdata' should be .*db.img.pgdata.img, which is missing"):
        choose_volumes(img, manifest, AttachOptions())


def test_disks_are_overlays_after_the_instance_store(image: tuple[Path, Manifest], tmp_path: Path) -> None:
    img, manifest = image
    work = tmp_path / "work"
    work.mkdir()
    before = (tmp_path / "db.img.pgdata.img").read_bytes()
    user_data = tmp_path / "ud.sh"
    user_data.write_text("#!/bin/sh\necho hi\n")
    attached = attach_disks(img, manifest, AttachOptions(instance_store=64 * MIB, user_data=user_data), work)
    assert [(d.qemu_device, d.ec2_device, d.role, d.name) for d in attached.disks] == [
        ("vdb", "/dev/sdb", "instance-store", "ephemeral0"), ("vdc", "/dev/sdh", "volume", "pgdata"),
        ("vdd", "/dev/sdj", "volume", "logs")]
    store = work / "instance-store.raw"
    assert store.stat().st_size == 64 * MIB and store.stat().st_blocks * 512 < 64 * MIB  # sparse
    assert subprocess.run(["blkid", "-o", "value", "-s", "TYPE", store], capture_output=True,
                          text=True).stdout.strip() == "ext3"
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", work / "volume-0-pgdata.qcow2"],
                                     capture_output=True, text=True, check=True).stdout)
    assert (info["format"], info["backing-filename"]) == ("qcow2", str(tmp_path / "db.img.pgdata.img"))
    argv = extend_argv(ROOT_ARGV, attached)
    drives = [argv[i + 1] for i, a in enumerate(argv) if a == "-drive"]
    assert drives == ["file=/w/overlay.qcow2,if=virtio,format=qcow2,cache=unsafe",
                      f"file={store},if=virtio,format=raw,cache=unsafe",
                      f"file={work}/volume-0-pgdata.qcow2,if=virtio,format=qcow2,cache=unsafe",
                      f"file={work}/volume-1-logs.qcow2,if=virtio,format=qcow2,cache=unsafe"]
    assert "-nic" not in argv
    netdev = argv[argv.index("-netdev") + 1]
    assert netdev.startswith("user,id=n0,net=169.254.0.0/16,guestfwd=tcp:169.254.169.254:80-cmd:env PYTHONPATH=")
    assert netdev.endswith(f" -m imagekit.boot.imds {work}/imds.json")
    assert argv[argv.index("-device") + 1] == "virtio-net-pci,netdev=n0"
    cfg = Config.load(work / "imds.json")
    assert cfg.block_devices == {"ami": "sda1", "root": "/dev/sda1", "ephemeral0": "sdb", "ebs1": "sdh", "ebs2": "sdj"}
    assert cfg.user_data == str(user_data) and cfg.log == str(work / "imds.log")
    assert (tmp_path / "db.img.pgdata.img").read_bytes() == before


def test_without_user_data_the_network_is_left_alone() -> None:
    assert extend_argv(ROOT_ARGV, Attached()) == ROOT_ARGV


def test_instance_store_sizes() -> None:
    assert parse_store_size("4G") == 4 << 30 and parse_store_size("0") == 0 and parse_store_size("none") == 0
    with pytest.raises(UsageError, match="--instance-store: '1M' is too small"):
        parse_store_size("1M")


def test_bad_options_exit_2(image: tuple[Path, Manifest], tmp_path: Path) -> None:
    img, _ = image
    cases = [
        (["--volume", tmp_path / "nope.img"], "error: --volume: "),
        (["--volume", tmp_path / "db.img.logs.img", "--no-volumes"], "error: --no-volumes: cannot be combined"),
        (["--instance-store", "lots"], "error: --instance-store: 'lots' is not a size"),
        (["--user-data", tmp_path / "nope"], "error: --user-data: "),
        (["--hypervisor", "xen", "--volume", tmp_path / "db.img.logs.img"], "error: --hypervisor xen: --volume"),
    ]
    big = tmp_path / "big"
    big.write_bytes(b"x" * 16385)
    cases.append((["--user-data", big], "error: --user-data: " + f"{big} is 16385 bytes; EC2 takes at most 16384"))
    for args, message in cases:
        proc = run_imagekit("boot", img, *args)
        assert proc.returncode == 2 and proc.stderr.startswith(message), (args, proc.stderr)
        assert "Traceback" not in proc.stderr


PROBE_LINES = """\
IMAGEKIT-PROBE: state=running failed=
IMAGEKIT-PROBE: mount target=/ source=/dev/vda fstype=ext4 label=root
IMAGEKIT-PROBE: fstab target=/ spec=LABEL=root fstype=ext4
IMAGEKIT-PROBE: unit id=-.mount state=active result=success active_us=0 mounts=
IMAGEKIT-PROBE: fstab target=/var/lib/postgresql spec=LABEL=pgdata fstype=ext4
IMAGEKIT-PROBE: unit id=var-lib-postgresql.mount state=inactive result=success active_us=0 mounts=/var/lib
IMAGEKIT-PROBE: fstab target=/srv spec=LABEL=srv fstype=ext4
IMAGEKIT-PROBE: unit id=srv.mount state=active result=success active_us=9000000 mounts=
IMAGEKIT-PROBE: mount target=/srv source=/dev/vdc fstype=ext4 label=srv
IMAGEKIT-PROBE: unit id=postgresql@15-main.service state=inactive result=success active_us=0 \
mounts=/etc/postgresql/15/main,/var/lib/postgresql/15/main,/var/lib/postgresql
IMAGEKIT-PROBE: unit id=web.service state=active result=success active_us=12345678 mounts=/srv/www
IMAGEKIT-PROBE: done
"""


def test_probe_lines_become_mounts_missing_mounts_and_services() -> None:
    lines = [Line(float(n), t) for n, t in enumerate(PROBE_LINES.splitlines() * 2)]  # ttyS0 and /dev/console
    found = read_mounts(lines)
    assert found["mounts"] == [{"target": "/", "source": "/dev/vda", "fstype": "ext4", "label": "root"},
                               {"target": "/srv", "source": "/dev/vdc", "fstype": "ext4", "label": "srv"}]
    assert found["missing_mounts"] == [{"target": "/var/lib/postgresql", "spec": "LABEL=pgdata",
                                        "unit": "var-lib-postgresql.mount", "state": "inactive",
                                        "result": "success"}]
    assert found["services"] == [
        {"unit": "postgresql@15-main.service", "state": "inactive", "result": "success", "active_at": None,
         "requires_mounts": [{"target": "/var/lib/postgresql", "unit": "var-lib-postgresql.mount",
                              "active_at": None}], "after_mounts": None},
        {"unit": "web.service", "state": "active", "result": "success", "active_at": 12.35,
         "requires_mounts": [{"target": "/srv", "unit": "srv.mount", "active_at": 9.0}], "after_mounts": True}]


@pytest.mark.parametrize("path", ["/", "/var/lib/postgresql", "/srv/my-data", "/opt/a b", "/home/x.y"])
def test_mount_unit_names_match_systemd_escape(path: str) -> None:
    expected = subprocess.run(["systemd-escape", "-p", "--suffix=mount", path], capture_output=True, text=True,
                              check=True).stdout.strip()
    assert mount_unit_name(path) == expected


def test_probe_script_is_valid_sh_and_lists_template_instances() -> None:
    text = script(["postgresql.service", "postgresql@.service", "bad;name"])
    assert "for pattern in postgresql.service 'postgresql@*.service'; do" in text
    assert "bad;name" not in text
    assert subprocess.run(["sh", "-n"], input=text, text=True).returncode == 0


FSTAB = """# /etc/fstab: the image's own
LABEL=root / ext4 defaults 0 1
LABEL=pgdata /var/lib/postgresql ext4 defaults,nofail,x-systemd.device-timeout=20s 0 2
  /dev/disk/by-label/logs\t/var/log  ext4  nofail,x-systemd.device-timeout=1min,noatime  0 2
LABEL=gone /gone ext4 defaults,nofail,x-systemd.device-timeout=20s 0 2
"""


def test_under_tcg_attached_volumes_wait_longer_in_the_overlay_only(image: tuple[Path, Manifest],
                                                                   tmp_path: Path) -> None:
    """Under TCG the overlay's fstab gives each attached volume TCG_DEVICE_WAIT times its device timeout (a
    slow guest's udev names it later than the image expects); a volume not attached keeps the image's, and
    with KVM nothing changes. Written with debugfs, read back with debugfs itself."""
    img, manifest = image
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/fstab").write_text(FSTAB)
    (tree / "etc/fstab").chmod(0o640)
    root = tmp_path / "root.raw"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", tree, root, "8M"], check=True)
    attached = attach_disks(img, manifest, AttachOptions(instance_store=0), tmp_path / "work")
    assert volume_waits(attached, Accel("kvm", "probe booted a kernel")) == ()
    waits = volume_waits(attached, Accel("tcg", "forced"))
    assert waits == ("logs", "pgdata")  # the attached volumes' labels; "gone" is not attached
    prepared = Prepared(Disk(None, "/dev/sda", "/dev/sda", False), None, ProbeKind.NONE, (), None, ())
    edited = with_volume_waits(ExtTree(ExtFs(root, 0, writable=True)), prepared, waits)
    scale = TCG_DEVICE_WAIT
    assert edited.added == (f"/etc/fstab: x-systemd.device-timeout of LABEL=pgdata 20 s -> {20 * scale} s, "
                            f"/dev/disk/by-label/logs 60 s -> {60 * scale} s (TCG: the emulated guest names an "
                            "attached volume later than on EC2; the image keeps its own timeout)",)
    text = subprocess.run(["debugfs", "-R", "cat /etc/fstab", root], capture_output=True, text=True,
                          check=True).stdout
    assert text == FSTAB.replace("timeout=20s 0 2\n  /dev", f"timeout={20 * scale}s 0 2\n  /dev").replace(
        "timeout=1min,", f"timeout={60 * scale}s,")
    assert "LABEL=gone /gone ext4 defaults,nofail,x-systemd.device-timeout=20s 0 2" in text
    stat = subprocess.run(["debugfs", "-R", "stat /etc/fstab", root], capture_output=True, text=True,
                          check=True).stdout
    assert "Mode:  0640" in stat
    assert with_volume_waits(ExtTree(ExtFs(root, 0, writable=True)), prepared, ()) is prepared


def test_nocloud_seed_is_a_cidata_fat_disk_attached_read_only(tmp_path: Path) -> None:
    img = tmp_path / "plain.img"
    img.write_bytes(b"\0" * 2 * MIB)
    user_data = tmp_path / "ud.yaml"
    user_data.write_text("#cloud-config\nruncmd: [echo hi]\n")
    attached = attach_disks(img, None, AttachOptions(instance_store=0, user_data=user_data, nocloud=True), tmp_path)
    [seed] = attached.disks
    assert (seed.role, seed.qemu_device, seed.ec2_device) == ("nocloud-seed", "vdb", "-")
    blkid = subprocess.run(["blkid", "-o", "export", seed.file], capture_output=True, text=True).stdout
    assert "LABEL=CIDATA" in blkid and "TYPE=vfat" in blkid

    def mtype(name: str) -> str:
        return subprocess.run(["mtype", "-i", seed.file, f"::{name}"], capture_output=True, text=True,
                              check=True).stdout

    assert mtype("user-data") == user_data.read_text()
    assert mtype("meta-data") == "instance-id: i-0123456789abcdef0\nlocal-hostname: ip-169-254-0-15.ec2.internal\n"
    argv = extend_argv(ROOT_ARGV, attached)
    assert f"file={seed.file},if=virtio,format=raw,cache=unsafe,readonly=on" in argv
    assert Config.load(tmp_path / "imds.json").block_devices == {"ami": "sda1", "root": "/dev/sda1"}


# --- HVM boots (hvm_boot.py): the same attachments, on NVMe beside an NVMe root, fresh for each firmware ---

def hvm_command(attached: Attached, interface: str, tmp_path: Path) -> list[str]:
    return hvm_argv(Machine(512, 1, Accel("tcg", "test")), firmware=[], interface=interface,
                    disk=tmp_path / "bios.qcow2", serial_log=tmp_path / "s.log", attached=attached)


def values(argv: list[str], option: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == option]


def test_hvm_on_nvme_attaches_nvme_controllers_after_the_root(image: tuple[Path, Manifest], tmp_path: Path) -> None:
    img, manifest = image
    work = tmp_path / "work"
    user_data = tmp_path / "ud.sh"
    user_data.write_text("#!/bin/sh\necho hi\n")
    opts = AttachOptions(instance_store=64 * MIB, user_data=user_data, nocloud=True)
    attached = attach_disks(img, manifest, opts, work, "nvme")
    assert [(d.qemu_device, d.interface, d.ec2_device, d.role) for d in attached.disks] == [
        ("nvme1n1", "nvme", "/dev/sdb", "instance-store"), ("nvme2n1", "nvme", "/dev/sdh", "volume"),
        ("nvme3n1", "nvme", "/dev/sdj", "volume"), ("vda", "virtio", "-", "nocloud-seed")]  # the seed: virtio
    argv = hvm_command(attached, "nvme", tmp_path)
    assert values(argv, "-drive") == [
        f"if=none,id=root,file={tmp_path}/bios.qcow2,format=qcow2,cache=unsafe",
        f"file={work}/instance-store.raw,if=none,id=disk1,format=raw,cache=unsafe",
        f"file={work}/volume-0-pgdata.qcow2,if=none,id=disk2,format=qcow2,cache=unsafe",
        f"file={work}/volume-1-logs.qcow2,if=none,id=disk3,format=qcow2,cache=unsafe",
        f"file={work}/nocloud-seed.img,if=virtio,format=raw,cache=unsafe,readonly=on"]
    # PCI order is command-line order: the root controller first (nvme0), then EC2's order
    assert values(argv, "-device") == [
        "nvme,drive=root,serial=imagekit-root,bootindex=1", "nvme,drive=disk1,serial=imagekit-sdb",
        "nvme,drive=disk2,serial=imagekit-sdh", "nvme,drive=disk3,serial=imagekit-sdj",
        "virtio-net-pci,romfile=,netdev=n0"]
    assert sum("bootindex" in a for a in argv) == 1 and values(argv, "-boot") == ["strict=on"]
    [netdev] = values(argv, "-netdev")
    assert netdev.startswith("user,id=n0,net=169.254.0.0/16,guestfwd=tcp:169.254.169.254:80-cmd:env PYTHONPATH=")
    assert netdev.endswith(f" -m imagekit.boot.imds {work}/imds.json")
    assert values(argv, "-smbios") == ["type=1,uuid=ec2e1916-9099-7caf-fd21-012345abcdef"]
    assert Config.load(work / "imds.json").block_devices == {"ami": "sda1", "root": "/dev/sda1",
                                                             "ephemeral0": "sdb", "ebs1": "sdh", "ebs2": "sdj"}


def test_hvm_on_virtio_attaches_virtio_disks_without_a_boot_index(image: tuple[Path, Manifest], tmp_path: Path) -> None:
    img, manifest = image
    work = tmp_path / "work"
    attached = attach_disks(img, manifest, AttachOptions(instance_store=64 * MIB), work, "virtio")
    assert [(d.qemu_device, d.interface) for d in attached.disks] == [
        ("vdb", "virtio"), ("vdc", "virtio"), ("vdd", "virtio")]
    argv = hvm_command(attached, "virtio", tmp_path)
    assert values(argv, "-drive")[1:] == [f"file={work}/instance-store.raw,if=virtio,format=raw,cache=unsafe",
                                          f"file={work}/volume-0-pgdata.qcow2,if=virtio,format=qcow2,cache=unsafe",
                                          f"file={work}/volume-1-logs.qcow2,if=virtio,format=qcow2,cache=unsafe"]
    assert values(argv, "-device") == ["virtio-blk-pci,drive=root,bootindex=1", "virtio-net-pci,romfile=,netdev=n0"]
    assert values(argv, "-netdev") == ["user,id=n0"] and "-smbios" not in argv  # no user-data: no metadata service
    # an IDE root: the extras are virtio, named from vda
    ide = attach_disks(img, manifest, AttachOptions(instance_store=0), tmp_path / "ide", "ide")
    assert [d.qemu_device for d in ide.disks] == ["vda", "vdb"]


def test_each_firmware_gets_fresh_disks(image: tuple[Path, Manifest], tmp_path: Path) -> None:
    """A hybrid image boots twice: the second boot must not see the instance store or volume writes of the first."""
    img, manifest = image
    user_data = tmp_path / "ud.sh"
    user_data.write_text("#!/bin/sh\n")
    opts = BootOptions(img, attach=AttachOptions(instance_store=64 * MIB, user_data=user_data))
    work = tmp_path / "work"
    work.mkdir()
    each = attach_each(opts, image_file(img), manifest, BOTH, "nvme", work)
    assert list(each) == [Firmware.BIOS, Firmware.UEFI]
    files = {f: [d.file for d in a.disks] + [str(a.imds_config)] for f, a in each.items()}
    assert files[Firmware.BIOS] == [f"{work}/instance.bios/{n}" for n in (
        "instance-store.raw", "volume-0-pgdata.qcow2", "volume-1-logs.qcow2", "imds.json")]
    assert files[Firmware.UEFI] == [p.replace("instance.bios", "instance.uefi") for p in files[Firmware.BIOS]]
    for a in each.values():  # same devices, same sources
        assert [(d.qemu_device, d.source) for d in a.disks] == [(d.qemu_device, d.source)
                                                                 for d in each[Firmware.BIOS].disks]
        assert a.imds is not None and a.imds.log is not None and Path(a.imds.log).parent == Path(a.disks[0].file).parent


NVME_PROBE = """\
IMAGEKIT-PROBE: state=running failed=
IMAGEKIT-PROBE: mount target=/ source=/dev/nvme0n1p2 fstype=ext4 label=root
IMAGEKIT-PROBE: fstab target=/var/lib/postgresql spec=LABEL=pgdata fstype=ext4
IMAGEKIT-PROBE: unit id=var-lib-postgresql.mount state=active result=success active_us=43620000 mounts=
IMAGEKIT-PROBE: mount target=/var/lib/postgresql source=/dev/nvme2n1 fstype=ext4 label=pgdata
IMAGEKIT-PROBE: unit id=postgresql.service state=active result=success active_us=54540000 mounts=/var/lib/postgresql
IMAGEKIT-PROBE: done
"""


def boot_report(**fields: Any) -> BootReport:
    base: dict[str, Any] = dict(
        image="/i.img", loader="firmware", hypervisor="qemu", variant=None, accel="tcg", accel_reason="test",
        booted=True, reason="booted", explanation="", detail="", context=[], entry=None, kernel_version=None,
        seconds_to_first_kernel_line=None, seconds_to_sentinel=1.0, seconds_qemu=2.0, seconds_prepare=0.0,
        failed_units=[], grub_errors=[], system_state="running", login_prompt=False, probe="systemd-unit",
        serial_log="/s.log")
    return BootReport(**{**base, **fields})


def test_hvm_report_fields_are_those_of_a_pv_boot(image: tuple[Path, Manifest], tmp_path: Path) -> None:
    img, manifest = image
    user_data = tmp_path / "ud.sh"
    user_data.write_text("#!/bin/sh\n")
    attached = attach_disks(img, manifest, AttachOptions(instance_store=64 * MIB, user_data=user_data),
                            tmp_path / "w", "nvme")
    w = Watcher(firmware_boot=True)
    for n, text in enumerate(NVME_PROBE.splitlines()):
        w.feed(float(n), text)
    fields = instance_fields(attached, w)
    assert set(fields) == {"attachments", "user_data", "degraded", "mounts", "missing_mounts", "services"}
    assert fields["attachments"][1] == {
        "role": "volume", "name": "pgdata", "ec2_device": "/dev/sdh", "qemu_device": "nvme2n1",
        "file": f"{tmp_path}/w/volume-0-pgdata.qcow2", "source": str(tmp_path / "db.img.pgdata.img"),
        "label": "pgdata", "mountpoint": "/var/lib/postgresql", "interface": "nvme"}
    assert fields["user_data"] == {"file": str(user_data), "fetched": False, "imdsv2": False, "requests": []}
    assert fields["missing_mounts"] == [] and fields["degraded"] is False
    [pg] = fields["services"]
    assert pg["after_mounts"] is True and pg["requires_mounts"][0]["active_at"] == 43.62
    bios = boot_report(firmware="bios", **fields)
    uefi = boot_report(firmware="uefi", **{**fields, "degraded": True, "mounts": fields["mounts"][:1]})
    both = combine([bios, uefi], BOTH)  # both booted: the degraded boot is the one reported
    assert both.degraded and both.mounts == fields["mounts"][:1] and both.firmware == "both"
    assert [(f.firmware, f.degraded) for f in both.firmwares] == [("bios", False), ("uefi", True)]
    text = bios.to_text()
    assert "  attached: nvme2n1 = /dev/sdh volume pgdata (" in text
    assert "  mount: /var/lib/postgresql from /dev/nvme2n1 (ext4, label pgdata)" in text
    assert "firmware uefi: booted (degraded), GRUB" in both.to_text()
    assert json.loads(json.dumps(both.to_json()))["attachments"][0]["qemu_device"] == "nvme1n1"


def test_hvm_volume_errors_exit_2_before_booting(tmp_path: Path) -> None:
    """A data volume the HVM image's manifest lists but that is missing: one line naming what to pass."""
    disk = make_empty_esp(tmp_path / "esp.img")
    manifest = {"layout": "gpt-uefi", "data_volumes": [
        {"name": "pgdata", "image": "esp.img.pgdata.img", "device": "/dev/sdh", "label": "pgdata"}]}
    disk.with_name("esp.img.manifest.json").write_text(json.dumps(manifest))
    proc = run_imagekit("boot", disk)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    expected = f"error: IMAGE: esp.img's data volume 'pgdata' should be {tmp_path}/esp.img.pgdata.img, which is missing"
    assert proc.stderr.startswith(expected), proc.stderr
    proc = run_imagekit("boot", disk, "--no-volumes", "--volume", tmp_path / "nope.img")
    assert proc.returncode == 2 and proc.stderr.startswith("error: --no-volumes: cannot be combined"), proc.stderr
