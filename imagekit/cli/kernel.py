"""`imagekit kernel`: check a kernel for an EC2 target; turn a bzImage into an AKI kernel."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict

import click

from imagekit.errors import ImagekitError, UsageError
from imagekit.progress import Progress


@click.group("kernel")
def command() -> None:
    """Kernels for EC2: check their options, convert them for registration as an AKI."""


@command.command("check")
@click.argument("source", metavar="CONFIG_OR_KERNEL")
@click.option("--target", type=click.Choice(["pv", "hvm", "nitro"]), default="pv", show_default=True,
              help="Where the kernel must boot.")
@click.option("--fs", default="ext4", show_default=True,
              help="Filesystem of / and /boot (ext2, ext3, ext4, xfs, btrfs, reiserfs, vfat).")
@click.option("--initrd/--no-initrd", default=None,
              help="Whether an initrd is used (modules are fine only with one). Default: unknown.")
@click.option("--json", "json_output", is_flag=True, help="Print JSON.")
def check(source: str, target: str, fs: str, initrd: bool | None, json_output: bool) -> None:
    """Report each kernel option TARGET needs as present, module or missing. Exit 1 on an error."""
    from imagekit.kernel.config import check_config, load_config

    progress = Progress.for_cli(json_output)
    with progress.stage("kernel check", source):
        config = load_config(source)
        results = check_config(config, target, fs=fs, initrd=initrd)
    errors = [r for r in results if not r.ok and r.severity == "error"]
    if json_output:
        doc = {
            "source": config.source,
            "target": target,
            "fs": fs,
            "ok": not errors,
            "kernel": None if config.elf is None else {
                "arch": config.elf.arch, "bits": config.elf.bits, "xen_pv": config.elf.xen_pv},
            "options": [asdict(r) for r in results],
        }
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(f"config: {config.source}")
        if config.elf is not None:
            pv = "has" if config.elf.xen_pv else "lacks"
            click.echo(f"kernel: {config.elf.arch} ELF{config.elf.bits}, {pv} the Xen PV entry note")
        click.echo(f"{'OPTION':<34} {'STATUS':<8} {'NEED':<19} {'RESULT':<7} WHY")
        for r in results:
            verdict = "ok" if r.ok else r.severity
            why = f"{r.why} ({r.note})" if r.note else r.why
            click.echo(f"CONFIG_{r.option:<27} {r.status:<8} {r.need:<19} {verdict:<7} {why}")
    if errors:
        names = ", ".join(f"CONFIG_{r.option}" for r in errors)
        raise ImagekitError(f"{source}: not ready for {target}: {names}")


@contextmanager
def output_errors_reported(output: str) -> Iterator[None]:
    """An OSError while writing -o (unwritable, a directory, full) as one line naming the file. Exit 2."""
    try:
        yield
    except ImagekitError:
        raise
    except OSError as exc:
        reason = exc.strerror or str(exc)
        hint = ("-o names the file to write, e.g. -o DIR/vmlinux.gz" if os.path.isdir(output)
                else "choose a directory you can write to")
        raise UsageError(f"kernel aki: cannot write -o {output}: {reason}", hint=hint) from exc


@command.command("aki")
@click.argument("bzimage", metavar="BZIMAGE")
@click.option("-o", "--output", required=True, help="Where to write the gzipped vmlinux.")
@click.option("--json", "json_output", is_flag=True, help="Print JSON.")
def aki(bzimage: str, output: str, json_output: bool) -> None:
    """Turn BZIMAGE into a gzipped ELF vmlinux, the form a kernel registered as an AKI must have."""
    from imagekit.kernel.bzimage import convert_to_aki

    progress = Progress.for_cli(json_output)
    with progress.stage("kernel aki", bzimage), output_errors_reported(output):
        result = convert_to_aki(bzimage, output)
    if json_output:
        click.echo(json.dumps(asdict(result), indent=2))
        return
    if not result.xen_pv:
        progress.warn(f"{bzimage}: the vmlinux has no Xen PV entry note: it will not boot as a PV AKI")
    click.echo(result.output)
