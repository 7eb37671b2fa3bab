"""Fixtures for the kernel tests: a small real ELF, the host's Debian cloud kernel and its config."""

from pathlib import Path

import pytest

HOST_KERNELS = sorted(Path("/boot").glob("vmlinuz-*-cloud-amd64"))


@pytest.fixture(scope="session")
def small_elf() -> bytes:
    return Path("/usr/bin/true").read_bytes()


@pytest.fixture(scope="session")
def host_kernel() -> Path:
    if not HOST_KERNELS:
        pytest.skip("no /boot/vmlinuz-*-cloud-amd64 (scripts/setup installs linux-image-cloud-amd64)")
    return HOST_KERNELS[-1]


@pytest.fixture(scope="session")
def host_config(host_kernel: Path) -> Path:
    config = host_kernel.with_name(host_kernel.name.replace("vmlinuz-", "config-"))
    if not config.exists():
        pytest.skip(f"no {config}")
    return config
