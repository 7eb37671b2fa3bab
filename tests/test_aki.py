import json

import pytest
from click.testing import CliRunner

from imagekit.cli import cli
from imagekit.pvgrub.aki import Aki, AkiNotFound, find_aki, list_akis, load_table
from imagekit.util.errors import UsageError


def invoke(*args: str):
    return CliRunner().invoke(cli, ["aki", *args], catch_exceptions=False, standalone_mode=False)


def test_tables_have_every_cell():
    old, new = load_table("1.03"), load_table("1.05")
    assert len(old) == 8 * 2 * 2  # 8 regions x hd0/hd00 x x86_64/i386 (seed 002)
    assert len(new) == 10 * 2  # 10 regions x x86_64/i386, hd0 only
    for table in (old, new):
        cells = {(a.region, a.arch, a.layout) for a in table}
        assert len(cells) == len(table), "a region/arch/layout appears twice"
        assert all(a.id.startswith("aki-") and len(a.id) == 12 for a in table)
    assert {a.layout for a in new} == {"hd0"}
    assert all(f"pv-grub-{a.layout}_1.03-{a.arch}.gz.manifest.xml" in a.manifest for a in old)


@pytest.mark.parametrize(
    ("region", "arch", "layout", "version", "expected"),
    [
        # seed 002, PV-GRUB 1.03
        ("us-east-1", "x86_64", "hd0", "1.03", "aki-88aa75e1"),
        ("us-east-1", "i386", "hd00", "1.03", "aki-b2aa75db"),
        ("eu-west-1", "x86_64", "hd00", "1.03", "aki-8b655dff"),
        ("ap-northeast-1", "i386", "hd0", "1.03", "aki-42992843"),
        ("us-gov-west-1", "x86_64", "hd00", "1.03", "aki-75a4c056"),
        # PV-GRUB 1.05 (x86_64 / i386)
        ("us-east-1", "x86_64", "hd0", "1.05", "aki-5c21674b"),
        ("us-east-1", "i386", "hd0", "1.05", "aki-04206613"),
        ("eu-central-1", "x86_64", "hd0", "1.05", "aki-931fe3fc"),
        ("us-gov-west-1", "i386", "hd0", "1.05", "aki-5ee9573f"),
    ],
)
def test_find_aki_known_cells(region, arch, layout, version, expected):
    aki = find_aki(region, arch, layout, version)
    assert aki == Aki(aki.id, region, arch, layout, version, aki.manifest)
    assert aki.id == expected


def test_default_version_is_newest_with_layout():
    assert find_aki("eu-west-1", "x86_64", "hd0").version == "1.05"
    assert find_aki("eu-west-1", "x86_64", "hd0").id == "aki-dc9ed9af"
    assert find_aki("eu-west-1", "x86_64", "hd00").version == "1.03"
    assert find_aki("eu-west-1", "x86_64", "hd00").id == "aki-8b655dff"


def test_arch_aliases_and_case():
    assert find_aki("US-EAST-1", "amd64", "HD0", "1.03").id == "aki-88aa75e1"


def test_unknown_values_list_the_known_ones():
    with pytest.raises(AkiNotFound, match=r"--region: unknown region 'mars-1'; known: .*eu-west-1"):
        find_aki("mars-1", "x86_64", "hd0")
    with pytest.raises(AkiNotFound, match=r"--arch: unknown arch 'arm64'; known: i386, x86_64"):
        find_aki("us-east-1", "arm64", "hd0")
    with pytest.raises(AkiNotFound, match=r"--layout: unknown layout 'hd1'"):
        find_aki("us-east-1", "x86_64", "hd1")
    with pytest.raises(AkiNotFound, match=r"PV-GRUB 1.05 has no hd00 AKI"):
        find_aki("us-east-1", "x86_64", "hd00", "1.05")
    with pytest.raises(AkiNotFound, match=r"no hd00 AKI in eu-central-1; it covers .*us-east-1"):
        find_aki("eu-central-1", "x86_64", "hd00")
    assert issubclass(AkiNotFound, UsageError)


def test_list_filters():
    rows = list_akis(region="us-east-1")
    assert len(rows) == 6 and {a.version for a in rows} == {"1.03", "1.05"}
    assert [a.id for a in list_akis("sa-east-1", "i386", "hd0", "1.05")] == ["aki-7cd34110"]
    with pytest.raises(AkiNotFound, match="known"):
        list_akis(region="nowhere")


def test_cli_prints_the_id():
    result = invoke("--region", "eu-west-1", "--arch", "x86_64", "--layout", "hd00")
    assert result.output.strip() == "aki-8b655dff"


def test_cli_json():
    data = json.loads(invoke("--region", "us-west-2", "--json").output)
    assert data == {"schema": "imagekit.aki/1", "id": "aki-70cb0e10", "region": "us-west-2", "arch": "x86_64",
                    "layout": "hd0",
                    "version": "1.05", "manifest": "pv-grub-hd0_1.05-x86_64.gz"}


def test_cli_list():
    out = invoke("--list", "--layout", "hd00").output.splitlines()
    assert out[0].split() == ["REGION", "ARCH", "LAYOUT", "PVGRUB", "AKI"]
    assert len(out) == 1 + 16
    doc = json.loads(invoke("--list", "--json").output)
    assert doc["schema"] == "imagekit.aki-list/1"
    rows = doc["akis"]
    assert len(rows) == 32 + 20


def test_cli_errors_exit_2(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "imagekit", "aki", "--region", "mars-1"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: --region: unknown region 'mars-1'; known: ")
    assert "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "imagekit", "aki"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--region is required" in proc.stderr
