"""Fixtures for the lint tests: the host's Debian cloud kernel to put into test images."""

from pathlib import Path

import pytest

HOST_KERNELS = sorted(Path("/boot").glob("vmlinuz-*-cloud-amd64"))


@pytest.fixture(scope="session")
def host_kernel() -> Path:
    if not HOST_KERNELS:
        pytest.skip("no /boot/vmlinuz-*-cloud-amd64 (scripts/setup installs linux-image-cloud-amd64)")
    kernel = HOST_KERNELS[-1]
    version = kernel.name.removeprefix("vmlinuz-")
    for name in (f"initrd.img-{version}", f"config-{version}"):
        if not kernel.with_name(name).exists():
            pytest.skip(f"no /boot/{name}")
    return kernel
