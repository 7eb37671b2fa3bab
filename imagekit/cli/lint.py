"""`imagekit lint IMAGE`: findings against the PV-GRUB and EC2 rules; exit 1 on any error."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from imagekit.errors import ImagekitError
from imagekit.progress import Progress


@click.command("lint")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--target", type=click.Choice(["pv", "hvm", "nitro"]), default=None,
              help="Where the image must boot: pv (PV-GRUB), hvm (Xen HVM and Nitro), nitro (NVMe, ENA, serial "
                   "console). Default: hvm for an HVM image (its manifest, else GPT or GRUB in the MBR), else pv.")
@click.option("--arch", default=None, help="x86_64 or i386 (default: the build manifest's, else x86_64).")
@click.option("--format", "fmt", type=click.Choice(["raw", "qcow2"]), default=None,
              help="How to read IMAGE: raw (what imagekit builds) or qcow2 (without a backing or data file). "
                   "Default: raw, and a file that starts with a qcow2 header is refused: say which it is.")
@click.option("--aki-version", default=None, metavar="VERSION",
              help="PV target: the PV-GRUB AKI version whose rules apply, as `imagekit boot --aki-version` (1.03: "
                   "menu.lst in one place; 1.04 and later: the search order); default: what `imagekit aki` "
                   "registers for the layout.")
@click.option("--json", "json_output", is_flag=True, help="Print the findings as JSON.")
def command(image: str, target: str | None, arch: str | None, fmt: str | None, aki_version: str | None,
            json_output: bool) -> None:
    """Check IMAGE (read-only) before uploading it. Exit 1 if any finding is an error."""
    from pathlib import Path

    from imagekit.appliance import disk_format
    from imagekit.lint import Severity, default_target, has_errors, lint_image

    path = Path(image)
    if path.is_file():
        disk_format(path, fmt)  # refused before anything else reads it
    target = target or default_target(path)
    progress = Progress.for_cli(json_output)
    findings = lint_image(image, target=target, progress=progress, arch=arch, fmt=fmt, aki_version=aki_version)
    errors = sum(f.severity is Severity.ERROR for f in findings)
    warnings = sum(f.severity is Severity.WARNING for f in findings)
    if json_output:
        click.echo(json.dumps({"image": image, "target": target, "ok": not errors,
                               "findings": [asdict(f) for f in findings]}, indent=2))
    else:
        for f in findings:
            click.echo(f"{f.severity:<7} {f.rule:<28} {f.object}")
            click.echo(f"        {f.message}")
            if f.hint:
                click.echo(f"        hint: {f.hint}")
        click.echo(f"{errors} error(s), {warnings} warning(s), {len(findings) - errors - warnings} note(s)")
    if has_errors(findings):
        raise ImagekitError(f"{image}: {errors} lint error(s) for target {target}")
