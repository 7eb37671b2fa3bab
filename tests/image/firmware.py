"""Boot a disk image through real firmware under QEMU: SeaBIOS (the pc machine's BIOS) or OVMF (UEFI).

For the HVM layouts' tests, before `imagekit boot` knows HVM: no kernel is passed to QEMU, the
firmware finds the bootloader on the disk as EC2's would.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS.fd")


def boot_firmware(image: Path, firmware: str, serial: Path, sentinel: bytes, timeout: float = 180) -> bytes:
    """Boot `image` through SeaBIOS ("seabios") or OVMF ("ovmf") under QEMU TCG, a virtio disk and
    user networking; the serial output once `sentinel` shows (or QEMU ends, or the time is up)."""
    argv = ["qemu-system-x86_64", "-machine", "q35" if firmware == "ovmf" else "pc", "-accel", "tcg", "-m", "1024",
            "-nodefaults", "-display", "none", "-no-reboot", "-serial", f"file:{serial}",
            "-drive", f"file={image},format=raw,if=virtio,snapshot=on",
            "-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"]
    if firmware == "ovmf":
        variables = serial.with_suffix(".vars")
        shutil.copyfile(OVMF_VARS, variables)
        argv += ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                 "-drive", f"if=pflash,format=raw,file={variables}"]
    with open(serial.with_suffix(".qemu.log"), "wb") as log, \
            subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT) as qemu:
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and qemu.poll() is None:
                if serial.exists() and sentinel in serial.read_bytes():
                    break
                time.sleep(1)
        finally:
            qemu.kill()
    return serial.read_bytes() if serial.exists() else b""
