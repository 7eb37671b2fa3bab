"""Issue 15 item 9: one CLI surface. Every command takes -v, --debug and --json before or after its name,
shares the --layout and --arch lists, shows its environment variables, has an example, refuses to
overwrite an output without --force, prints JSON with a `schema` and judges with one verdict vocabulary."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from imagekit.cli import COMMANDS, cli
from imagekit.cli.common import ARCHES, LAYOUTS, Verdict
from imagekit.recipe.model import Layout
from imagekit.util.errors import ImagekitError


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def exit_code(result: Result) -> int:
    """The exit status `imagekit.cli.main` gives: an ImagekitError's own (2 for bad input)."""
    return result.exception.exit_code if isinstance(result.exception, ImagekitError) else result.exit_code


def all_commands() -> Iterator[tuple[str, click.Command]]:
    """(`imagekit NAME [SUB]`, command) for every command and subcommand, loaded as the CLI loads them."""
    ctx = click.Context(cli)
    for name in COMMANDS:
        cmd = cli.get_command(ctx, name)
        assert cmd is not None
        yield name, cmd
        if isinstance(cmd, click.Group):
            for sub_name, sub in cmd.commands.items():
                yield f"{name} {sub_name}", sub


def options(cmd: click.Command) -> dict[str, click.Option]:
    return {o: p for p in cmd.params if isinstance(p, click.Option) for o in p.opts}


def test_verbose_debug_and_json_go_before_or_after_the_command() -> None:
    after = invoke("aki", "--region", "us-east-1", "--json", "-v", "--debug")
    assert after.exit_code == 0, after.output
    assert json.loads(after.stdout)["id"] == "aki-5c21674b"
    assert logging.getLogger().level == logging.DEBUG
    before = invoke("-v", "--json", "aki", "--region", "us-east-1")
    assert before.exit_code == 0, before.output
    assert json.loads(before.stdout) == json.loads(after.stdout)
    nested = invoke("--json", "kernel", "aki", "--help")  # a group's subcommands get --json's default too
    assert nested.exit_code == 0
    for name, cmd in all_commands():
        if not isinstance(cmd, click.Group):
            assert {"-v", "--verbose", "--debug", "--json"} <= set(options(cmd)), name


def test_one_choice_list_for_layout_and_arch() -> None:
    assert tuple(layout.value for layout in Layout) == LAYOUTS
    seen = set()
    for name, cmd in all_commands():
        for opt, want in (("--layout", LAYOUTS), ("--arch", ARCHES)):
            if opt in options(cmd):
                kind = options(cmd)[opt].type
                assert isinstance(kind, click.Choice) and tuple(kind.choices) == want, (name, opt)
                seen.add((name, opt))
    assert {("build", "--layout"), ("boot", "--layout"), ("aki", "--layout"), ("aki", "--arch"),
            ("lint", "--arch")} <= seen
    assert invoke("aki", "--region", "us-east-1", "--arch", "amd64").stdout.strip() == "aki-5c21674b"
    refused = invoke("boot", "--help")
    assert "--layout, --variant" in refused.stdout


def test_env_vars_are_shown_in_help() -> None:
    with_env = 0
    for name, cmd in all_commands():
        for opt in set(options(cmd).values()):
            if opt.envvar:
                with_env += 1
                assert opt.show_envvar, (name, opt.name)
                help_text = " ".join(invoke(*name.split(), "--help").stdout.split())
                assert f"env var: {opt.envvar}" in help_text, (name, opt.envvar)
    assert with_env >= 4  # boot --accel, build --kernels-dir, local-cloud, publish/published --record


def test_every_command_has_an_example() -> None:
    for name, _cmd in all_commands():
        text = invoke(*name.split(), "--help").stdout
        assert "Example:" in text, name
        after = text.split("Example:", 1)[1]
        assert f"imagekit {name.split()[0]}" in after, name


@pytest.mark.parametrize("argv", [
    ("build", "recipes/none.toml", "-o", "{out}"),
    ("kernel", "aki", "bzImage", "-o", "{out}"),
    ("userdata", "render", "t.j2", "-o", "{out}"),
])
def test_an_existing_output_needs_force(tmp_path: Path, argv: tuple[str, ...]) -> None:
    out = tmp_path / "existing.img"
    out.write_bytes(b"keep me")
    result = invoke(*(a.replace("{out}", str(out)) for a in argv))
    assert exit_code(result) == 2
    assert f"-o {out}: already exists" in str(result.exception)
    assert out.read_bytes() == b"keep me"


def test_a_qcow2_output_name_is_refused(tmp_path: Path) -> None:
    result = invoke("build", "recipes/debian-12-pvgrub-hd0.toml", "-o", tmp_path / "x.qcow2")
    assert exit_code(result) == 2
    assert "imagekit writes raw images" in str(result.exception)
    assert not (tmp_path / "x.qcow2").exists()


def test_json_has_a_schema_everywhere(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text("CONFIG_XEN=y\nCONFIG_XEN_PV=y\n")
    ud = tmp_path / "ud.sh"
    ud.write_text("#!/bin/sh\necho hi\n")
    record = tmp_path / "published.json"
    runs = {
        "imagekit.aki/1": ("aki", "--region", "us-east-1", "--json"),
        "imagekit.aki-list/1": ("aki", "--list", "--json"),
        "imagekit.kernel-check/1": ("kernel", "check", config, "--json"),
        "imagekit.userdata/1": ("userdata", "check", ud, "--json"),
        "imagekit.published/1": ("published", "--record", record, "--json"),
    }
    for schema, argv in runs.items():
        result = invoke(*argv)
        assert json.loads(result.stdout)["schema"] == schema, (argv, result.output)


def test_one_verdict_vocabulary(tmp_path: Path) -> None:
    assert [v.value for v in Verdict] == ["pass", "warn", "fail"]
    config = tmp_path / "config"
    config.write_text("CONFIG_XEN=y\n")  # lacks nearly everything PV needs
    result = invoke("kernel", "check", config, "--target", "pv")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1] == "verdict: fail"
    doc = json.loads(invoke("kernel", "check", config, "--json").stdout)
    assert doc["verdict"] == "fail"
