"""`imagekit lint IMAGE`: findings against the PV-GRUB and EC2 rules; exit 1 on any error."""

from __future__ import annotations

from dataclasses import asdict

import click

from imagekit.cli.common import arch_choice, echo_json, verdict_of
from imagekit.util.errors import ImagekitError
from imagekit.util.progress import Progress


@click.command("lint")
@click.argument("image", type=click.Path())
@click.option("--target", type=click.Choice(["pv", "hvm", "nitro"]), default=None,
              help="Where the image must boot: pv (PV-GRUB), hvm (Xen HVM and Nitro), nitro (NVMe, ENA, serial "
                   "console). Default: hvm for an HVM image (its manifest, else GPT or GRUB in the MBR), else pv.")
@click.option("--arch", type=arch_choice(), default=None, help="Default: the build manifest's, else x86_64.")
@click.option("--format", "fmt", type=click.Choice(["raw", "qcow2"]), default=None,
              help="How to read IMAGE: raw (what imagekit builds) or qcow2 (without a backing or data file). "
                   "Default: raw, and a file that starts with a qcow2 header is refused: say which it is.")
@click.option("--reader", type=click.Choice(["auto", "native", "guestfs"]), default="auto", show_default=True,
              help="How to read IMAGE: native (in this process, no appliance), guestfs (a libguestfs appliance), "
                   "auto (native, and libguestfs for what it cannot open: LVM, qcow2...; said on stderr).")
@click.option("--aki-version", default=None, metavar="VERSION",
              help="PV target: the PV-GRUB AKI version whose rules apply, as `imagekit boot --aki-version` (1.03: "
                   "menu.lst in one place; 1.04 and later: the search order); default: what `imagekit aki` "
                   "registers for the layout.")
@click.option("--json", "json_output", is_flag=True, help="Print the findings as JSON.")
def command(image: str, target: str | None, arch: str | None, fmt: str | None, reader: str,
            aki_version: str | None, json_output: bool) -> None:
    """Check IMAGE (read-only) before uploading it. Exit 1 if any finding is an error.

    \b
    Example:
      imagekit lint out/debian-12-pvgrub-hd0.img
      imagekit lint out/debian-12-hvm-uefi.img --target nitro --json
    """
    from pathlib import Path

    from imagekit.util.appliance import check_image_file, disk_format

    path = Path(image)
    check_image_file(path, "IMAGE", fmt)  # refused before anything else is loaded or reads it
    disk_format(path, fmt)
    from imagekit.lint import Severity, default_target, has_errors, lint_report

    target = target or default_target(path)
    progress = Progress.for_cli(json_output)
    report = lint_report(image, target=target, progress=progress, arch=arch, fmt=fmt, reader=reader,
                         aki_version=aki_version)
    findings = report.findings
    errors = sum(f.severity is Severity.ERROR for f in findings)
    warnings = sum(f.severity is Severity.WARNING for f in findings)
    verdict = verdict_of(errors, warnings)
    if json_output:
        echo_json("lint", {"image": image, "target": target, "ok": not errors, "verdict": verdict,
                           "reader": report.reader, "reader_notes": report.notes,
                           "findings": [asdict(f) for f in findings]})
    else:
        for f in findings:
            click.echo(f"{f.severity:<7} {f.rule:<28} {f.object}")
            click.echo(f"        {f.message}")
            if f.hint:
                click.echo(f"        hint: {f.hint}")
        click.echo(f"{errors} error(s), {warnings} warning(s), {len(findings) - errors - warnings} note(s)")
        click.echo(f"verdict: {verdict}")
    if has_errors(findings):
        raise ImagekitError(f"{image}: {errors} lint error(s) for target {target}")
