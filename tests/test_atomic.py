"""util/atomic: a file appears whole or not at all, whoever else writes the same path."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from imagekit.util.atomic import copy_file, replacing, write_bytes


def test_a_new_file_gets_the_umask_s_permissions_not_mkstemp_s(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        import importlib

        import imagekit.util.atomic as atomic
        importlib.reload(atomic)  # the umask is read at import
        atomic.write_bytes(tmp_path / "a", b"x")
    finally:
        os.umask(old)
        importlib.reload(atomic)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o640
    write_bytes(tmp_path / "b", b"y")
    assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o666 & ~old


def test_an_interrupted_write_keeps_the_old_file_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "serial.log"
    target.write_bytes(b"the last boot's log\n")
    with pytest.raises(KeyboardInterrupt), replacing(target) as out:
        out.write(b"half of a ")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"the last boot's log\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serial.log"]


def test_two_writers_of_one_path_each_rename_a_whole_file(tmp_path: Path) -> None:
    """Two boots of one image saving IMAGE.serial.log at once: with one shared temporary name the first rename
    moved the second's half-copied file into place, and the second's rename then failed (no such file)."""
    target = tmp_path / "disk.img.serial.log"
    with replacing(target) as first:
        first.write(b"boot one\n")
        with replacing(target) as second:
            second.write(b"boot two\n")
        assert target.read_bytes() == b"boot two\n"
        first.write(b"still boot one\n")
    assert target.read_bytes() == b"boot one\nstill boot one\n"
    source = tmp_path / "src"
    source.write_bytes(b"copied\n")
    copy_file(source, target)
    assert target.read_bytes() == b"copied\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.img.serial.log", "src"]
