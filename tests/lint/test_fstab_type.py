"""fstab-type-mismatch: an fstab entry whose type is not the type of the filesystem it names (mount -t
fails; without nofail systemd stops the boot in emergency mode). One small two-partition image, read
natively (no appliance): ext4 root holding the fstab, a FAT filesystem labelled DATA."""

from __future__ import annotations

from pathlib import Path

import pytest
from image_factory import MiB, mkext, partitioned, sh

from imagekit.lint import Severity, lint_image

FSTAB = """LABEL=root / ext4 defaults 0 1
LABEL=root / xfs defaults 0 1
LABEL=DATA /data ext4 defaults 0 2
LABEL=DATA /data-nofail xfs defaults,nofail 0 2
LABEL=DATA /data-vfat vfat defaults 0 2
LABEL=DATA /data-msdos msdos defaults 0 2
LABEL=DATA /data-auto auto defaults 0 2
LABEL=root /old ext2 defaults 0 0
LABEL=gone /gone xfs defaults,nofail 0 0
proc /proc proc defaults 0 0
"""


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("fstab-type")
    (tmp / "tree" / "etc").mkdir(parents=True)
    (tmp / "tree" / "etc" / "fstab").write_text(FSTAB)
    mkext(tmp / "root.ext4", tmp / "tree", 16 * MiB)
    sh("mkfs.vfat", "-n", "DATA", "-C", tmp / "data.vfat", str(8 * MiB // 1024))
    disk = tmp / "disk.img"
    partitioned(disk, "dos", [(tmp / "root.ext4", "83"), (tmp / "data.vfat", "c")])
    return disk


@pytest.mark.parametrize("target", ["pv", "hvm"])
def test_an_entry_of_another_type_than_its_filesystem_is_flagged(image: Path, target: str) -> None:
    found = {(f.object, f.severity) for f in lint_image(image, target=target, reader="native")
             if f.rule == "fstab-type-mismatch"}
    assert found == {
        ("/etc/fstab line 2 (LABEL=root /)", Severity.WARNING),  # the kernel mounted / already
        ("/etc/fstab line 3 (LABEL=DATA /data)", Severity.ERROR),  # emergency mode at boot
        ("/etc/fstab line 4 (LABEL=DATA /data-nofail)", Severity.WARNING),  # boots, without /data-nofail
    }


def test_the_finding_names_both_types(image: Path) -> None:
    f = next(f for f in lint_image(image, target="hvm", reader="native") if f.object.endswith("/data)"))
    assert "says ext4" in f.message and "is vfat" in f.message and f.hint.startswith("write vfat")
