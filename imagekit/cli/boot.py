"""`imagekit boot IMAGE`: boot-test an image under QEMU the way EC2 would boot it: PV-GRUB for PV images,
SeaBIOS and/or OVMF with the image's own GRUB 2 for HVM images.

Exit 0 when the guest reached userspace with no failed units, 1 when it did not, 2 on bad input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from imagekit.cli.common import PV_LAYOUTS, Verdict, echo_json, layout_choice
from imagekit.util.progress import Progress


@click.command("boot")
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--loader", type=click.Choice(["pvgrub", "direct", "pvgrub097"]), default=None,
              help="PV images. pvgrub097 (default): GRUB 0.97 reads menu.lst and files, Xen's loader rules judge "
                   "the kernel (an LZ4 or zstd bzImage is refused, as on EC2), QEMU boots the ELF it would start; "
                   "pvgrub: GRUB 2's legacycfg reads menu.lst and boots the kernel with linux16 (the looser check: "
                   "it boots kernels PV-GRUB refuses, and cannot boot a gzipped ELF vmlinux); direct: "
                   "kernel+initrd to QEMU.")
@click.option("--aki-version", default=None, metavar="VERSION",
              help="--loader pvgrub097: the PV-GRUB version whose menu.lst search to follow (1.03: one place; "
                   "1.04 and later: the search order); default: what `imagekit aki` registers for the layout.")
@click.option("--hypervisor", type=click.Choice(["qemu", "xen"]), default="qemu", show_default=True,
              help="xen needs a dom0 (`xl info` must work).")
@click.option("--layout", "--variant", "variant", type=layout_choice(), default=None,
              help="PV images: the layout whose PV-GRUB AKI to emulate, hd0 or hd00 (default: hd00 if the disk "
                   "has a partition table, else hd0). --variant is its old name.")
@click.option("--firmware", type=click.Choice(["bios", "uefi", "both"]), default=None,
              help="HVM images: SeaBIOS, OVMF or both in turn (default: from the manifest's layout, else the disk).")
@click.option("--disk-interface", type=click.Choice(["nvme", "virtio", "ide"]), default=None,
              help="How the disk is attached: nvme for HVM images (as on Nitro), virtio for PV images (default).")
@click.option("--accel", type=click.Choice(["kvm", "tcg"]), default=None, envvar="IMAGEKIT_ACCEL",
              show_envvar=True,
              help="Accelerator (default: probe KVM, fall back to TCG).")
@click.option("--memory", "memory_mb", type=int, default=1024, show_default=True, help="Guest memory, MiB.")
@click.option("--cpus", type=int, default=2, show_default=True, help="Guest CPUs.")
@click.option("--timeout", type=float, default=300.0, show_default=True,
              help="Seconds to wait for the probe's sentinel.")
@click.option("--silence", type=float, default=120.0, show_default=True,
              help="Stop after this many seconds without console output.")
@click.option("--serial-log", type=click.Path(path_type=Path), default=None,
              help="Where to save the serial console (default: IMAGE.serial.log).")
@click.option("--volume", "volumes", type=click.Path(path_type=Path), multiple=True,
              help="Attach this data volume image (repeatable; default: the manifest's data_volumes beside IMAGE).")
@click.option("--no-volumes", is_flag=True, help="Boot without the data volumes (the instance should still boot).")
@click.option("--instance-store", "instance_store", metavar="SIZE", default="4G", show_default=True,
              help="Scratch instance store on the second disk (sdb, ephemeral0), sparse, ext3; 0 for none.")
@click.option("--user-data", type=click.Path(path_type=Path), default=None,
              help="Serve this file as user-data from a local metadata service at http://169.254.169.254/.")
@click.option("--nocloud", is_flag=True,
              help="Also attach a NoCloud seed (FAT, label cidata: user-data, meta-data) for cloud-init images.")
@click.option("--json", "json_output", is_flag=True, help="Print the report as JSON.")
def command(image: Path, loader: str | None, hypervisor: str, variant: str | None, firmware: str | None,
            aki_version: str | None, disk_interface: str | None, accel: str | None,
            memory_mb: int, cpus: int, timeout: float, silence: float, serial_log: Path | None,
            volumes: tuple[Path, ...], no_volumes: bool, instance_store: str, user_data: Path | None,
            nocloud: bool, json_output: bool) -> None:
    """Boot-test IMAGE; exit 0 only if it reached userspace.

    \b
    Example:
      imagekit boot out/debian-12-pvgrub-hd0.img
      imagekit boot out/debian-12-hvm-uefi.img --firmware both --json
    """
    from imagekit.util.appliance import check_image_file

    check_image_file(image, "IMAGE")  # before any QEMU or appliance is started, or their modules loaded
    from imagekit.boot.attach import AttachOptions, parse_store_size
    from imagekit.boot.harness import BootOptions, boot_image
    from imagekit.recipe.layouts import Layout
    from imagekit.util.errors import UsageError

    if variant is not None and variant not in PV_LAYOUTS:
        raise UsageError(f"--layout {variant}: boot chooses a PV-GRUB AKI by layout ({', '.join(PV_LAYOUTS)}); "
                         "an HVM image boots its own GRUB 2", hint="for HVM images choose --firmware bios|uefi|both")
    attach = AttachOptions(volumes=volumes or None, no_volumes=no_volumes,
                           instance_store=parse_store_size(instance_store), user_data=user_data,
                           nocloud=nocloud)
    opts = BootOptions(image=image, loader=loader, hypervisor=hypervisor,
                       variant=Layout(variant).spec.aki if variant else None, accel=accel, memory_mb=memory_mb,
                       cpus=cpus, timeout=timeout, silence=silence, serial_log=serial_log, attach=attach,
                       firmware=firmware, disk_interface=disk_interface, aki_version=aki_version)
    report = boot_image(opts, Progress.for_cli(json_output))
    if json_output:
        echo_json("boot", {**report.to_json(), "verdict": boot_verdict(report)})
    else:
        click.echo(report.to_text())
        click.echo(f"verdict: {boot_verdict(report)}")
    raise click.exceptions.Exit(report.exit_code)


def boot_verdict(report: Any) -> Verdict:
    """pass: reached userspace; warn: reached it degraded (failed units); fail: did not boot (exit 1)."""
    if not report.booted:
        return Verdict.FAIL
    return Verdict.WARN if report.degraded else Verdict.PASS
