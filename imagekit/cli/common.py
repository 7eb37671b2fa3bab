"""What every command shares: the choice lists, the options every command takes (-v, --debug, before or
after its name), the JSON envelope (a `schema` field), the verdict words and the output-file rules.

Kept free of heavy imports: `imagekit --help` loads it.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import click

from imagekit.recipe.arch import Arch
from imagekit.recipe.layouts import LAYOUT_NAMES, PV_LAYOUT_NAMES
from imagekit.util.errors import UsageError

# One list each, used by every option of that name (build, lint, aki, boot); the layouts are the table's.
LAYOUTS = LAYOUT_NAMES
PV_LAYOUTS = PV_LAYOUT_NAMES  # the layouts a PV-GRUB AKI reads
ARCHES = tuple(a.value for a in Arch)  # the arch table's

# Suffixes that name a disk format imagekit does not write; `-o x.qcow2` is refused, never a raw file so named.
FOREIGN_FORMATS = (".qcow2", ".qcow", ".vmdk", ".vdi", ".vhd", ".vhdx")


class Verdict(StrEnum):
    """The one verdict vocabulary of lint, boot and kernel check (JSON `verdict`, the text's last line)."""

    PASS = "pass"  # nothing wrong
    WARN = "warn"  # usable, with warnings (lint, kernel check) or degraded (boot)
    FAIL = "fail"  # errors: exit 1


def verdict_of(errors: int, warnings: int) -> Verdict:
    if errors:
        return Verdict.FAIL
    return Verdict.WARN if warnings else Verdict.PASS


class ArchChoice(click.Choice):
    """x86_64, i386 or arm64; Debian's and other usual names (amd64, i686, aarch64) are taken for them."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from imagekit.pvgrub.aki import ARCH_ALIASES

        if isinstance(value, str):
            value = ARCH_ALIASES.get(value.strip().lower(), value)
        return super().convert(value, param, ctx)


def layout_choice() -> click.Choice:
    return click.Choice(LAYOUTS)


def arch_choice() -> click.Choice:
    return ArchChoice(ARCHES)


def record_option(help_text: str) -> Callable[[Any], Any]:
    """`--record PATH` of publish and published: the publish record (IMAGEKIT_PUBLISHED)."""
    return click.option("--record", "record_path", type=click.Path(path_type=Path, dir_okay=False),
                        envvar="IMAGEKIT_PUBLISHED", show_envvar=True, help=help_text)


def schema(command: str) -> str:
    """`imagekit.lint/1`: the name and version of a command's JSON document."""
    return f"imagekit.{command}/1"


def echo_json(command: str, doc: dict[str, Any], indent: int | None = 2, **dumps: Any) -> None:
    """Print a command's JSON result on stdout, its `schema` first."""
    click.echo(json.dumps({"schema": schema(command), **doc}, indent=indent, **dumps))


def check_output(path: Path, force: bool, option: str = "-o", disk: bool = False) -> None:
    """Refuse to replace an existing output without --force, and (a `disk` image) a name that promises
    another format than raw."""
    if disk and path.suffix.lower() in FOREIGN_FORMATS:
        raise UsageError(f"{option} {path}: imagekit writes raw images; a {path.suffix} name would be a raw file "
                         "in disguise", hint=f"write {path.with_suffix('.img')}, then: qemu-img convert -f raw "
                                             f"-O {path.suffix.lstrip('.')} {path.with_suffix('.img')} {path}")
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a directory", hint=f"{option} names the file to write, e.g. "
                                                                  f"{option} {path / 'NAME'}")
    if path.exists() and not force:
        raise UsageError(f"{option} {path}: already exists", hint="pass --force to replace it")


def configure_logging(verbose: int, debug: bool) -> None:
    level = logging.DEBUG if debug or verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(level)


@dataclass
class App:
    """The group's settings, passed to every command (click's ctx.obj)."""

    verbose: int = 0
    debug: bool = False


def _app(ctx: click.Context) -> App:
    app = ctx.find_object(App)
    if app is None:  # a command invoked on its own (tests): its own settings
        app = ctx.ensure_object(App)
    return app


def _verbose(ctx: click.Context, _param: click.Parameter, value: int) -> None:
    if value:
        app = _app(ctx)
        app.verbose += value
        configure_logging(app.verbose, app.debug)


def _debug(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        app = _app(ctx)
        app.debug = True
        configure_logging(app.verbose, app.debug)


def add_common_options(cmd: click.Command) -> click.Command:
    """Give `cmd` (and a group's subcommands) -v and --debug after its name, and show every env var."""
    names = {n for p in cmd.params for n in getattr(p, "opts", [])}
    if "--debug" not in names:
        cmd.params.append(click.Option(["-v", "--verbose"], count=True, expose_value=False, callback=_verbose,
                                       help="Show the commands imagekit runs (-vv: more); also before the command."))
        cmd.params.append(click.Option(["--debug"], is_flag=True, expose_value=False, callback=_debug,
                                       help="Show everything, and tracebacks on errors; also before the command."))
    for p in cmd.params:
        if isinstance(p, click.Option) and p.envvar:
            p.show_envvar = True
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            add_common_options(sub)
    return cmd


def json_defaults(group: click.Group, ctx: click.Context) -> dict[str, Any]:
    """A default_map turning on every subcommand's --json (for `imagekit --json COMMAND`)."""
    out: dict[str, Any] = {}
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        if isinstance(cmd, click.Group):
            out[name] = json_defaults(cmd, ctx)
        elif cmd is not None and any(p.name == "json_output" for p in cmd.params):
            out[name] = {"json_output": True}
    return out
