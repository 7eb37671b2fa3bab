"""SOURCE_DATE_EPOCH from the environment: hostile values are one-line exit-2 errors, before any work."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.util import run_imagekit


@pytest.mark.parametrize("value", ["1" * 5000, "²", "12 ", "-1", "0x10", str(2**31), ""])
def test_hostile_source_date_epoch_is_one_line(value: str, small_recipe: Callable[..., Path], tmp_path: Path) -> None:
    out = tmp_path / "x.img"
    proc = run_imagekit("build", small_recipe(), "-o", out, "--no-lint", env={"SOURCE_DATE_EPOCH": value})
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    first = proc.stderr.strip().splitlines()[0]
    assert first.startswith("error: SOURCE_DATE_EPOCH: "), proc.stderr
    assert len(first) < 200
    assert not out.exists()
