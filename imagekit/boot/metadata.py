"""The metadata service an EC2 instance talks to, for `imagekit boot --user-data`.

imagekit/boot/imds.py answers one HTTP exchange on stdin/stdout; QEMU's user networking runs it per guest
connection to 169.254.169.254:80 (`guestfwd=tcp:...-cmd:`). guestfwd only reaches addresses inside
slirp's own network, so the network is 169.254.0.0/16 (QEMU's DHCP still answers: the guest gets
169.254.0.15, the local-ipv4 imds.py reports). The SMBIOS UUID starts with `ec2`, so cloud-init treats
the machine as EC2 (and asks for an IMDSv2 token). Every request is logged; the report says whether
the guest fetched its user-data.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import imagekit
from imagekit.boot.imds import Config as ImdsConfig
from imagekit.boot.imds import read_log
from imagekit.boot.probe import LINUX_COMMANDS, add_kernel_arg
from imagekit.boot.pvgrub import MENU_LST

if TYPE_CHECKING:
    from imagekit.boot.prepared import Prepared

IMDS_ADDRESS = "169.254.169.254"
SLIRP_NET = "169.254.0.0/16"  # guestfwd reaches only addresses inside slirp's own network
NIC_ARG = "net.ifnames=0"
NIC_WHY = "the NIC is eth0, as the image's network config expects, not QEMU's ens2/ens3"
EC2_UUID = "ec2e1916-9099-7caf-fd21-012345abcdef"  # cloud-init asks IMDSv2 only of machines that look like EC2


def start_imds(user_data: Path | None, block_devices: dict[str, str],
               workdir: Path) -> tuple[ImdsConfig | None, Path | None]:
    """The metadata service's config (user-data, block devices, request log), when there is user-data."""
    if user_data is None:
        return None, None
    cfg = ImdsConfig(user_data=str(user_data.resolve()), block_devices=block_devices, log=str(workdir / "imds.log"))
    path = workdir / "imds.json"
    cfg.save(path)
    return cfg, path


def imds_command(config: Path) -> str:
    """The command QEMU runs per guest connection: this Python, this imagekit, one HTTP exchange."""
    root = Path(imagekit.__file__).resolve().parent.parent
    return shlex.join(["env", f"PYTHONPATH={root}", sys.executable, "-m", "imagekit.boot.imds", os.fspath(config)])


def netdev_args(config: Path, nic: str = "virtio-net-pci") -> list[str]:
    """User networking inside 169.254.0.0/16 (DHCP still works: the guest gets 169.254.0.15) with
    169.254.169.254:80 forwarded to the metadata service; `nic`: the NIC's -device driver and options."""
    cmd = imds_command(config).replace(",", ",,")  # QEMU's option syntax: a comma inside a value is doubled
    netdev = f"user,id=n0,net={SLIRP_NET},guestfwd=tcp:{IMDS_ADDRESS}:80-cmd:{cmd}"
    return ["-netdev", netdev, "-device", f"{nic},netdev=n0", "-smbios", f"type=1,uuid={EC2_UUID}"]


def user_data_report(imds: ImdsConfig | None) -> dict[str, Any] | None:
    """What the guest asked the metadata service, and whether it got the user-data."""
    if imds is None or imds.log is None:
        return None
    requests = read_log(Path(imds.log))
    fetched = any(r.get("path") in ("/latest/user-data", "/latest/user-data/") and r.get("status") == 200
                  for r in requests)
    return {"file": imds.user_data, "fetched": fetched, "imdsv2": any(r.get("token") for r in requests),
            "requests": [f"{r['method']} {r['path']} {r['status']}" for r in requests]}


def name_nic_eth0(g: Any, prepared: Prepared, network: bool) -> Prepared:
    """With a metadata service (`network`) the guest needs its network: EC2 PV's netfront NIC is eth0 (what the
    images' ifupdown configures), QEMU's virtio-net-pci would be ens2; `net.ifnames=0` keeps it eth0. Put on
    the direct loader's and the GRUB 0.97 loader's command line (QEMU's -append: GRUB 0.97 read menu.lst
    from the image itself, before any edit), menu.lst's kernel lines (PV-GRUB) or grub.cfg's linux lines (HVM)."""
    if not network:
        return prepared
    added = (*prepared.added, f"kernel command line: {NIC_ARG} ({NIC_WHY})")
    if prepared.direct is not None:
        direct = replace(prepared.direct, append=f"{NIC_ARG} {prepared.direct.append}")
        return replace(prepared, direct=direct, added=added)
    if prepared.grub097 is not None:
        booting = replace(prepared.grub097, append=f"{NIC_ARG} {prepared.grub097.append}")
        return replace(prepared, grub097=booting, added=added)
    if prepared.menu_text is not None:
        path = prepared.disk.boot_path(MENU_LST)
        assert prepared.disk.variant is not None
        shown, keywords = f"{prepared.disk.variant.legacy_root}{MENU_LST}", "kernel"
    elif prepared.grub_cfg is not None:
        path = shown = prepared.grub_cfg
        keywords = LINUX_COMMANDS
    else:
        return prepared
    text, changed = add_kernel_arg(str(g.cat(path)), NIC_ARG, keywords)
    if not changed:
        return prepared
    g.write(path, text.encode())
    note = f"{shown}: {NIC_ARG} on {changed} {keywords.rsplit('|', 1)[-1]} line(s) ({NIC_WHY})"
    return replace(prepared, added=(*prepared.added, note))
