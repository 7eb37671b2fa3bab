"""A NoCloud seed for cloud-init images: a small FAT disk labelled `cidata` with user-data and meta-data.

cloud-init's NoCloud datasource finds the seed by its label, wherever the disk is attached, so
`imagekit boot --nocloud` attaches it after the EC2 disks. Made rootless with dosfstools and mtools
(`mkfs.vfat -C`, `mcopy -i`); the meta-data names the same instance as the local metadata service.
"""

from __future__ import annotations

from pathlib import Path

from imagekit.boot.imds import Config
from imagekit.util.run import run

LABEL = "CIDATA"  # cloud-init compares the label case-insensitively; FAT labels are upper case
SEED_KIB = 1024
EMPTY_USER_DATA = b"#cloud-config\n{}\n"


def meta_data(cfg: Config) -> str:
    return f"instance-id: {cfg.instance_id}\nlocal-hostname: {cfg.hostname}\n"


def make_seed(workdir: Path, user_data: Path | None, cfg: Config | None = None) -> Path:
    """`workdir/nocloud-seed.img`: a FAT filesystem holding user-data and meta-data."""
    cfg = cfg or Config()
    files = workdir / "nocloud"
    files.mkdir(exist_ok=True)
    (files / "user-data").write_bytes(user_data.read_bytes() if user_data else EMPTY_USER_DATA)
    (files / "meta-data").write_text(meta_data(cfg))
    seed = workdir / "nocloud-seed.img"
    seed.unlink(missing_ok=True)
    run(["mkfs.vfat", "-n", LABEL, "-C", seed, str(SEED_KIB)])
    run(["mcopy", "-i", seed, files / "user-data", files / "meta-data", "::"])
    return seed
