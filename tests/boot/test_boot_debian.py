"""Real TCG boots of the shipped Debian PV-GRUB recipes (built once per session by tests/conftest.py).

Each recipe's image boots to the probe's sentinel with the PV-GRUB loader; hd0 also with the direct
loader; and a copy of hd0 with a unit that fails is reported as failed, naming the unit.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit.boot import BootOptions, boot_image
from tests.boot.conftest import requires_kernel

pytestmark = [pytest.mark.slow, requires_kernel()]

FAILING_UNIT = """[Unit]
Description=a unit that fails (test)
[Service]
Type=oneshot
ExecStart=/bin/false
[Install]
WantedBy=multi-user.target
"""


@pytest.mark.parametrize("variant", ["hd0", "hd00", "hd00-bootpart"])
def test_shipped_recipe_boots_with_pvgrub(debian_images: Callable[[str], Path], variant: str) -> None:
    report = boot_image(BootOptions(debian_images(variant)))
    assert report.booted, report.to_text()
    assert (report.loader, report.probe, report.failed_units) == ("pvgrub", "systemd-unit", [])
    assert report.variant == ("hd0" if variant == "hd0" else "hd00")
    assert report.entry is not None and (report.entry.index, report.entry.fallback) == (0, False)
    assert report.system_state == "running"
    assert report.kernel_version and report.entry.title.endswith(report.kernel_version)


def test_shipped_recipe_boots_with_the_direct_loader(debian_images: Callable[[str], Path]) -> None:
    report = boot_image(BootOptions(debian_images("hd0"), loader="direct"))
    assert report.booted, report.to_text()
    assert report.loader == "direct" and report.entry is not None and report.entry.index == 0


def test_a_failing_unit_is_named(debian_images: Callable[[str], Path], tmp_path: Path) -> None:
    import guestfs

    image = tmp_path / "failing-unit.img"
    subprocess.run(["cp", "--sparse=always", debian_images("hd0"), image], check=True)
    shutil.copy(debian_images("hd0").with_name(debian_images("hd0").name + ".manifest.json"),
                image.with_name(image.name + ".manifest.json"))
    g = guestfs.GuestFS(python_return_dict=True)
    try:
        g.add_drive_opts(str(image), format="raw")
        g.launch()
        g.mount("/dev/sda", "/")
        g.write("/etc/systemd/system/broken-test.service", FAILING_UNIT.encode())
        g.ln_sf("/etc/systemd/system/broken-test.service",
                "/etc/systemd/system/multi-user.target.wants/broken-test.service")
    finally:
        g.shutdown()
        g.close()
    report = boot_image(BootOptions(image))
    assert (report.booted, report.reason) == (False, "failed-units"), report.to_text()
    assert report.failed_units == ["broken-test.service"] and report.system_state == "degraded"
    assert report.detail == "failed units: broken-test.service"
