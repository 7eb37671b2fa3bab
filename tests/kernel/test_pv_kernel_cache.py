"""The PV-safe kernel cache (imagekit/kernel/pvsafe.py: cached_pv_safe_kernel): the same bytes as converting
afresh, kept once per kernel, and an entry whose bytes do not match its record is made again, never used."""

from __future__ import annotations

from pathlib import Path

import pytest

from imagekit.kernel.pvsafe import cached_pv_safe_kernel, pv_safe_kernel


@pytest.fixture(scope="module")
def kernel(host_kernel: Path) -> tuple[bytes, tuple]:
    data = host_kernel.read_bytes()
    return data, pv_safe_kernel(data, str(host_kernel))


def test_the_cached_conversion_is_the_conversion(kernel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, fresh = kernel
    monkeypatch.setenv("IMAGEKIT_CACHE_DIR", str(tmp_path))
    assert cached_pv_safe_kernel(data, "k") == fresh  # made and stored
    (entry,) = (tmp_path / "pv-kernel").glob("*.gz")
    assert entry.read_bytes() == fresh[0] and entry.with_suffix(".json").is_file()
    assert cached_pv_safe_kernel(data, "k") == fresh  # read back
    assert sorted(p.name for p in (tmp_path / "pv-kernel").iterdir()) == [entry.name, entry.with_suffix(".json").name]


def test_an_entry_unlike_its_record_is_made_again(kernel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, fresh = kernel
    monkeypatch.setenv("IMAGEKIT_CACHE_DIR", str(tmp_path))
    cached_pv_safe_kernel(data, "k")
    (entry,) = (tmp_path / "pv-kernel").glob("*.gz")
    entry.write_bytes(b"\x1f\x8b not the kernel")  # the record still names the real gzip's sha256
    assert cached_pv_safe_kernel(data, "k") == fresh
    assert entry.read_bytes() == fresh[0]  # and the entry is whole again
    entry.with_suffix(".json").unlink()  # a gzip without its record is no entry
    assert cached_pv_safe_kernel(data, "k") == fresh


def test_an_unwritable_cache_converts_all_the_same(kernel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, fresh = kernel
    (tmp_path / "file").write_text("")  # a cache "directory" under a file: no directory can be made, even as root
    monkeypatch.setenv("IMAGEKIT_CACHE_DIR", str(tmp_path / "file" / "cache"))
    assert cached_pv_safe_kernel(data, "k") == fresh
