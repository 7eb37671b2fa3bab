"""Issue 15 item 8, lint: the lint stage's row counts the checks done of the total (the registry knows the
total up front). `imagekit lint IMAGE` in a real pseudo-terminal, played through pyte: the stage's finished
line on the final screen says every check of the target ran ("checks N/N", N the target's rules)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from hostile_images import base_tree, ext_image

from imagekit.kernel.config import Target
from imagekit.lint.rules import rules_for
from tests.publish.test_progress_tty import SPINNER, run_in_pty
from tests.util import SMALL_RECIPE, make_small_tree


def test_lint_on_a_terminal_shows_the_checks_done_of_the_total(tmp_path: Path) -> None:
    image = ext_image(tmp_path, "small", base_tree(tmp_path / "tree"))  # 16 MiB ext4, read natively
    rc, screen = run_in_pty([sys.executable, "-m", "imagekit", "lint", str(image), "--target", "pv"],
                            dict(os.environ))
    text = "\n".join(screen)
    assert rc == 1, text  # the stand-in kernel is no kernel: errors, after every check ran
    assert "Traceback" not in text, text
    stage = [line for line in screen if line.startswith(("✓", "✗")) and " lint " in f" {line[1:]}"]
    assert len(stage) == 1 and stage[0].startswith("✓"), text
    counted = re.search(r"checks (\d+)/(\d+)", stage[0])
    total = len(rules_for(Target.PV))
    assert counted is not None and (int(counted[1]), int(counted[2])) == (total, total), text
    assert not [line for line in screen if SPINNER & set(line)], text  # the live row is gone


def test_the_builds_lint_row_shows_the_checks_done_of_the_total(tmp_path: Path) -> None:
    """`imagekit build` lints the image it made through the same registry: its lint row counts too."""
    make_small_tree(tmp_path / "tree")
    recipe = tmp_path / "small.toml"
    recipe.write_text(SMALL_RECIPE.format(name="small", layout="mbr-bios", size="128M", extra=""))
    rc, screen = run_in_pty([sys.executable, "-m", "imagekit", "build", str(recipe), "-o", str(tmp_path / "s.img")],
                            dict(os.environ))
    text = "\n".join(screen)
    assert rc == 0 and "Traceback" not in text, text
    stage = [line for line in screen if line.startswith(("✓", "✗")) and " lint " in f" {line[1:]}"]
    assert len(stage) == 1, text  # lint ran (a lint error fails the build after its row is done)
    counted = re.search(r"checks (\d+)/(\d+)", stage[0])
    total = len(rules_for(Target.HVM))
    assert counted is not None and (int(counted[1]), int(counted[2])) == (total, total), text
