"""Real TCG boots of the storage recipes (issue 8): PostgreSQL on its data volume, with and without the
volume, and as an HVM image on NVMe; Debian on LVM; user-data fetched from the local metadata service by
the Kumina bootstrap image.

Each recipe is built once per session (tests/conftest.py `recipe_images`; bootstraps cached by input
hash; postgres-datavol's first bootstrap takes 2-3 minutes). Measured under TCG on a shared 2-core
machine, to the sentinel: postgres with its volume ~40 s, without it ~37 s (the 20 s device timeout
included), LVM ~35 s, the Kumina bootstrap with user-data ~42 s.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from imagekit.boot.attach import AttachOptions
from imagekit.boot.harness import BootOptions, boot_image
from tests.boot.conftest import requires_kernel
from tests.util import RECIPES, run_imagekit, sha256

pytestmark = [pytest.mark.slow, requires_kernel()]

MARKER = "IMAGEKIT-USERDATA: marker 7f3a"
USER_DATA = f"""#!/bin/sh
# run once by the bootstrap image's /etc/rc.local after it fetched this from 169.254.169.254
echo "{MARKER} ran as $(id -u)" > /dev/ttyS0
"""


def boot_json(*args: str | Path) -> dict[str, Any]:
    proc = run_imagekit("boot", *args, "--json")
    assert proc.returncode in (0, 1), proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


def mount_at(report: Any, target: str) -> dict[str, Any]:
    """The probe's mount line for target; failing, the report and the serial log's probe lines say why."""
    found = [m for m in report.mounts if m["target"] == target]
    if not found:
        log = Path(report.serial_log).read_text(errors="replace")
        probe = [line for line in log.splitlines() if "IMAGEKIT" in line]
        pytest.fail(f"no mount at {target}\n{report.to_text()}\n" + "\n".join(probe))
    return dict(found[0])


def assert_postgres_after_its_mount(report: Any) -> None:
    """Both PostgreSQL units active, each started after var-lib-postgresql.mount became active."""
    services = {s["unit"]: s for s in report.services}
    assert set(services) == {"postgresql.service", "postgresql@15-main.service"}
    for s in services.values():
        assert s["state"] == "active" and s["after_mounts"] is True, report.to_text()
        [mount] = s["requires_mounts"]
        assert mount["unit"] == "var-lib-postgresql.mount" and 0 < mount["active_at"] <= s["active_at"]


def test_postgresql_starts_after_its_data_volume_is_mounted(recipe_images: Callable[[str], Path],
                                                            tmp_path: Path) -> None:
    image = recipe_images("debian-12-postgres-datavol")
    recipe = tomllib.loads((RECIPES / "debian-12-postgres-datavol.toml").read_text())
    label = recipe["volumes"][0]["label"]
    volume = image.with_name(f"{image.name}.pgdata.img")
    before = sha256(volume)
    report = boot_image(BootOptions(image, serial_log=tmp_path / "serial.log"))  # its own: workers share the image
    assert report.booted, report.to_text()
    assert [(a["qemu_device"], a["ec2_device"], a["role"], a["name"]) for a in report.attachments] == [
        ("vdb", "/dev/sdb", "instance-store", "ephemeral0"), ("vdc", "/dev/sdh", "volume", "pgdata")]
    pg = mount_at(report, "/var/lib/postgresql")
    assert (pg["source"], pg["label"], pg["fstype"]) == ("/dev/vdc", label, "ext4")
    assert report.missing_mounts == [] and not report.degraded
    assert_postgres_after_its_mount(report)
    assert "var-lib-postgresql.mount active at" in report.to_text()
    stretched = [a for a in report.added if a.startswith("/etc/fstab: x-systemd.device-timeout of LABEL=pgdata")]
    assert len(stretched) == (report.accel == "tcg"), report.added  # a slow guest waits longer for its volume
    assert sha256(volume) == before  # the guest wrote to an overlay


def test_hvm_postgresql_starts_after_its_nvme_volume_is_mounted(recipe_images: Callable[..., Path],
                                                                tmp_path: Path) -> None:
    """The same recipe built as an HVM image (gpt-uefi: OVMF, GRUB 2, NVMe root): the instance store and the
    data volume are NVMe controllers as on Nitro, the volume mounted by its label."""
    image = recipe_images("debian-12-postgres-datavol", "gpt-uefi")
    volume = image.with_name(f"{image.name}.pgdata.img")
    before = sha256(volume)
    report = boot_image(BootOptions(image, serial_log=tmp_path / "serial.log"))
    assert report.booted, report.to_text()
    assert (report.loader, report.firmware, report.disk_interface) == ("firmware", "uefi", "nvme")
    assert [(a["qemu_device"], a["interface"], a["ec2_device"], a["role"], a["name"]) for a in report.attachments] == [
        ("nvme1n1", "nvme", "/dev/sdb", "instance-store", "ephemeral0"),
        ("nvme2n1", "nvme", "/dev/sdh", "volume", "pgdata")]
    pg = mount_at(report, "/var/lib/postgresql")
    # the kernel probes NVMe controllers asynchronously: the names follow PCI order in practice, the label always
    assert pg["source"] in ("/dev/nvme1n1", "/dev/nvme2n1") and (pg["label"], pg["fstype"]) == ("pgdata", "ext4")
    assert report.missing_mounts == [] and not report.degraded and report.failed_units == []
    assert_postgres_after_its_mount(report)
    assert sha256(volume) == before  # the guest wrote to an overlay


def test_without_its_volume_the_instance_boots_degraded(recipe_images: Callable[[str], Path], tmp_path: Path) -> None:
    report = boot_json(recipe_images("debian-12-postgres-datavol"), "--no-volumes", "--serial-log", tmp_path / "s.log")
    assert report["booted"] and report["degraded"], report
    assert [a["role"] for a in report["attachments"]] == ["instance-store"]
    assert [(m["target"], m["spec"], m["unit"]) for m in report["missing_mounts"]] == [
        ("/var/lib/postgresql", "LABEL=pgdata", "var-lib-postgresql.mount")]
    assert "/var/lib/postgresql" not in {m["target"] for m in report["mounts"]}
    assert not [a for a in report["added"] if a.startswith("/etc/fstab")]  # the image's own timeout: EC2's wait
    for s in report["services"]:  # skipped (their dependency failed), never started on an empty directory
        assert s["state"] != "active" and s["active_at"] is None, s


def test_lvm_root_gets_the_probe(recipe_images: Callable[[str], Path], tmp_path: Path) -> None:
    report = boot_image(BootOptions(recipe_images("debian-12-lvm"), attach=AttachOptions(instance_store=0),
                                    serial_log=tmp_path / "serial.log"))
    assert report.booted, report.to_text()
    assert report.probe == "systemd-unit" and report.variant == "hd00"
    assert report.prepared_with == "libguestfs"  # debugfs cannot reach a logical volume: the fallback
    assert any(n.startswith("prepared with libguestfs: LVM on /dev/sda") for n in report.notes), report.notes
    mounts = {m["target"]: m for m in report.mounts}
    assert mounts["/"]["source"] == "/dev/mapper/vg0-root" and mounts["/"]["label"] == "root"
    assert mounts["/var"]["source"] == "/dev/mapper/vg0-var" and mounts["/boot"]["label"] == "boot"
    assert report.missing_mounts == [] and report.attachments == []


def test_user_data_is_fetched_from_the_metadata_service(recipe_images: Callable[[str], Path], tmp_path: Path) -> None:
    user_data = tmp_path / "user-data.sh"
    user_data.write_text(USER_DATA)
    log = tmp_path / "serial.log"
    report = boot_json(recipe_images("kumina-bootstrap"), "--user-data", user_data, "--serial-log", log)
    assert report["booted"], report
    assert f"{MARKER} ran as 0" in log.read_text(errors="replace")
    ud = report["user_data"]
    assert ud["fetched"] and ud["file"] == str(user_data), ud
    # the script asks for an IMDSv2 token first and falls back to IMDSv1 when that times out (it did once,
    # on a loaded host): either way the user-data was served
    assert "GET /latest/user-data 200" in ud["requests"], ud
    assert ud["requests"][0] in ("PUT /latest/api/token 200", "GET /latest/user-data 200"), ud


CLOUD_CONFIG = """#cloud-config
locale: C.UTF-8  # the default (en_US.UTF-8) does not exist in a minbase system: cc_locale would fail
runcmd:
  - [sh, -c, "echo IMAGEKIT-CLOUDINIT: marker 91c2 >/dev/ttyS0"]
"""


def test_cloud_init_reads_the_nocloud_seed(tmp_path: Path) -> None:
    """debian-12-pvgrub-hd0 plus cloud-init, booted with --nocloud: cloud-init finds the cidata disk and
    runs its user-data (runcmd) before the probe reports, without asking the metadata service (NoCloud
    comes before Ec2 in cloud-init's list). ~100 s to the sentinel under TCG (cloud-init is slow there)."""
    recipe = tmp_path / "debian-12-cloud-init.toml"
    text = (RECIPES / "debian-12-pvgrub-hd0.toml").read_text()
    recipe.write_text(text.replace('"openssh-server"]', '"openssh-server", "cloud-init"]', 1)
                      .replace('name = "debian-12-pvgrub-hd0"', 'name = "debian-12-cloud-init"', 1))
    (tmp_path / "files").symlink_to(RECIPES / "files")
    image = tmp_path / "cloud-init.img"
    run_imagekit("build", recipe, "-o", image, check=True)
    user_data = tmp_path / "user-data"
    user_data.write_text(CLOUD_CONFIG)
    log = tmp_path / "serial.log"
    report = boot_json(image, "--nocloud", "--user-data", user_data, "--instance-store", "0", "--serial-log", log)
    assert [(a["role"], a["qemu_device"]) for a in report["attachments"]] == [("nocloud-seed", "vdb")]
    assert "IMAGEKIT-CLOUDINIT: marker 91c2" in log.read_text(errors="replace"), report
    assert report["booted"] and report["failed_units"] == [], report
    assert report["user_data"]["requests"] == []  # it came from the seed
