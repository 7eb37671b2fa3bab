"""Real TCG boots of the shipped Debian PV-GRUB recipes (built once per session by tests/conftest.py).

Each recipe's image boots to the probe's sentinel with the default PV loader (pvgrub097); hd0 also with the direct
loader; and a copy of hd0 with a unit that fails is reported as failed, naming the unit.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit.boot.harness import TCG_KERNEL_ARG, TCG_KERNEL_ARG_NOTE, BootOptions, boot_image
from tests.boot.conftest import requires_kernel
from tests.util import sha256

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
    """The default PV loader (pvgrub097: GRUB 0.97, Xen's loader rules) boots the PV-safe kernel the build
    made of Debian's LZ4 bzImage; the manifest says so."""
    image = debian_images(variant)
    kernel = json.loads(image.with_name(image.name + ".manifest.json").read_text())["kernel"]
    prefix = "/" if variant == "hd00-bootpart" else "/boot/"
    assert (kernel["format"], kernel["original_payload"]) == ("vmlinux-gz", "lz4")
    assert kernel["path"] == f"{prefix}pvgrub-vmlinux-{kernel['version']}.gz"
    assert kernel["original"] == f"{prefix}vmlinuz-{kernel['version']}"
    before = sha256(image) if variant == "hd0" else None
    report = boot_image(BootOptions(image))
    assert report.booted, report.to_text()
    assert report.prepared_with.startswith("debugfs"), report.notes  # no libguestfs appliance
    assert before is None or sha256(image) == before  # the edits went into a copy, never the image
    assert (report.loader, report.probe, report.failed_units) == ("pvgrub097", "systemd-unit", [])
    assert report.pvgrub097 is not None and report.pvgrub097["kernel"]["pvh_entry"] is True
    assert report.variant == ("hd0" if variant == "hd0" else "hd00")
    assert report.entry is not None and (report.entry.index, report.entry.fallback) == (0, False)
    assert report.system_state == "running"
    assert report.kernel_version and report.entry.title.endswith(report.kernel_version)
    command_line = next(line for line in Path(report.serial_log).read_text().splitlines() if "Command line:" in line)
    assert (TCG_KERNEL_ARG in command_line.split()) == (report.accel == "tcg")  # the kernel got it: TCG only
    assert (TCG_KERNEL_ARG_NOTE in report.added) == (report.accel == "tcg")


def test_shipped_recipe_boots_with_the_direct_loader(debian_images: Callable[[str], Path]) -> None:
    report = boot_image(BootOptions(debian_images("hd0"), loader="direct"))
    assert report.booted, report.to_text()
    assert report.loader == "direct" and report.entry is not None and report.entry.index == 0
    assert report.prepared_with.startswith("debugfs")  # the kernel and initrd read from the copy with debugfs


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
