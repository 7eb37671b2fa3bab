"""`imagekit kernel`: check a kernel for an EC2 target; turn a bzImage into an AKI kernel."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict

import click

from imagekit.cli.common import echo_json, verdict_of
from imagekit.util.errors import ImagekitError, UsageError
from imagekit.util.progress import Progress


@click.group("kernel")
def command() -> None:
    """Kernels for EC2: check their options, convert them for registration as an AKI.

    \b
    Example:
      imagekit kernel check /boot/config-$(uname -r) --target hvm
    """


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
    """Report each kernel option TARGET needs as present, module or missing. Exit 1 on an error.

    \b
    Example:
      imagekit kernel check /boot/config-6.1.0-18-amd64 --target pv
      imagekit kernel check /boot/vmlinuz-6.1.0-18-amd64 --target nitro --initrd
    """
    from imagekit.kernel.config import check_config, load_config

    progress = Progress.for_cli(json_output)
    with progress.stage("kernel check", source):
        config = load_config(source)
        results = check_config(config, target, fs=fs, initrd=initrd)
    errors = [r for r in results if not r.ok and r.severity == "error"]
    verdict = verdict_of(len(errors), sum(not r.ok and r.severity != "error" for r in results))
    if json_output:
        doc = {
            "source": config.source,
            "target": target,
            "fs": fs,
            "ok": not errors,
            "verdict": verdict,
            "kernel": None if config.elf is None else {
                "arch": config.elf.arch, "bits": config.elf.bits, "xen_pv": config.elf.xen_pv},
            "options": [asdict(r) for r in results],
        }
        echo_json("kernel-check", doc)
    else:
        click.echo(f"config: {config.source}")
        if config.elf is not None:
            pv = "has" if config.elf.xen_pv else "lacks"
            click.echo(f"kernel: {config.elf.arch} ELF{config.elf.bits}, {pv} the Xen PV entry note")
        click.echo(f"{'OPTION':<34} {'STATUS':<8} {'NEED':<19} {'RESULT':<7} WHY")
        for r in results:
            why = f"{r.why} ({r.note})" if r.note else r.why
            result = "ok" if r.ok else r.severity
            click.echo(f"CONFIG_{r.option:<27} {r.status:<8} {r.need:<19} {result:<7} {why}")
        click.echo(f"verdict: {verdict}")
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
@click.option("--force", is_flag=True, help="Replace OUTPUT if it exists.")
@click.option("--json", "json_output", is_flag=True, help="Print JSON.")
def aki(bzimage: str, output: str, force: bool, json_output: bool) -> None:
    """Turn BZIMAGE into a gzipped ELF vmlinux, the form a kernel registered as an AKI must have.

    \b
    Example:
      imagekit kernel aki /boot/vmlinuz-6.1.0-18-amd64 -o vmlinux-6.1.0-18.gz
    """
    from pathlib import Path

    from imagekit.cli.common import check_output
    from imagekit.kernel.bzimage import convert_to_aki

    check_output(Path(output), force)

    progress = Progress.for_cli(json_output)
    with progress.stage("kernel aki", bzimage), output_errors_reported(output):
        result = convert_to_aki(bzimage, output)
    if json_output:
        echo_json("kernel-aki", asdict(result))
        return
    if not result.xen_pv:
        progress.warn(f"{bzimage}: the vmlinux has no Xen PV entry note: it will not boot as a PV AKI")
    click.echo(result.output)
