import shutil
import subprocess

import pytest
from bzimage_factory import compress

from imagekit.kernel.bzimage import KernelFormatError
from imagekit.kernel.initrd import initrd_members, module_names


def newc(tmp_path, files: dict[str, bytes]) -> bytes:
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    listing = "\n".join(files) + "\n"
    return subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], input=listing.encode(), cwd=tmp_path,
                          capture_output=True, check=True).stdout


@pytest.mark.parametrize("compression", ["gzip", "xz", "zstd", "lz4", "bzip2"])
def test_early_plus_compressed(tmp_path, compression):
    early = newc(tmp_path / "early", {"kernel/x86/microcode/GenuineIntel.bin": b"ucode"})
    main = newc(tmp_path / "main", {"usr/lib/modules/6.1/kernel/drivers/nvme/host/nvme.ko": b"x",
                                    "usr/lib/modules/6.1/kernel/drivers/net/ena/ena.ko.xz": b"y"})
    payload = compress(main, compression)
    if compression != "gzip":
        payload = payload[:-4]  # initrds carry no size trailer
    members = initrd_members(early + b"\0" * 512 + payload)
    assert "kernel/x86/microcode/GenuineIntel.bin" in members
    assert {"nvme", "ena"} <= module_names(members)


def test_host_initrd_matches_lsinitramfs(host_kernel):
    initrd = host_kernel.with_name(host_kernel.name.replace("vmlinuz-", "initrd.img-"))
    if not initrd.exists() or shutil.which("lsinitramfs") is None:
        pytest.skip("no host initrd or no lsinitramfs")
    ours = initrd_members(initrd.read_bytes())
    theirs = subprocess.run(["lsinitramfs", initrd], capture_output=True, text=True, check=True).stdout.split()
    assert sorted(ours) == sorted(theirs)


def test_garbage():
    with pytest.raises(KernelFormatError, match="neither a cpio archive"):
        initrd_members(b"hello world" * 10)
