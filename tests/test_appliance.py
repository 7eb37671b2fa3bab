"""Issue 16 item 4: one appliance owner. `appliance.session` adds the drives in the format imagekit decided,
launches on the accelerator chosen in one place (no os.environ toggle), turns libguestfs' RuntimeError into
imagekit's error naming the image, and always shuts the appliance down and closes the handle."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from imagekit.boot.guest import open_guest
from imagekit.util.accel import Accel
from imagekit.util.appliance import Drive, session
from imagekit.util.errors import ImagekitError
from imagekit.util.run import run
from tests.util import processes_naming


def test_a_drive_libguestfs_cannot_add_is_an_error_naming_the_image(tmp_path: Path) -> None:
    missing = tmp_path / "missing.img"
    with pytest.raises(ImagekitError) as failed, session([Drive(missing)]):
        pytest.fail("the block never runs without an appliance")
    assert failed.value.message == f"{missing}: libguestfs failed: {missing}: No such file or directory"
    with pytest.raises(ImagekitError) as failed, \
            session([Drive(missing)], error="x: failed", launch_error=f"{missing}: could not open", hint="try y"):
        pass
    assert failed.value.message.startswith(f"{missing}: could not open: ") and failed.value.hint == "try y"


@pytest.mark.slow  # one appliance launch (~20 s under TCG)
def test_an_error_in_the_session_shuts_the_appliance_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overlay = tmp_path / "overlay.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", overlay, "16M"])
    for key in ("LIBGUESTFS_BACKEND", "LIBGUESTFS_BACKEND_SETTINGS"):
        monkeypatch.delenv(key, raising=False)
    before = dict(os.environ)
    with pytest.raises(ImagekitError) as failed, open_guest(overlay, Accel("tcg", "test"), "small.img") as g:
        assert g.get_backend_settings() == ["force_tcg"]  # TCG told to the handle, not through the environment
        assert dict(os.environ) == before
        assert processes_naming(tmp_path) != []  # the appliance runs on the overlay
        g.mount("/dev/sda1", "/")  # an empty disk: no partition, libguestfs raises RuntimeError
    assert failed.value.message.startswith("libguestfs failed on small.img: ")
    with pytest.raises(ValueError, match="closed"):  # guestfs.ClosedHandle
        g.list_devices()
    deadline = time.monotonic() + 10
    while processes_naming(tmp_path) and time.monotonic() < deadline:  # QEMU in its last exit steps
        time.sleep(0.2)
    assert processes_naming(tmp_path) == []
