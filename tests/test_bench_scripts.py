"""The bench scripts start: each `scripts/bench-*` loads its module (imagekit/*/bench.py, where it has one) and
prints its usage.
They are run by people, not by the suite (their figures are not test results), so this is what keeps a
refactoring from leaving one that no longer imports or parses its options."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OPTIONS = {"bench-boot": "--firmware", "bench-build": "--epoch", "bench-lint": "--runs", "bench-publish": "--workers",
           "bench-suite-cpu": "--cores"}


@pytest.mark.parametrize("script", sorted(OPTIONS))
def test_bench_script_prints_its_usage(script: str) -> None:
    proc = subprocess.run([ROOT / "scripts" / script, "--help"], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: scripts/{script}")
    assert OPTIONS[script] in proc.stdout


def test_bench_script_refuses_an_unknown_option() -> None:
    proc = subprocess.run([ROOT / "scripts/bench-lint", "--no-such-option"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 2
    assert "--no-such-option" in proc.stderr
