"""The one disk-label reader (imagekit/image/disklabel.py) against sfdisk's own reading of real tables, and the
decisions boot, lint and publish take from it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from imagekit.boot.extfs import partitions
from imagekit.image.disklabel import read_head
from imagekit.lint import default_target
from imagekit.publish.facts import sniff_layout
from imagekit.recipe.layouts import Layout

MIB = 1 << 20
TABLES = {
    "gpt": "label: gpt\nstart=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649\n"
           "start=4096, size=8192, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n"
           "start=12288, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n",
    "dos": "label: dos\nstart=2048, size=8192, type=83, bootable\nstart=10240, type=8e\n",
}
BIOS_BOOT, ESP, LINUX = ("21686148-6449-6E6F-744E-656564454649", "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
                         "0FC63DAF-8483-4772-8E79-3D69D8477DE4")


def disk(tmp_path: Path, table: str) -> Path:
    image = tmp_path / f"{table}.img"
    with open(image, "wb") as f:
        f.truncate(16 * MIB)
    subprocess.run(["sfdisk", "-q", str(image)], input=TABLES[table].encode(), check=True)
    return image


def sfdisk(image: Path) -> list[tuple[int, int, str]]:
    out = json.loads(subprocess.run(["sfdisk", "--json", str(image)], capture_output=True, text=True,
                                    check=True).stdout)["partitiontable"]
    return [(p["start"] * 512, p["size"] * 512, p["type"].lower()) for p in out["partitions"]]


@pytest.mark.parametrize("table", list(TABLES))
def test_the_partitions_are_sfdisks(tmp_path: Path, table: str) -> None:
    image = disk(tmp_path, table)
    label = read_head(image)
    want = sfdisk(image)
    kinds = [t if table == "gpt" else f"0x{t}" for _, _, t in want]
    assert [(p.start, p.size, p.type) for p in label.partitions] == [(s, n, k) for (s, n, _), k in zip(want, kinds,
                                                                                                      strict=True)]
    assert partitions(image) == (table, list(label.partitions))  # the boot fast path's view is the label's
    assert (label.gpt, label.esp, label.bios_boot, label.linux_partitions) == (
        (True, True, True, 1) if table == "gpt" else (False, False, False, 2))


def test_publish_and_lint_decide_from_it(tmp_path: Path) -> None:
    gpt, dos = disk(tmp_path, "gpt"), disk(tmp_path, "dos")
    assert (sniff_layout(gpt), sniff_layout(dos)) == (Layout.GPT_HYBRID, Layout.HD00)  # gpt: BIOS boot + ESP
    assert (default_target(gpt), default_target(dos)) == ("hvm", "pv")  # a protective MBR; no GRUB boot code
    bare = tmp_path / "bare.img"
    with open(bare, "wb") as f:
        f.truncate(16 * MIB)
    assert sniff_layout(bare) is None
    subprocess.run(["mkfs.ext4", "-q", "-F", str(bare)], check=True)
    label = read_head(bare)
    assert (label.whole_disk_fs, label.filesystem_at_zero, label.may_hold_root) == ("ext", True, True)
    assert sniff_layout(bare) is Layout.HD0 and partitions(bare) == (None, [])


@pytest.mark.parametrize(("types", "layout"), [((ESP, LINUX), Layout.GPT_UEFI), ((BIOS_BOOT, LINUX), Layout.GPT_BIOS),
                                              ((BIOS_BOOT, ESP, LINUX), Layout.GPT_HYBRID), ((LINUX,), None)])
def test_a_gpt_disk_is_the_layout_its_firmware_partitions_say(tmp_path: Path, types: tuple[str, ...],
                                                              layout: Layout | None) -> None:
    """Without a manifest, publish takes the layout (and so the boot mode) from the disk's firmware partitions:
    the layout table's entry with that partition table and those partitions."""
    image = tmp_path / "g.img"
    with open(image, "wb") as f:
        f.truncate(16 * MIB)
    script = "label: gpt\n" + "".join(f"start={2048 + 4096 * i}, size=4096, type={t}\n" for i, t in enumerate(types))
    subprocess.run(["sfdisk", "-q", str(image)], input=script.encode(), check=True)
    assert [p.type for p in read_head(image).partitions] == [t.lower() for t in types]  # sfdisk wrote them
    assert sniff_layout(image) is layout
