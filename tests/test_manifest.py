"""The typed build manifest (imagekit/manifest.py): what the build writes is what every reader reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imagekit.manifest import (
    SCHEMA,
    DataVolumeRecord,
    FilesystemRecord,
    ImageRecord,
    KernelRecord,
    Manifest,
    Package,
    RecipeRef,
    TextRecord,
    load_manifest,
    manifest_path,
    write_manifest,
)
from imagekit.recipe.model import Layout, Virtualization
from imagekit.util.errors import UsageError
from tests.util import run_imagekit

# The keys a PV build writes, in the order it writes them (an HVM build adds grub_cfg and partitions).
BUILD_KEYS = ["schema", "imagekit", "name", "recipe", "arch", "layout", "virtualization", "boot_mode", "image",
              "filesystems", "kernel", "initrd", "cmdline", "menu_lst", "fstab", "source_date_epoch", "packages",
              "data_volumes", "lint", "timings"]


def pv_manifest() -> Manifest:
    """A manifest as build_image makes one for a PV image (values shortened)."""
    return Manifest(
        imagekit="0.1.0", name="debian", recipe=RecipeRef(path="recipes/x.toml", sha256="ab" * 32), arch="x86_64",
        layout=Layout.HD0, virtualization=Virtualization.PARAVIRTUAL, boot_mode=None,
        image=ImageRecord(path="x.img", size=1 << 30, allocated=1 << 29, id="cd" * 32,
                          block_map={"block_size": 524288, "algorithm": "SHA256", "aggregation": "LINEAR",
                                     "blocks": []}),
        filesystems=[FilesystemRecord(mountpoint="/", type="ext4", label="root", uuid="u", partition=None, offset=0,
                                      size=1 << 30, usage={"total": 3, "used": 2, "free": 1})],
        kernel=KernelRecord(profile="debian-cloud-amd64", version="6.1", path="/boot/vmlinuz", format="vmlinux-gz",
                            pv_format="auto", original="/boot/vmlinuz.orig", original_payload="zstd", xen_pv=True),
        initrd=None, cmdline="root=LABEL=root", menu_lst=TextRecord(path="/boot/grub/menu.lst", text="default 0\n"),
        fstab="LABEL=root / ext4 defaults 0 1\n", source_date_epoch=1700000000,
        packages=[Package(name="bash", version="5.2")],
        data_volumes=[DataVolumeRecord(name="pgdata", device="/dev/sdh", image="x.img.pgdata.img",
                                       delete_on_termination=False, services=[])],
        lint=None, timings={"bootstrap": 1.5, "total": 9.25},
    )


def test_round_trip_writes_the_build_keys_in_order_and_reads_back_equal(tmp_path: Path) -> None:
    image = tmp_path / "x.img"
    written = pv_manifest()
    path = write_manifest(image, written)
    data = json.loads(path.read_text())
    assert list(data) == BUILD_KEYS
    assert data["schema"] == SCHEMA and data["boot_mode"] is None and data["initrd"] is None
    assert data["layout"] == "hd0" and data["virtualization"] == "paravirtual"
    assert "grub_cfg" not in data and "register" not in data  # keys not set are not written
    read = load_manifest(path)
    assert read == written
    assert read.document() == data
    assert json.dumps(read.document(), indent=2) + "\n" == path.read_text()  # byte for byte
    assert read.kernel is not None and read.kernel.original_payload == "zstd"
    assert read.data_volumes is not None and read.data_volumes[0].delete_on_termination is False


def test_a_manifest_from_before_the_schema_is_read_as_schema_1(tmp_path: Path) -> None:
    """Old manifests carry no "schema" and record the image's whole-file sha256 only."""
    path = tmp_path / "old.img.manifest.json"
    path.write_text(json.dumps({"name": "old", "arch": "x86_64", "layout": "hd00", "virtualization": "paravirtual",
                                "image": {"path": "old.img", "size": 1048576, "sha256": "0" * 64},
                                "kernel": {"version": "4.19", "path": "/vmlinuz"}}))
    manifest = load_manifest(path)
    assert manifest.schema_ == SCHEMA and manifest.layout is Layout.HD00
    assert manifest.image is not None and manifest.image.sha256 == "0" * 64 and manifest.image.block_map is None
    assert manifest.kernel is not None and manifest.kernel.format is None  # not recorded then
    assert manifest.document()["schema"] == SCHEMA


@pytest.mark.parametrize(("data", "key", "message"), [
    ({"schema": 2}, "schema", "newer than this imagekit reads"),
    ({"schema": "1"}, "schema", "is not a manifest schema"),
    ({"schema": 0}, "schema", "is not a manifest schema"),
    ({"layout": "hd1"}, "layout", "Input should be"),
    ({"kernel": {"version": 6}}, "kernel.version", "Input should be a valid string"),
    ({"filesystems": [{"type": "ext4"}]}, "filesystems.0.mountpoint", "Field required"),
    ({"kernel": {"verison": "6.1"}}, "kernel.verison", "Extra inputs are not permitted"),
    ({"image": {"id": "x", "sha": "y"}}, "image.sha", "Extra inputs are not permitted"),
])
def test_a_bad_manifest_is_one_error_naming_the_file_and_key(tmp_path: Path, data: dict[str, object], key: str,
                                                             message: str) -> None:
    path = tmp_path / "x.img.manifest.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UsageError) as exc:
        load_manifest(path)
    assert str(exc.value).startswith(f"{path}: {key}: ") and message in str(exc.value), str(exc.value)


def test_registration_settings_and_unknown_top_level_keys_are_kept(tmp_path: Path) -> None:
    """publish/register are the user's (lint's ari-with-pvgrub reads them), a top-level key may be a newer
    imagekit's: they stay as they are."""
    path = tmp_path / "x.img.manifest.json"
    path.write_text(json.dumps({"register": {"ari": "ari-1", "note": "mine"}, "future": [1]}))
    manifest = load_manifest(path)
    assert manifest.registration is not None and manifest.registration.ari == "ari-1"
    assert manifest.document() == {"schema": SCHEMA, "register": {"ari": "ari-1", "note": "mine"}, "future": [1]}


@pytest.mark.parametrize("command", ["lint", "digest", "publish"])
def test_commands_refuse_a_newer_schema_with_exit_2(tmp_path: Path, command: str) -> None:
    image = tmp_path / "x.img"
    image.write_bytes(bytes(1 << 20))
    manifest_path(image).write_text(json.dumps({"schema": SCHEMA + 1, "layout": "hd0"}))
    extra = ["--name", "good-name", "--dry-run", "--no-lint", "--region", "us-east-1"] if command == "publish" else []
    proc = run_imagekit(command, image, *extra)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"error: {manifest_path(image)}: schema: {SCHEMA + 1} is newer"), proc.stderr
    assert "Traceback" not in proc.stderr
