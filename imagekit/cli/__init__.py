"""The `imagekit` command line: one module per command, registered here, loaded lazily.

Errors are caught in one place (`main`): an ImagekitError prints `error: ...` (and a hint) and
exits with its code; a traceback appears only with --debug.
"""

from __future__ import annotations

import importlib
import sys

import click

from imagekit.cli.common import App, add_common_options, configure_logging, json_defaults
from imagekit.util.errors import ImagekitError

# command name -> module under imagekit.cli that defines `command`
COMMANDS: dict[str, str] = {
    "aki": "aki",
    "boot": "boot",
    "build": "build",
    "diff": "diff",
    "digest": "digest",
    "kernel": "kernel",
    "lint": "lint",
    "local-cloud": "local_cloud", "publish": "publish", "published": "published",
    "userdata": "userdata",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        module = COMMANDS.get(name)
        if module is None:
            return None
        cmd = importlib.import_module(f"imagekit.cli.{module}").command
        assert isinstance(cmd, click.Command)
        return add_common_options(cmd)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="Show the commands imagekit runs (-vv: more).")
@click.option("--debug", is_flag=True, help="Show everything, and tracebacks on errors.")
@click.option("--json", "json_output", is_flag=True, help="Print the command's result as JSON (no progress).")
@click.version_option(package_name="imagekit")
@click.pass_context
def cli(ctx: click.Context, verbose: int, debug: bool, json_output: bool) -> None:
    """Build, lint, boot-test and publish Linux machine images for Amazon EC2.

    -v, --debug and --json may come before the command or after it.

    \b
    Example:
      imagekit build recipes/debian-12-pvgrub-hd00.toml -o out/debian-12-pvgrub-hd00.img
      imagekit lint out/debian-12-pvgrub-hd00.img
    """
    ctx.obj = App(verbose=verbose, debug=debug)
    configure_logging(verbose, debug)
    if json_output:
        assert isinstance(ctx.command, click.Group)
        ctx.default_map = json_defaults(ctx.command, ctx)


def main() -> None:
    debug = "--debug" in sys.argv[1:]
    try:
        rc = cli.main(standalone_mode=False)
    except ImagekitError as exc:
        if debug:
            raise
        click.echo(f"error: {exc.message}", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if isinstance(exc, click.UsageError) else exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(rc if isinstance(rc, int) else 0)
