import gzip
import shutil

import pytest
from bzimage_factory import compress, make_bzimage

from imagekit.kernel.config import (
    KernelConfig,
    Need,
    Status,
    check_config,
    ikconfig,
    load_config,
    parse_config,
)
from imagekit.util.errors import UsageError

PV_OK = """
CONFIG_XEN=y
CONFIG_XEN_PV=y
CONFIG_HVC_XEN=y
CONFIG_XEN_BLKDEV_FRONTEND=y
CONFIG_XEN_NETDEV_FRONTEND=m
CONFIG_EXT4_FS=y
CONFIG_DEVTMPFS=y
CONFIG_BLK_DEV_INITRD=y
CONFIG_LOCALVERSION="-ec2"
# CONFIG_BLK_DEV_NVME is not set
"""


def by_option(results):
    return {r.option: r for r in results}


def test_parse_config():
    options = parse_config(PV_OK)
    assert options["XEN_PV"] == "y" and options["XEN_NETDEV_FRONTEND"] == "m"
    assert options["BLK_DEV_NVME"] == "n" and options["LOCALVERSION"] == "-ec2"


def test_pv_ok_with_and_without_initrd():
    assert all(r.ok for r in check_config(parse_config(PV_OK), "pv", initrd=True))
    results = by_option(check_config(parse_config(PV_OK), "pv", initrd=False))
    net = results["XEN_NETDEV_FRONTEND"]
    assert (net.status, net.ok, net.note) == (Status.MODULE, False, "no initrd to load it")
    unknown = by_option(check_config(parse_config(PV_OK), "pv"))["XEN_NETDEV_FRONTEND"]
    assert unknown.ok and unknown.note == "needs an initrd"


@pytest.mark.parametrize(
    ("change", "option", "status", "note"),
    [
        ("CONFIG_XEN_PV=y", "XEN_PV", Status.MISSING, ""),
        ("CONFIG_HVC_XEN=y", "HVC_XEN", Status.MISSING, ""),
        ("CONFIG_EXT4_FS=y", "EXT4_FS", Status.MISSING, ""),
    ],
)
def test_pv_missing(change, option, status, note):
    text = PV_OK.replace(change, f"# CONFIG_{option} is not set")
    result = by_option(check_config(parse_config(text), "pv", initrd=True))[option]
    assert (result.status, result.ok, result.severity) == (status, False, "error")


def test_builtin_options_may_not_be_modules():
    result = by_option(check_config(parse_config(PV_OK.replace("HVC_XEN=y", "HVC_XEN=m")), "pv", initrd=True))
    hvc = result["HVC_XEN"]
    assert (hvc.status, hvc.need, hvc.ok, hvc.note) == (Status.MODULE, Need.BUILTIN, False, "must be built in")


def test_legacy_xen_option_only_when_xen_pv_is_unknown():
    old = parse_config(PV_OK.replace("CONFIG_XEN_PV=y\n", ""))  # a kernel before 4.14
    assert by_option(check_config(old, "pv", initrd=True))["XEN"].ok
    new = parse_config(PV_OK.replace("CONFIG_XEN_PV=y", "# CONFIG_XEN_PV is not set"))
    assert not by_option(check_config(new, "pv", initrd=True))["XEN_PV"].ok


def test_filesystem_alternatives_and_unknown_fs():
    text = PV_OK.replace("CONFIG_EXT4_FS=y", "CONFIG_EXT3_FS=m")
    ext3 = check_config(parse_config(text), "pv", fs="ext3", initrd=True)[0]
    assert (ext3.option, ext3.status, ext3.ok) == ("EXT3_FS", Status.MODULE, True)
    xfs = check_config(parse_config(PV_OK), "pv", fs="xfs", initrd=True)[0]
    assert (xfs.option, xfs.ok) == ("XFS_FS", False)
    with pytest.raises(UsageError, match="--fs: 'zfs' is not one of"):
        check_config(parse_config(PV_OK), "pv", fs="zfs")


def test_nitro_needs_nvme_and_ena():
    results = by_option(check_config(parse_config(PV_OK), "nitro", initrd=True))
    assert not results["BLK_DEV_NVME"].ok and not results["ENA_ETHERNET"].ok
    assert results["BLK_DEV_NVME"].severity == "error"


def test_host_config(host_config):
    config = load_config(host_config)
    assert config.source == str(host_config) and config.elf is None
    for target in ("pv", "hvm", "nitro"):
        failed = [r for r in check_config(config, target, initrd=True) if not r.ok]
        assert failed == [], (target, failed)
    # without an initrd Debian's modular drivers do not load
    nitro = by_option(check_config(config, "nitro", initrd=False))
    assert nitro["ENA_ETHERNET"].status is Status.MODULE and not nitro["ENA_ETHERNET"].ok


def test_host_kernel_finds_config_beside_it(host_kernel, host_config):
    config = load_config(host_kernel)
    assert config.source == str(host_config)
    assert config.elf is not None and config.elf.xen_pv


def test_kernel_without_config(tmp_path, host_kernel):
    lonely = tmp_path / "vmlinuz-other"
    shutil.copy(host_kernel, lonely)
    with pytest.raises(UsageError, match="no embedded config") as info:
        load_config(lonely)
    assert "/boot/config-VERSION" in (info.value.hint or "")


def test_embedded_ikconfig(tmp_path, small_elf):
    blob = b"IKCFG_ST" + gzip.compress(PV_OK.encode()) + b"IKCFG_ED"
    vmlinux = small_elf + blob
    assert ikconfig(vmlinux) == PV_OK
    kernel = tmp_path / "vmlinuz-x"
    kernel.write_bytes(make_bzimage(compress(vmlinux, "xz")))
    config = load_config(kernel)
    assert config.source.endswith("(embedded, CONFIG_IKCONFIG)")
    assert config.options["XEN_PV"] == "y"


def test_gzipped_config_and_garbage(tmp_path):
    (tmp_path / "config.gz").write_bytes(gzip.compress(PV_OK.encode()))
    assert isinstance(load_config(tmp_path / "config.gz"), KernelConfig)
    assert load_config(tmp_path / "config.gz").options["HVC_XEN"] == "y"
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(UsageError, match="neither a kernel config"):
        load_config(tmp_path / "notes.txt")
