"""The layout table walked entry by entry: each stage gets from LAYOUTS what it needs, so a new entry that
forgets a field, or states one that a stage cannot act on, fails here (docs/architecture.md, "Add a layout")."""

from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
from pathlib import Path

import pytest

from imagekit.boot.firmware import choose, from_manifest
from imagekit.boot.pvgrub import grub_cfg
from imagekit.bootloader.grubcfg import parse_grub_cfg
from imagekit.cli.common import LAYOUTS as CLI_LAYOUTS
from imagekit.cli.common import PV_LAYOUTS
from imagekit.image.firmware import partition_records
from imagekit.image.layout import GPT_TAIL, plan_firmware, plan_layout
from imagekit.lint.pvgrub import variant_of_table
from imagekit.manifest import Manifest
from imagekit.publish.facts import ImageFacts
from imagekit.publish.register import RegisterOptions, check_combination, register_params, root_device
from imagekit.recipe.kernel_profiles import load_profile
from imagekit.recipe.layouts import (
    GRUB_CFG,
    LAYOUTS,
    MENU_LST,
    Bootloader,
    Firmware,
    Layout,
    LayoutSpec,
    PartitionTable,
    firmwares_for_boot_mode,
)
from imagekit.recipe.load import load_recipe
from imagekit.recipe.model import GiB, Recipe
from imagekit.rootfs.configure import FsIds, KernelInfo, boot_config, boot_entries
from tests.pvgrub.grub097_reads import entry_commands, entry_files, grub097_reads

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
SPECS = [pytest.param(spec, id=str(layout)) for layout, spec in LAYOUTS.items()]
KERNEL = KernelInfo("6.1.0-28-cloud-amd64", "vmlinuz-6.1.0-28-cloud-amd64", "initrd.img-6.1.0-28-cloud-amd64")
IDS = FsIds("0f0e0d0c-0b0a-4908-8706-050403020100", "1f0e0d0c-0b0a-4908-8706-050403020100", "1A2B-3C4D")


def recipe_for(spec: LayoutSpec) -> Recipe:
    """A shipped recipe with this layout: a separate /boot wherever the layout has a partition table."""
    base = "debian-12-pvgrub-hd00-bootpart.toml" if spec.partitioned else "debian-12-pvgrub-hd0.toml"
    return load_recipe(RECIPES / base).with_layout(spec.layout)


def test_every_layout_has_one_entry_stating_every_field() -> None:
    assert list(LAYOUTS) == list(Layout)
    assert all(spec.layout is layout for layout, spec in LAYOUTS.items())
    fields = dataclasses.fields(LayoutSpec)
    assert all(f.default is dataclasses.MISSING for f in fields)  # no field a new entry may leave out
    with pytest.raises(TypeError):
        LayoutSpec(Layout.HD0, *[getattr(LAYOUTS[Layout.HD0], f.name) for f in fields[1:-1]])


@pytest.mark.parametrize("spec", SPECS)
def test_the_entry_is_consistent(spec: LayoutSpec) -> None:
    pvgrub = spec.bootloader is Bootloader.PVGRUB
    assert spec.pv == pvgrub == (spec.aki is not None) == (spec.boot_mode is None) == (not spec.firmwares)
    assert spec.config == (MENU_LST if pvgrub else GRUB_CFG)
    assert spec.esp == (Firmware.UEFI in spec.firmwares)  # GRUB 2 for UEFI lives on the ESP
    # GRUB's core.img for BIOS: in the MBR gap, but on GPT the partition entries fill it: a BIOS boot partition
    gpt = spec.table is PartitionTable.GPT
    assert ("bios-boot" in spec.firmware_parts) == (gpt and Firmware.BIOS in spec.firmwares)
    if spec.firmware_parts:
        assert spec.table is PartitionTable.GPT  # imagekit writes firmware partitions on GPT only
    if pvgrub:
        assert spec.table is not PartitionTable.GPT  # PV-GRUB (GRUB 0.97) reads MBR only
    if spec.lvm:
        assert spec.partitioned  # /boot on the first partition, the PV after it


@pytest.mark.parametrize("spec", SPECS)
def test_the_recipe_and_the_image_writer_build_its_placements(spec: LayoutSpec) -> None:
    recipe = recipe_for(spec)
    assert (recipe.esp is not None) == spec.esp
    firmware = plan_firmware(recipe)
    assert tuple(p.kind for p in firmware) == spec.firmware_parts
    disk, placements = plan_layout(recipe, 4 * GiB)
    assert all((p.partition is None) == (not spec.partitioned) for p in placements)
    spans = sorted([(p.offset, p.size) for p in firmware] + [(p.offset, p.size) for p in placements])
    for (offset, size), (following, _) in itertools.pairwise(spans):
        assert offset + size <= following
    end = disk - (GPT_TAIL if spec.table is PartitionTable.GPT else 0)
    assert spans[-1][0] + spans[-1][1] <= end
    records = partition_records(recipe, firmware, placements, IDS.esp_id)
    assert len(records) == (len(firmware) + len(placements) if not spec.pv else 0)


@pytest.mark.parametrize("spec", SPECS)
def test_configure_writes_its_bootloader_config(spec: LayoutSpec) -> None:
    recipe = recipe_for(spec)
    profile = load_profile(recipe.kernel.profile, recipe_path=recipe.path)
    path, text = boot_config(recipe, profile, KERNEL, IDS)
    assert path == spec.config
    if spec.bootloader is Bootloader.PVGRUB:  # read by GRUB 0.97 itself, as the layout's AKI sees the disk
        assert spec.aki is not None and recipe.boot.timeout >= 1  # the oracle chooses entries while it counts down
        entries = boot_entries(recipe, profile, KERNEL, IDS)
        read = grub097_reads(text, spec.aki, entry_files(entries), separate_boot=recipe.separate_boot)
        assert read.titles == tuple(e.title for e in entries)
        assert read.commands == entry_commands(entries, spec.aki.legacy_root), read.outputs
    else:  # GRUB 2's own parser accepts it (grub-script-check), and its menu entries are the recipe's
        check = subprocess.run(["grub-script-check"], input=text, capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stderr
        assert parse_grub_cfg(text).entries


@pytest.mark.parametrize("spec", SPECS)
def test_it_has_a_boot_test(spec: LayoutSpec) -> None:
    manifest = Manifest.model_validate_json(json.dumps({
        "layout": spec.layout.value, "virtualization": spec.virtualization.value,
        "boot_mode": spec.boot_mode.value if spec.boot_mode else None}))  # as the build writes it
    if spec.aki is not None:  # PV: PV-GRUB emulated for that AKI; no firmware
        assert choose(None, manifest, None) is None
        assert f"set root={spec.aki.grub_root}" in grub_cfg(spec.aki)
        assert spec.layout.value in PV_LAYOUTS
        return
    assert spec.layout.value not in PV_LAYOUTS
    assert spec.boot_mode is not None
    assert choose(None, manifest, None) == from_manifest(manifest) == spec.firmwares
    assert firmwares_for_boot_mode(spec.boot_mode.value) == spec.firmwares  # a manifest with EC2's boot mode only


@pytest.mark.parametrize("spec", SPECS)
def test_publish_knows_how_to_register_it(spec: LayoutSpec) -> None:
    facts = ImageFacts(path=Path("/nonexistent.raw"), size=2**30, allocated=0, sha256="0" * 64, arch="x86_64",
                       layout=spec.layout, virtualization=spec.virtualization, boot_mode=spec.boot_mode,
                       manifest_path=None, manifest_sha256=None, recipe=None)
    opts = RegisterOptions(name="layout-test", kernel_id="aki-12345678" if spec.pv else None)
    check_combination(facts, opts)
    params = register_params(facts, opts, "snap-1", 8)
    assert params["VirtualizationType"] == spec.virtualization.value
    assert params["RootDeviceName"] == root_device(facts)
    if spec.pv:
        assert "BootMode" not in params and params["KernelId"] == "aki-12345678"
        assert params["RootDeviceName"] == ("/dev/sda" if spec.partitioned else "/dev/sda1")
    else:
        assert spec.boot_mode is not None and params["BootMode"] == spec.boot_mode.value


@pytest.mark.parametrize("spec", SPECS)
def test_lint_and_the_cli_know_it(spec: LayoutSpec) -> None:
    assert spec.layout.value in CLI_LAYOUTS
    if spec.pv:  # lint's GRUB 0.97 model runs the AKI that reads a disk with this label
        assert variant_of_table(spec.table.value if spec.table else None) is spec.aki
