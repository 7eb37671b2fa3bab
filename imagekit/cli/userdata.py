"""`imagekit userdata render TEMPLATE.j2 --var k=v [--gzip] [-o OUT]` and `... render --check FILE`.

stdout: the user-data itself (without -o), or with -o / --check a one-line summary (or --json);
notes on stderr. Over EC2's 16384-byte limit: exit 1, saying by how much.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from imagekit.cli.common import echo_json
from imagekit.util.errors import UsageError


@click.group("userdata")
def command() -> None:
    """EC2 user-data: render a template within EC2's 16 KB limit, or check a file.

    \b
    Example:
      imagekit userdata render recipes/userdata/kumina-install.sh.j2 --var hostname=db1 \\
        --var puppet_cert=@db1.pem --gzip -o ud.gz
    """


def _summary(name: str, ud: object, json_output: bool) -> None:
    from imagekit.boot.userdata import LIMIT, UserData

    assert isinstance(ud, UserData)
    if json_output:
        echo_json("userdata", {"file": name, "bytes": ud.size, "raw_bytes": ud.raw_size, "gzip": ud.gzipped,
                               "kind": ud.kind, "limit": LIMIT, "spare": ud.spare})
    else:
        click.echo(f"{name}: {ud.size} bytes ({ud.kind}), {ud.spare} to spare of {LIMIT}")


@command.command("render")
@click.argument("template", type=click.Path(path_type=Path, dir_okay=False), required=False)
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE",
              help="A template variable (repeatable); NAME=@FILE reads the value from FILE.")
@click.option("--gzip", "use_gzip", is_flag=True, help="gzip the output (it must still fit in 16384 bytes).")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the user-data here (default: stdout).")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@click.option("--check", "check_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Only check FILE (size, kind, cloud-config YAML); render nothing.")
@click.option("--json", "json_output", is_flag=True, help="Print a JSON summary (with -o or --check).")
def render(template: Path | None, variables: tuple[str, ...], use_gzip: bool, output: Path | None, force: bool,
           check_file: Path | None, json_output: bool) -> None:
    """Render TEMPLATE (jinja2: a shell script or #cloud-config) into EC2 user-data.

    \b
    Example:
      imagekit userdata render boot.sh.j2 --var greeting=hello --gzip -o ud.gz
    """
    from imagekit.boot.userdata import check_cloud_config, check_data, encode, parse_vars, render_template
    from imagekit.util.atomic import write_bytes

    if check_file is not None:
        if template is not None or variables or use_gzip or output is not None:
            raise UsageError("--check FILE takes no TEMPLATE, --var, --gzip or -o")
        try:
            data = check_file.read_bytes()
        except OSError as exc:
            raise UsageError(f"--check: cannot read {check_file}: {exc.strerror}") from None
        _summary(str(check_file), check_data(data, str(check_file)), json_output)
        return
    if template is None:
        raise UsageError("give a TEMPLATE to render, or --check FILE")
    if output is not None:
        from imagekit.cli.common import check_output

        check_output(output, force)
    text = render_template(template, parse_vars(variables))
    ud = encode(text, use_gzip=use_gzip, name=str(template))
    if ud.kind.endswith("cloud-config") or ud.kind == "gzip (cloud-config)":
        check_cloud_config(text.encode(), f"{template} (rendered)")
    if output is None:
        if json_output:
            raise UsageError("--json needs -o OUT (stdout carries the user-data)")
        if ud.gzipped and sys.stdout.isatty():
            raise UsageError("--gzip output is binary: write it with -o OUT or redirect stdout")
        sys.stdout.buffer.write(ud.data)
        sys.stdout.flush()
        click.echo(f"{ud.size} bytes ({ud.kind}), {ud.spare} to spare", err=True)
        return
    write_bytes(output, ud.data)
    _summary(str(output), ud, json_output)


@command.command("check")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "json_output", is_flag=True, help="Print a JSON summary.")
@click.pass_context
def check(ctx: click.Context, file: Path, json_output: bool) -> None:
    """Check FILE as user-data (same as `render --check FILE`).

    \b
    Example:
      imagekit userdata check ud.gz --json
    """
    ctx.invoke(render, template=None, variables=(), use_gzip=False, output=None, force=False, check_file=file,
               json_output=json_output)
