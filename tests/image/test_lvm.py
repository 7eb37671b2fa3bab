"""The LVM layout (seeds 001, 002), built for real and read back independently: sfdisk (partition table),
the LVM metadata on the disk, libguestfs (LVs, labels, files on each filesystem), e2fsck; the lint
rule that an LVM image without a separate /boot is an error, on a hand-made image; and reproducible
LVM images (SOURCE_DATE_EPOCH): the same bytes twice, the ids LVM's own tools report derived from the
recipe, LVM's checksums computed as LVM computes them, and a wrong rewrite failing the build."""

from __future__ import annotations

import filecmp
import hashlib
import json
import shutil
import struct
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit.image.filesystem import NewFilesystem, make_filesystem
from imagekit.image.layout import Placement
from imagekit.image.lvm import LvPlan, create_volume_group
from imagekit.image.lvm_metadata import NotLvm, logical_extents, lvm_crc, parse_config, pv_layout, read_metadata_text
from imagekit.image.lvm_rewrite import LvmIds, Rewrite, fixed_text, lvm_id
from imagekit.image.partition import write_mbr
from imagekit.image.sparse import copy_range
from imagekit.recipe.model import Filesystem
from imagekit.rootfs.bootstrap import Tree
from imagekit.util.errors import ImagekitError
from imagekit.util.reproducible import UUID_NAMESPACE
from tests.util import EPOCH_BUILDS, RECIPES, SMALL_RECIPE, make_small_tree, run_imagekit

MiB = 1 << 20
EXTRA = """\
[filesystems.boot]
type = "ext2"
label = "boot"
size = "64M"
[lvm]
vg = "vgsmall"
[[lvm.volumes]]
name = "root"
mountpoint = "/"
size = "200M"
[[lvm.volumes]]
name = "swap"
type = "swap"
label = "swap"
size = "32M"
[[lvm.volumes]]
name = "var"
mountpoint = "/var"
type = "ext4"
label = "var"
"""


EPOCH = 1767225600
PV_OFFSET = MiB + 64 * MiB  # after the 64 MiB /boot partition


@pytest.fixture(scope="module")
def lvm_recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small busybox tree (with a /var/lib/app file) as an hd00 + LVM recipe."""
    base = tmp_path_factory.mktemp("lvm")
    tree = make_small_tree(base / "tree")
    (tree / "var/lib/app").mkdir(parents=True)
    (tree / "var/lib/app/state").write_text("on the var LV\n")
    recipe = base / "lvm.toml"
    recipe.write_text(SMALL_RECIPE.format(name="small-lvm", layout="hd00", size="400M", extra=EXTRA))
    return recipe


def build(recipe: Path, image: Path, env: dict[str, str] | None = None) -> dict:
    proc = run_imagekit("build", recipe, "-o", image, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def lvm_build(lvm_recipe: Path) -> tuple[Path, dict]:
    """The recipe built once for the module, without an epoch: LVM's own random ids and stamps."""
    image = lvm_recipe.parent / "out" / "lvm.img"
    return image, build(lvm_recipe, image)


def guestfs_handle(image: Path, readonly: bool = True):  # type: ignore[no-untyped-def]
    import guestfs

    g = guestfs.GuestFS(python_return_dict=True)
    g.add_drive_opts(str(image), readonly=readonly, format="raw")
    g.launch()
    return g


@pytest.mark.slow
def test_lvm_layout(lvm_build: tuple[Path, dict]) -> None:
    image, manifest = lvm_build
    table = json.loads(subprocess.run(["sfdisk", "--json", image], capture_output=True, text=True,
                                      check=True).stdout)["partitiontable"]
    boot_part, pv_part = table["partitions"]
    assert boot_part["bootable"] is True and boot_part["start"] == 2048 and boot_part["type"] == "83"
    assert pv_part["type"] == "8e" and pv_part["start"] * 512 == MiB + 64 * MiB

    # The LVM metadata as written on the disk, read on the host, agrees with the manifest.
    extents = logical_extents(image, pv_part["start"] * 512)
    assert [e.name for e in extents.values()] == ["root", "swap", "var"]
    by_lv = {f["lvm"]["lv"]: f for f in manifest["filesystems"] if "lvm" in f}
    for name, ext in extents.items():
        assert (by_lv[name]["offset"], by_lv[name]["size"]) == (ext.offset, ext.size)
    assert extents["root"].size == 200 * MiB and extents["swap"].size == 32 * MiB
    for f in manifest["filesystems"]:
        if f["type"] == "ext4":
            subprocess.run(["e2fsck", "-fn", f"{image}?offset={f['offset']}"], check=True, capture_output=True)
    assert manifest["lint"]["errors"] == 0
    assert not any(f["rule"].startswith("disk-") for f in manifest["lint"]["findings"])

    g = guestfs_handle(image)
    try:
        assert g.vgs() == ["vgsmall"]
        assert g.lvs() == ["/dev/vgsmall/root", "/dev/vgsmall/swap", "/dev/vgsmall/var"]
        # the kernel's device-mapper (LVM in the appliance) maps each LV where the manifest says it is:
        # its size, and its first and last 64 KiB are the image's bytes at the manifest's offset
        with open(image, "rb") as raw:
            for name, f in by_lv.items():
                dev = f"/dev/vgsmall/{name}"
                assert g.blockdev_getsize64(dev) == f["size"]
                for at in (0, f["size"] - 65536):
                    raw.seek(f["offset"] + at)
                    assert g.pread_device(dev, 65536, at) == raw.read(65536), (name, at)
        fss = g.list_filesystems()
        assert fss["/dev/sda1"] == "ext2" and fss["/dev/vgsmall/root"] == "ext4"
        assert fss["/dev/vgsmall/swap"] == "swap" and fss["/dev/vgsmall/var"] == "ext4"
        assert g.vfs_label("/dev/vgsmall/root") == "root" and g.vfs_label("/dev/vgsmall/swap") == "swap"
        g.mount_ro("/dev/vgsmall/root", "/")
        g.mount_ro("/dev/vgsmall/var", "/var")
        g.mount_ro("/dev/sda1", "/boot")
        fstab = g.cat("/etc/fstab")
        assert g.cat("/var/lib/app/state") == "on the var LV\n"
        assert g.exists("/boot/boot/grub/menu.lst")  # seed 002: menu.lst on the /boot partition
        assert any(n.startswith("vmlinuz-") for n in g.ls("/boot"))
    finally:
        g.shutdown()
        g.close()
    assert "LABEL=root\t/\text4\t" in fstab and "LABEL=boot\t/boot\text2\t" in fstab
    assert "LABEL=var\t/var\text4\tdefaults\t0\t2" in fstab and "LABEL=swap\tnone\tswap\tsw\t0\t0" in fstab


def test_parse_lvm_text_format() -> None:
    text = ('vg0 {\nid = "abc"\nextent_size = 8192\nstatus = ["READ", "WRITE"] # comment\n'
            'logical_volumes {\nroot {\nsegment1 {\nstart_extent = 0\nstripes = [\n"pv0", 12\n]\n}\n}\n}\n}\n'
            'contents = "Text Format Volume Group"\nversion = 1\n')
    config = parse_config(text)
    assert config["vg0"]["status"] == ["READ", "WRITE"] and config["vg0"]["extent_size"] == 8192
    assert config["vg0"]["logical_volumes"]["root"]["segment1"]["stripes"] == ["pv0", 12]
    assert config["version"] == 1


@pytest.mark.slow
def test_lint_fails_lvm_without_boot(lvm_build: tuple[Path, dict], tmp_path: Path) -> None:
    """Seed 002: the built image's LVM physical volume alone on a disk (no /boot partition), with the
    kernel and menu.lst inside the root logical volume. Made on the host: no libguestfs launch."""
    good, manifest = lvm_build
    pv_offset = MiB + 64 * MiB
    pv_size = good.stat().st_size - pv_offset
    tree = make_small_tree(tmp_path / "tree")
    shutil.copy(next(Path("/boot").glob("vmlinuz-*")), tree / "boot" / "vmlinuz-6.1.0-test")
    (tree / "boot/grub").mkdir()
    (tree / "boot/grub/menu.lst").write_text("default 0\ntimeout 1\ntitle t\nroot (hd0,0)\n"
                                             "kernel /boot/vmlinuz-6.1.0-test root=LABEL=root\n")
    image = tmp_path / "lvm-without-boot.img"
    with open(image, "wb") as f:
        f.truncate(MiB + pv_size)
    fs = Filesystem(label="root")
    write_mbr(image, [Placement("/", fs, 1, MiB, pv_size)])
    copy_range(good, image, src_offset=pv_offset, length=pv_size, dst_offset=MiB)
    root = logical_extents(image, MiB)["root"]
    built_root = next(f for f in manifest["filesystems"] if f.get("lvm", {}).get("lv") == "root")
    assert root.offset == built_root["offset"] - 64 * MiB  # the same LV, found through the copied metadata
    make_filesystem(NewFilesystem(Placement("/", fs, 1, root.offset, root.size), Tree(tree), str(uuid.uuid4()),
                                  boot=True), image, tmp_path)

    proc = run_imagekit("lint", image, "--json")
    assert proc.returncode == 1, proc.stderr
    findings = {f["rule"]: f for f in json.loads(proc.stdout)["findings"]}
    assert findings["disk-lvm-without-boot"]["severity"] == "error"
    assert findings["disk-lvm-without-boot"]["object"] == "partition 1 (hd0,0)"


def expected_id(manifest: dict, name: str) -> str:
    """The scheme the README states, computed here: uuid5(UUID_NAMESPACE, "<recipe sha256>:<epoch>:lvm-<name>"),
    its sha256's 32 bytes each taken modulo 64 into LVM's id alphabet (lib/uuid/uuid.c), no dashes."""
    seed = uuid.uuid5(UUID_NAMESPACE, f"{manifest['recipe']['sha256']}:{manifest['source_date_epoch']}:lvm-{name}")
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!#"
    return "".join(alphabet[b % 64] for b in hashlib.sha256(seed.bytes).digest())


def lvm_area(image: Path, pv_offset: int) -> tuple[bytes, bytes, bytes, tuple[int, int, int, int]]:
    """The PV's label sector, its (only) metadata area's header sector and ring, and raw_locn 0."""
    with open(image, "rb") as f:
        f.seek(pv_offset)
        head = f.read(2048)
        layout = pv_layout(head)
        ((start, size),) = layout.metadata_areas
        f.seek(pv_offset + start)
        header, ring = f.read(512), f.read(size - 512)
    return head[layout.label:layout.label + 512], header, ring, struct.unpack_from("<QQII", header, 40)


@pytest.mark.slow
def test_lvm_crc_is_lvms(lvm_build: tuple[Path, dict]) -> None:
    """lvm_crc on the bytes LVM itself wrote (a build without an epoch is not rewritten) gives the
    checksums LVM stored: the label's (from offset_xl on), the mda_header's and the text's."""
    image, _ = lvm_build
    label, header, ring, (offset, size, checksum, _) = lvm_area(image, PV_OFFSET)
    assert struct.unpack_from("<I", label, 16)[0] == lvm_crc(label[20:])
    assert struct.unpack_from("<I", header, 0)[0] == lvm_crc(header[4:])
    assert checksum == lvm_crc(ring[offset - 512:offset - 512 + size])
    assert offset > 512  # LVM's ring holds the earlier versions (vgcreate, each lvcreate) before the current one


@pytest.mark.slow
def test_reproducible_lvm_image(lvm_recipe: Path, lvm_build: tuple[Path, dict], tmp_path: Path) -> None:
    """Two builds with one SOURCE_DATE_EPOCH are the same bytes (cmp); LVM's tools (in libguestfs'
    appliance, not imagekit's reader) report the PV, VG and LV ids derived from the recipe and epoch; the
    text has one copy at the ring's start, the epoch and the recipe's hostname, the rest of the area zeroes."""
    env = {"SOURCE_DATE_EPOCH": str(EPOCH)}
    manifest = build(lvm_recipe, tmp_path / "a.img", env)
    build(lvm_recipe, tmp_path / "b.img", env)
    assert filecmp.cmp(tmp_path / "a.img", tmp_path / "b.img", shallow=False)
    assert not filecmp.cmp(tmp_path / "a.img", lvm_build[0], shallow=False)  # no epoch: LVM's random ids
    assert manifest["lint"]["errors"] == 0 and manifest["source_date_epoch"] == EPOCH

    image = tmp_path / "a.img"
    g = guestfs_handle(image)
    try:
        pvs = [p["pv_uuid"] for p in g.pvs_full()]
        vgs = [(v["vg_name"], v["vg_uuid"]) for v in g.vgs_full()]
        lvs = [(lv["lv_name"], lv["lv_uuid"]) for lv in g.lvs_full()]
        assert g.vfs_uuid("/dev/vgsmall/var") == next(f["uuid"] for f in manifest["filesystems"] if f["label"] == "var")
    finally:
        g.shutdown()
        g.close()
    assert pvs == [expected_id(manifest, "pv")]
    assert vgs == [("vgsmall", expected_id(manifest, "vg:vgsmall"))]
    assert lvs == [(name, expected_id(manifest, f"lv:{name}")) for name in ("root", "swap", "var")]

    label, header, ring, (offset, size, checksum, _) = lvm_area(image, PV_OFFSET)
    assert label[32:64] == expected_id(manifest, "pv").encode()
    assert (offset, checksum) == (512, lvm_crc(ring[:size]))
    assert header[64:88] == bytes(24)  # raw_locn 1 (precommitted) empty
    assert ring[size - 1:] == bytes(len(ring) - size + 1)  # the text's NUL, then nothing: no older copies
    text = ring[:size - 1].decode()
    config = parse_config(text)
    assert config["creation_time"] == EPOCH and config["creation_host"] == "small"
    assert {lv["creation_time"] for lv in config["vgsmall"]["logical_volumes"].values()} == {EPOCH}
    assert {lv["creation_host"] for lv in config["vgsmall"]["logical_volumes"].values()} == {"small"}
    assert config["vgsmall"]["seqno"] == 1
    assert config["vgsmall"]["physical_volumes"]["pv0"]["device"] == "/dev/sda2"
    assert "# Generated by LVM2 version " in text and ": Thu Jan  1 00:00:00 2026\n" in text


@pytest.mark.slow
def test_shipped_lvm_recipe_reproducible(recipe_images: Callable[..., Path], tmp_path: Path) -> None:
    """recipes/debian-12-lvm.toml, built by the session with SOURCE_DATE_EPOCH (EPOCH_BUILDS) and once more
    here with the same epoch: the same bytes (the bootstrap is cached, so both have the same rootfs)."""
    first = recipe_images("debian-12-lvm")
    env = {"SOURCE_DATE_EPOCH": str(EPOCH_BUILDS["debian-12-lvm"])}
    run_imagekit("build", RECIPES / "debian-12-lvm.toml", "-o", tmp_path / "again.img", "--no-lint", env=env,
                 check=True)
    assert filecmp.cmp(first, tmp_path / "again.img", shallow=False)
    assert json.loads(first.with_name(first.name + ".manifest.json").read_text())["lint"]["errors"] == 0


def test_fixed_text() -> None:
    """The rewrite of a text as LVM 2.03 writes it: ids, stamps, seqno and header replaced, the rest kept."""
    lvm_text = ('vg0 {\nid = "V412HF-uo70-Fo55-LvyH-dFtg-wOWs-mgPNtS"\nseqno = 3\nextent_size = 8192\n\n'
                'physical_volumes {\n\npv0 {\nid = "oC7Pdd-PimO-T4ax-Q7Fd-eKDE-iKWV-4FglQn"\ndevice = "/dev/sda"\n'
                'pe_start = 2048\n}\n}\n\nlogical_volumes {\n\na {\nid = "itdPMi-6a3Y-yjUD-iedS-Bqdf-VXyY-2QQ2jl"\n'
                'creation_time = 1796231839\ncreation_host = "(none)"\nsegment_count = 1\n\nsegment1 {\n'
                'start_extent = 0\nstripes = [\n"pv0", 0\n]\n}\n}\n}\n\n}\n'
                '# Generated by LVM2 version 2.03.16(2) (2022-05-18): Wed Dec  2 17:17:20 2026\n\n'
                'contents = "Text Format Volume Group"\nversion = 1\n\ndescription = "Write from lvcreate -n a."\n\n'
                'creation_host = "(none)"\t# Linux (none) 6.1.0-57-cloud-amd64 #1 SMP x86_64\n'
                'creation_time = 1796231840\t# Wed Dec  2 17:17:20 2026\n\n')
    ids = LvmIds(pv=lvm_id(uuid.UUID(int=1)), vg=lvm_id(uuid.UUID(int=2)), lvs={"a": lvm_id(uuid.UUID(int=3))})
    assert [len(group) for group in ids.pv.split("-")] == [6, 4, 4, 4, 4, 4, 6]
    assert len({ids.pv, ids.vg, *ids.lvs.values()}) == 3
    text = fixed_text(lvm_text, Rewrite(ids, EPOCH, "debian", device="/dev/sda2"))
    config = parse_config(text)
    vg = config["vg0"]
    assert (vg["id"], vg["seqno"], vg["physical_volumes"]["pv0"]["id"]) == (ids.vg, 1, ids.pv)
    assert vg["physical_volumes"]["pv0"]["device"] == "/dev/sda2"  # LVM wrote /dev/sda (or /dev/sdb: a race)
    assert vg["logical_volumes"]["a"] == {"id": ids.lvs["a"], "creation_time": EPOCH, "creation_host": "debian",
                                          "segment_count": 1, "segment1": {"start_extent": 0, "stripes": ["pv0", 0]}}
    assert (config["creation_time"], config["creation_host"], config["version"]) == (EPOCH, "debian", 1)
    assert "Linux" not in text and "lvcreate" not in text and "17:17:20" not in text
    assert text.startswith("vg0 {\n") and "# Generated by LVM2 version 2.03.16(2) (2022-05-18): " in text
    with pytest.raises(NotLvm, match="logical volume 'a' the recipe does not"):
        fixed_text(lvm_text, Rewrite(LvmIds(ids.pv, ids.vg, {"b": ids.lvs["a"]}), EPOCH, "debian"))


@pytest.mark.slow
def test_wrong_rewrite_fails(tmp_path: Path) -> None:
    """A rewrite LVM cannot read (ids with a character outside LVM's alphabet) fails in the appliance that
    made the volume group, naming it; the same with valid ids passes and LVM's text has them."""
    ids = LvmIds(lvm_id(uuid.UUID(int=1)), lvm_id(uuid.UUID(int=2)), {"a": lvm_id(uuid.UUID(int=3))})
    ok = Rewrite(ids, EPOCH, "h")
    bad = Rewrite(LvmIds(ok.ids.pv, ok.ids.vg.replace(ok.ids.vg[0], "$"), ok.ids.lvs), EPOCH, "h")
    pv = Placement("/", Filesystem(label="root"), 1, MiB, 40 * MiB)
    for rewrite in (bad, ok):
        image = tmp_path / "pv.img"
        with open(image, "wb") as f:
            f.truncate(MiB + 40 * MiB)
        write_mbr(image, [pv])
        if rewrite is bad:
            with pytest.raises(ImagekitError, match="LVM cannot read the metadata imagekit rewrote for volume "
                               "group vgtest") as caught:
                create_volume_group(image, pv, "vgtest", [LvPlan("a", None)], rewrite)
            assert "\n" not in caught.value.message and "lvm_rewrite.py" in str(caught.value.hint)
        else:
            create_volume_group(image, pv, "vgtest", [LvPlan("a", None)], rewrite)
    config = parse_config(read_metadata_text(image, MiB))
    assert config["vgtest"]["id"] == ok.ids.vg and config["vgtest"]["logical_volumes"]["a"]["id"] == ok.ids.lvs["a"]
