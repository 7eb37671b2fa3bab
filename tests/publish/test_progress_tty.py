"""Issue 15 item 8: one progress display per command. A publish run in a real pseudo-terminal (against
local-cloud), its output played through a terminal emulator (pyte): the final screen holds each stage
once, as a finished line, and nothing of the live display (no spinner, no running row) is left."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyte

from tests.publish.conftest import SparseImage

SPINNER = set("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")


def run_in_pty(argv: list[str], env: dict[str, str], columns: int = 140, lines: int = 60) -> tuple[int, list[str]]:
    """Run argv with stdin, stdout and stderr on a pseudo-terminal; the screen it leaves, line by line."""
    master, slave = pty.openpty()
    os.set_blocking(master, False)
    env = {**env, "COLUMNS": str(columns), "LINES": str(lines), "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    screen = pyte.Screen(columns, lines)
    stream = pyte.ByteStream(screen)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every holder of the terminal closed it
                data = b""
            if data:
                stream.feed(data)
                continue
        if proc.poll() is not None:
            break
    proc.wait(timeout=10)
    os.close(master)
    return proc.returncode, [line.rstrip() for line in screen.display]


def test_publish_leaves_one_line_per_stage_and_no_live_rows(
    local_cloud: str, make_image: Callable[..., SparseImage], unique_name: str, tmp_path: Path
) -> None:
    image = make_image("pv", size=40 * 2**20)
    argv = [sys.executable, "-m", "imagekit", "publish", str(image.path), "--name", unique_name, "--no-lint",
            "--endpoint-url", local_cloud, "--region", "us-east-1", "--record", str(tmp_path / "rec.json")]
    rc, screen = run_in_pty(argv, dict(os.environ))
    text = "\n".join(screen)
    assert rc == 0, text
    shown = [line for line in screen if line]
    assert not [line for line in shown if SPINNER & set(line)], text  # no live row left behind
    finished = [line for line in shown if line.startswith(("✓", "✗"))]
    assert finished and all(line.startswith("✓") for line in finished), text
    assert len(finished) == len(set(finished)), text  # each stage once
    assert any("upload" in line or "snapshot" in line for line in finished), text
    assert shown[-1].startswith("us-east-1") and "ami-" in shown[-1], text  # the result is the last line
    assert "AWS: region us-east-1" in text
