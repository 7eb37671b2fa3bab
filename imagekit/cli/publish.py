"""`imagekit publish`: upload an image, register it as an AMI, copy it to other regions, record it.

stdout: the AMI id of each region (`region image-id`), or --json; progress on stderr.
--dry-run prints every AWS call it would make (describe calls are assumed to find nothing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from imagekit.cli.common import arch_choice, layout_choice, record_option
from imagekit.publish.uploaders import DEFAULT_METHOD, UPLOADERS, make_uploader
from imagekit.recipe.layouts import BootMode, Virtualization
from imagekit.util.errors import ImagekitError, UsageError


def _tags(values: tuple[str, ...]) -> dict[str, str]:
    tags = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise UsageError(f"--tag {value!r}: expected KEY=VALUE")
        if key.lower().startswith("aws:"):
            raise UsageError(f"--tag {value!r}: keys starting with aws: are reserved")
        tags[key] = val
    return tags


def _regions(value: str | None) -> tuple[str, ...]:
    return tuple(r.strip() for r in (value or "").split(",") if r.strip())


def _accounts(values: tuple[str, ...]) -> tuple[str, ...]:
    for account in values:
        if not (account.isdigit() and len(account) == 12):
            raise UsageError(f"--share-with {account!r}: an AWS account id is 12 digits")
    return values


@click.command("publish")
@click.argument("images", metavar="IMAGE...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--name", required=True, help="AMI name (3-128 chars); publishing the same name again is a no-op. "
              "{arch} becomes the image's architecture; several images (a release) need it.")
@click.option("--description", default="", help="AMI description.")
@click.option("--region", help="Region to upload to and register in (default: env AWS_REGION, then "
              "AWS_DEFAULT_REGION, then the profile's region).")
@click.option("--profile", help="AWS profile (default: env AWS_PROFILE).")
@click.option("--endpoint-url", help="Send every AWS call here, e.g. `imagekit local-cloud` (env AWS_ENDPOINT_URL).")
@click.option(
    "--method",
    type=click.Choice(list(UPLOADERS)),
    default=DEFAULT_METHOD,
    show_default=True,
    help="How the image becomes a snapshot.",
)
@click.option("--bucket", help="S3 bucket in --region for --method import-snapshot.")
@click.option("--s3-prefix", default="imagekit-import", show_default=True, help="Key prefix of the temporary object.")
@click.option("--keep-s3-object", is_flag=True, help="Keep the uploaded S3 object after the import.")
@click.option("--role-name", default="vmimport", show_default=True, help="Service role ImportSnapshot uses.")
@click.option(
    "--manifest",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Build manifest (default IMAGE.manifest.json; without one the image is inspected).",
)
@click.option("--arch", type=arch_choice(), help="Architecture when there is no manifest (default x86_64).")
@click.option("--layout", type=layout_choice(), help="The image's layout when there is no manifest.")
@click.option("--virtualization", type=click.Choice([v.value for v in Virtualization]), help="Override the manifest's.")
@click.option(
    "--kernel-id",
    default="auto",
    show_default=True,
    help="PV only: the PV-GRUB AKI, or auto (look pv-grub-hd0_1.05 up by name, then imagekit's tables).",
)
@click.option("--boot-mode", type=click.Choice([m.value for m in BootMode]), help="HVM only.")
@click.option("--ena/--no-ena", default=None, help="HVM: ENA support (default on).")
@click.option("--sriov/--no-sriov", default=None, help="HVM: SR-IOV (simple) support (default on).")
@click.option("--imds-support", type=click.Choice(["v2.0", "optional"]),
              help="HVM: v2.0 requires IMDSv2 on instances (the default); optional leaves IMDSv1 allowed.")
@click.option("--tpm", is_flag=True, help="HVM with --boot-mode uefi: NitroTPM v2.0.")
@click.option("--volume-size", type=int, help="Root volume GiB (default: the image size rounded up).")
@click.option("--volume-type", help="Root volume type (default gp2 for PV, gp3 for HVM).")
@click.option("--copy-to", help="Comma-separated regions to copy the AMI to.")
@click.option("--public", is_flag=True, help="Make the AMI (and its snapshots) public.")
@click.option("--share-with", multiple=True, help="Account id to share with (repeatable).")
@click.option("--tag", "tags", multiple=True, help="KEY=VALUE on the snapshots and images (repeatable).")
@click.option(
    "--workers", type=click.IntRange(1, 256), default=16, show_default=True, help="Concurrent EBS block uploads."
)
@click.option("--timeout", type=float, default=7200, show_default=True, help="Seconds any one wait may take.")
@click.option("--poll-interval", type=float, default=5.0, show_default=True, help="Seconds between status polls.")
@record_option("Publish record to update (default ~/.local/share/imagekit/published.json).")
@click.option(
    "--lint/--no-lint",
    "lint",
    default=True,
    show_default=True,
    help="Lint the image (imagekit lint) before anything is uploaded; errors stop the publish.",
)
@click.option("--dry-run", is_flag=True, help="Print every AWS call it would make; send none.")
@click.option("--json", "json_output", is_flag=True, help="Print the publish record as JSON.")
def command(images: tuple[Path, ...], **opts: Any) -> None:
    """Publish IMAGE as an AMI (EBS direct or S3 + ImportSnapshot), idempotently, in every region asked for.
    Several IMAGEs are a release: one image per architecture, each published with its own manifest's arch
    under --name with {arch} replaced, all checked and linted before the first upload.

    \b
    Example:
      imagekit publish out/debian-12-pvgrub-hd0.img --name debian-12-2026-12-01 --region us-east-1
      imagekit publish out/debian-12-pvgrub-hd0.img --name debian-12-2026-12-01 --dry-run --json
      imagekit publish out/x86.img out/arm64.img --name 'debian-12-{arch}-2026-12-01' --region us-east-1
    """
    from imagekit.publish.awserrors import aws_errors_reported
    from imagekit.util.appliance import check_image_file
    from imagekit.util.progress import Progress

    for image in images:
        check_image_file(image, "IMAGE")  # before any AWS call, lint or upload
    progress = Progress.for_cli(opts["json_output"] or opts["dry_run"])
    with aws_errors_reported():
        if len(images) == 1:
            # {arch} in the name: the facts decide it (read once, handed on); else read after the name's check
            facts = facts_for(images[0], opts) if "{arch}" in opts["name"] else None
            name = opts["name"].replace("{arch}", ec2_arch(facts)) if facts is not None else opts["name"]
            run_publish(images[0], {**opts, "name": name}, progress, facts)
        else:
            run_release(images, opts, progress)


def facts_for(image: Path, opts: dict[str, Any]) -> Any:
    """The image's facts: its build manifest (--manifest, else IMAGE.manifest.json), or the image inspected,
    with the options that override them."""
    from imagekit.publish.facts import image_facts

    return image_facts(image, opts["manifest"], arch=opts["arch"], layout=opts["layout"],
                       virtualization=opts["virtualization"], boot_mode=opts["boot_mode"])


def ec2_arch(facts: Any) -> str:
    """The EC2 architecture the image is published as (what `{arch}` in --name becomes)."""
    from imagekit.recipe.arch import spec_named

    return spec_named(facts.arch).ec2


RELEASE_REFUSED = ("manifest", "arch", "layout", "virtualization")  # each image's own manifest decides these


def run_release(images: tuple[Path, ...], opts: dict[str, Any], progress: Any) -> None:
    """Several images under one name template: every request built, preflighted and linted first, then each
    published in turn (each idempotent by its name); one record per AMI, each naming the release."""
    from imagekit.publish.pipeline import publish, to_record
    from imagekit.publish.preflight import preflight
    from imagekit.publish.release import release_names

    for key in RELEASE_REFUSED:
        if opts[key] is not None:
            raise UsageError(f"--{key}: not with several IMAGEs (a release takes each image's own build manifest)")
    facts = [facts_for(image, opts) for image in images]
    names = release_names(opts["name"], [ec2_arch(f) for f in facts])
    planned = [(image, *build_request(image, {**opts, "name": name}, f))
               for image, name, f in zip(images, names, facts, strict=True)]
    if not opts["dry_run"]:
        progress.info(settings_line(planned[0][3]) + f"; release {opts['name']!r}: " + ", ".join(names))
    checked = []
    for image, request, clients, config in planned:
        request, _ = preflight(clients, request, progress)
        if opts["lint"]:
            lint_before_upload(request.facts, progress)
        checked.append((image, request, clients, config))
    if opts["dry_run"]:
        release_dry_run(checked, opts, progress)
        return
    records, errors = [], []
    for image, request, clients, _ in checked:
        result = publish(clients, request, progress)
        record = {**to_record(request, result), "release": opts["name"]}
        save_record(image, record, opts["record_path"])
        records.append(record)
        errors += [f"{request.register.name} {r}: {m}" for r, m in sorted(result.errors.items())]
    print_release(opts["name"], records, opts["json_output"])
    if errors:
        raise ImagekitError(f"copy failed in {len(errors)} region(s): {'; '.join(errors)}",
                            hint="re-run the same command: images and regions already done are left as they are")


def release_dry_run(checked: list[Any], opts: dict[str, Any], progress: Any) -> None:
    from imagekit.publish.aws import calls_json, render_calls
    from imagekit.publish.pipeline import publish

    shown = []
    for image, request, clients, config in checked:
        publish(clients, request, progress)
        shown.append({"image": str(image), "name": request.register.name, "settings": settings_line(config),
                      "calls": calls_json(clients.calls)})
        if not opts["json_output"]:
            click.echo(f"# {image}: {request.register.name} ({settings_line(config)})", err=True)
            for line in render_calls(clients.calls):
                click.echo(line)
    if opts["json_output"]:
        from imagekit.cli.common import echo_json

        echo_json("publish-release-dry-run", {"release": opts["name"], "images": shown}, default=str)


def print_release(template: str, records: list[dict[str, Any]], json_output: bool) -> None:
    if json_output:
        from imagekit.cli.common import echo_json

        echo_json("publish-release", {"release": template, "images": records}, sort_keys=True)
        return
    for record in records:
        for region, entry in record["regions"].items():
            click.echo(f"{region}\t{entry['image_id']}\t{record['name']}")
        report_snapshot(record.get("snapshot"))


def run_publish(image: Path, opts: dict[str, Any], progress: Any, facts: Any = None) -> None:
    from imagekit.publish.pipeline import publish, to_record
    from imagekit.publish.preflight import preflight

    request, clients, config = build_request(image, opts, facts)
    if opts["dry_run"]:
        click.echo(settings_line(config), err=True)  # stdout is the calls; the progress display is quiet
    else:
        progress.info(settings_line(config))
    request, _ = preflight(clients, request, progress)  # regions and credentials, before lint or upload
    if opts["lint"]:
        lint_before_upload(request.facts, progress)
    result = publish(clients, request, progress)
    record = to_record(request, result)
    if opts["dry_run"]:
        from imagekit.publish.aws import calls_json, render_calls

        if opts["json_output"]:
            from imagekit.cli.common import echo_json

            echo_json("publish-dry-run", {"settings": settings_line(config), "calls": calls_json(clients.calls)},
                      default=str)
            return
        for line in render_calls(clients.calls):
            click.echo(line)
        return
    print_result(record, opts["json_output"])
    save_record(image, record, opts["record_path"])
    if result.errors:
        lines = "; ".join(f"{r}: {m}" for r, m in sorted(result.errors.items()))
        raise ImagekitError(
            f"copy failed in {len(result.errors)} region(s): {lines}",
            hint="re-run the same command: regions already done are left as they are",
        )


def settings_line(config: Any) -> str:
    """`AWS: region eu-west-1 (AWS_REGION), profile dev (AWS_PROFILE)`: what this run talks to, and why."""
    profile = config.profile if config.profile.value else "default"
    endpoint = f", endpoint {config.endpoint_url}" if config.endpoint_url.value else ""
    return f"AWS: region {config.region}, profile {profile}{endpoint}"


def print_result(record: dict[str, Any], json_output: bool) -> None:
    if json_output:
        from imagekit.cli.common import echo_json

        echo_json("publish", record, sort_keys=True)
        return
    for region, entry in record["regions"].items():
        click.echo(f"{region}\t{entry['image_id']}")
    report_snapshot(record.get("snapshot"))


def report_snapshot(snapshot: dict[str, Any] | None) -> None:
    """On stderr (stdout is the AMI ids): which snapshot holds the image, when it was not uploaded now."""
    if not snapshot or not snapshot.get("reused"):
        return
    stand_in = snapshot["made_by"] != snapshot["requested"]
    asked = f", standing in for the {snapshot['requested']} upload asked for" if stand_in else ""
    click.echo(f"snapshot {snapshot['id']}: reused, made by {snapshot['made_by']}{asked}", err=True)


def build_request(image: Path, opts: dict[str, Any], facts: Any = None) -> tuple[Any, Any, Any]:
    """The publish request for the image (`facts`: already read by the caller, else read here), its clients
    and the AWS settings, every option checked before any AWS call."""
    from imagekit.publish.aws import AwsClients, DryRunClients
    from imagekit.publish.awsconfig import require_region, resolve
    from imagekit.publish.pipeline import PublishRequest
    from imagekit.publish.regions import Sharing
    from imagekit.publish.register import RegisterOptions, check_combination, check_name

    check_name(opts["name"])
    if facts is None:
        facts = facts_for(image, opts)
    uploader = make_uploader(opts["method"], opts)  # its settings checked before any AWS call
    config = resolve(opts["region"], opts["profile"], opts["endpoint_url"])  # --dry-run too
    region = require_region(config)
    clients: Any = DryRunClients() if opts["dry_run"] else AwsClients.from_config(config, opts["workers"] + 8)
    pv = facts.virtualization.value == "paravirtual"
    register = RegisterOptions(
        name=opts["name"],
        description=opts["description"],
        kernel_id=None,
        ena=opts["ena"],
        sriov=opts["sriov"],
        boot_mode=BootMode(opts["boot_mode"]) if opts["boot_mode"] and not pv else None,
        imds_v2={"v2.0": True, "optional": False}.get(opts["imds_support"] or ""),
        tpm=opts["tpm"],
        volume_size_gib=opts["volume_size"],
        volume_type=opts["volume_type"],
    )
    if pv and opts["boot_mode"]:
        raise UsageError("--boot-mode is for HVM images; this image is paravirtual (PV-GRUB)")
    check_combination(facts, register)  # before lint and before anything is sent
    request = PublishRequest(
        facts=facts,
        register=register,
        region=region,
        uploader=uploader,
        kernel=opts["kernel_id"] if pv else None,
        copy_to=_regions(opts["copy_to"]),
        sharing=Sharing(public=opts["public"], accounts=_accounts(opts["share_with"])),
        tags=_tags(opts["tags"]),
        timeout=opts["timeout"],
        poll_interval=opts["poll_interval"],
    )
    if not pv and opts["kernel_id"] not in (None, "auto"):
        raise UsageError("--kernel-id is for paravirtual images; HVM images boot their own bootloader")
    return request, clients, config


def lint_before_upload(facts: Any, progress: Any) -> None:
    """Refuse to spend an upload on an image `imagekit lint` finds errors in."""
    from imagekit.lint import Severity, lint_image

    target = "pv" if facts.virtualization.value == "paravirtual" else "hvm"
    findings = lint_image(facts.path, target=target, progress=progress, arch=facts.arch)
    errors = [f for f in findings if f.severity is Severity.ERROR]
    for f in findings:
        if f.severity is not Severity.ERROR:
            progress.warn(f"lint: {f.rule}: {f.object}: {f.message}")
    if errors:
        shown = "; ".join(f"{f.rule}: {f.message}" for f in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise ImagekitError(
            f"lint found {len(errors)} error(s) in {facts.path} for --target {target}: {shown}{more}",
            hint=f"see `imagekit lint {facts.path} --target {target}`; --no-lint publishes anyway",
        )


def save_record(image: Path, record: dict[str, Any], store: Path | None) -> None:
    from imagekit.publish.record import add_record, default_store, publish_manifest_path, write_json

    for path, write in ((publish_manifest_path(image), lambda p: write_json(p, record)),
                        (store or default_store(), lambda p: add_record(p, record))):
        try:
            write(path)
        except OSError as exc:
            raise ImagekitError(
                f"publish record: cannot write {exc.filename or path}: {exc.strerror or exc}",
                hint="the AMIs are published (ids above); fix the path (--record, IMAGEKIT_PUBLISHED, the image's "
                "directory) and re-run the same command: nothing is uploaded again",
            ) from exc
