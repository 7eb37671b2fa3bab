"""Fixtures for the kernel tests: a small real ELF, the host's cloud kernel's config (tests/conftest.py:
host_kernel)."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_elf() -> bytes:
    return Path("/usr/bin/true").read_bytes()


@pytest.fixture(scope="session")
def host_config(host_kernel: Path) -> Path:
    config = host_kernel.with_name(host_kernel.name.replace("vmlinuz-", "config-"))
    if not config.exists():
        pytest.skip(f"no {config}")
    return config
