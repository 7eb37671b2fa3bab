"""What EC2's import checks about a disk image, done locally.

EC2 accepts RAW, VHD and VMDK (stream-optimized) for ImportSnapshot and fails the task (status
`deleted`) with a `ClientError: Disk validation failed [...]` message when the object is not the
format it was declared as. The reasons below are local-cloud's wording in EC2's form.
"""

from __future__ import annotations

import math

SECTOR = 512
VHD_COOKIE = b"conectix"
VMDK_MAGIC = b"KDMV"
QCOW_MAGIC = b"QFI\xfb"


class DiskValidationError(Exception):
    """The object is not a disk of the declared format; str() is EC2's StatusMessage."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"ClientError: Disk validation failed [{reason}]")


def detect(data: bytes) -> str | None:
    """The format the bytes look like: 'VHD', 'VMDK', 'QCOW2' or None (nothing recognised)."""
    if data[:4] == VMDK_MAGIC:
        return "VMDK"
    if data[:4] == QCOW_MAGIC:
        return "QCOW2"
    if len(data) >= SECTOR and data[-SECTOR:][:8] == VHD_COOKIE:
        return "VHD"
    return None


def disk_bytes(data: bytes, declared: str) -> bytes:
    """The disk contents of an object declared as RAW or VHD; raises DiskValidationError."""
    declared = declared.upper()
    if not data:
        raise DiskValidationError("Empty disk image")
    found = detect(data)
    if declared == "RAW":
        if found is not None:
            raise DiskValidationError(f"Unsupported specified file format: the object is {found}, not RAW")
        return data
    if declared == "VHD":
        if found != "VHD":
            raise DiskValidationError("Unsupported VHD Footer")
        if data[-SECTOR + 60 : -SECTOR + 64] != (2).to_bytes(4, "big"):
            raise DiskValidationError("Unsupported VHD type: local-cloud converts fixed VHDs only")
        return data[:-SECTOR]
    if declared == "VMDK":
        if found != "VMDK":
            raise DiskValidationError("Invalid VMDK header")
        raise DiskValidationError("Unsupported VMDK File Format: local-cloud converts RAW and fixed VHD only")
    raise DiskValidationError(f"Unsupported specified file format {declared}")


def size_gib(length: int) -> int:
    return max(1, math.ceil(length / 2**30))
