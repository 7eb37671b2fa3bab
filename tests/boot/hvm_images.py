"""Small disks for the firmware-level HVM boot tests, made rootless with real tools (sfdisk, mkfs.fat)."""

from __future__ import annotations

import subprocess
from pathlib import Path

MIB = 1024 * 1024
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"


def make_blank(dest: Path, size_mib: int = 16) -> Path:
    """All zeros: no partition table, no boot code."""
    with open(dest, "wb") as f:
        f.truncate(size_mib * MIB)
    return dest


def make_empty_esp(dest: Path, size_mib: int = 64) -> Path:
    """A GPT disk whose one partition is an EFI System Partition with an empty FAT32 filesystem."""
    make_blank(dest, size_mib)
    esp_mib = size_mib - 2
    subprocess.run(["sfdisk", "-q", str(dest)], check=True,
                   input=f"label: gpt\nstart=2048, size={esp_mib}MiB, type={ESP_TYPE}\n".encode())
    subprocess.run(["mkfs.fat", "-F", "32", "--offset", "2048", str(dest), str(esp_mib * 1024)], check=True,
                   capture_output=True)
    return dest
