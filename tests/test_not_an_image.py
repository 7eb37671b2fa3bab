"""Issue 15 item 5: a file that is no disk image is refused by every command taking an IMAGE with one line
giving its real size, exit 2, before any appliance or QEMU starts (the old code launched libguestfs
for 15-30 s and exited 1 with a lint finding, or reported qemu-img's rounded 512 bytes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "debian-12-pvgrub-hd00.toml"


def imagekit(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "imagekit", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def not_images(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, what the error must say about it)"""
    six = tmp_path / "six.img"
    six.write_bytes(b"hello\n")
    empty = tmp_path / "empty.img"
    empty.touch()
    odd = tmp_path / "odd.img"
    odd.write_bytes(b"\0" * ((2 << 20) + 3))
    folder = tmp_path / "folder"
    folder.mkdir()
    return {
        "six": (six, "is 6 bytes: too small to be a disk image"),
        "empty": (empty, "is 0 bytes: too small to be a disk image"),
        "recipe": (RECIPE, f"is {RECIPE.stat().st_size} bytes: too small to be a disk image"),
        "unaligned": (odd, f"is {(2 << 20) + 3} bytes: not a whole number of 512-byte sectors"),
        "directory": (folder, "is a directory, not a disk image"),
    }


COMMANDS = {
    "lint": lambda p: ("lint", p),
    "diff": lambda p: ("diff", p, p),
    "boot": lambda p: ("boot", p),
    "publish": lambda p: ("publish", p, "--name", "some-ami", "--dry-run"),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_not_an_image_is_refused_with_its_size_and_exit_2(tmp_path: Path, command: str) -> None:
    for name, (path, said) in not_images(tmp_path).items():
        proc = imagekit(*COMMANDS[command](path))
        assert proc.returncode == 2, (command, name, proc.stderr)
        first = proc.stderr.splitlines()[0]
        label = "A" if command == "diff" else "IMAGE"
        assert first.startswith(f"error: {label}: {path} {said}"), (command, name, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert "launch" not in proc.stderr and "==>" not in proc.stderr  # no stage (appliance, QEMU) started
        assert proc.stdout == ""


def test_a_recipe_given_as_image_hints_at_building_it() -> None:
    proc = imagekit("lint", RECIPE)
    assert proc.returncode == 2
    assert f"hint: {RECIPE.name} looks like a recipe: build it first (imagekit build {RECIPE}" in proc.stderr


def test_kernel_check_names_the_size_of_what_is_no_kernel(tmp_path: Path) -> None:
    six = tmp_path / "six"
    six.write_bytes(b"hello\n")
    proc = imagekit("kernel", "check", six)
    assert proc.returncode == 2
    assert f"error: {six} (6 bytes): neither a kernel config" in proc.stderr
