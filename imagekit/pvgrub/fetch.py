"""Find or fetch GRUB 0.97's `grub` shell: Debian's grub-legacy .deb, unpacked into imagekit's cache.

The package is never installed: grub-legacy conflicts with grub-pc and grub-efi-amd64, the bootloader of
the user's own machine. `apt-get download` fetches the .deb as any user (into a writable directory) and
verifies it against the host apt's signed Release (InRelease -> Packages -> SHA256); imagekit then checks
the .deb against the SHA256 pinned here, so every host runs the same build. `dpkg-deb -x` unpacks it
without root. The binary is i386 and needs libc6-i386 (scripts/setup installs it).
`IMAGEKIT_GRUB_LEGACY_DEB` names a .deb to use instead of downloading (offline hosts; still verified).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from imagekit.pvgrub import memmove
from imagekit.util.cache import cache_dir
from imagekit.util.errors import CommandFailed, ImagekitError
from imagekit.util.run import run

PACKAGE = "grub-legacy"
VERSION = "0.97-80"  # Debian 12 (bookworm) main
DEB_SHA256 = "5af879553d2f20f2f8d585b85bc2b7aa0e3360d1f2744e76c8498d53967c3801"
I386_LOADER = Path("/lib/ld-linux.so.2")  # from libc6-i386
DEB_ENV = "IMAGEKIT_GRUB_LEGACY_DEB"


class Grub097Unavailable(ImagekitError):
    """GRUB 0.97 cannot run here: no cached binary and no way to fetch it, or no 32-bit libc."""


def entry_dir() -> Path:
    """Where the unpacked shell lives: cache_dir()/grub-legacy/<version>/."""
    return cache_dir() / PACKAGE / VERSION


def grub_binary() -> Path:
    """The `grub` shell imagekit runs: grub-legacy VERSION's, fetched and unpacked once, with grub_memmove's
    copy direction patched (imagekit/pvgrub/memmove.py; IMAGEKIT_GRUB097=debian: Debian's binary as it is)."""
    debian = debian_binary()
    return memmove.patched_binary(debian) if memmove.wanted() else debian


def debian_binary() -> Path:
    """The cached `grub` shell of grub-legacy VERSION, fetched and unpacked once."""
    if not I386_LOADER.exists():
        raise Grub097Unavailable(f"GRUB 0.97 is a 32-bit program and {I386_LOADER} is missing (libc6-i386)",
                                 hint="run scripts/setup (it installs libc6-i386, an amd64 package)")
    binary = entry_dir() / "grub"
    if binary.is_file():
        return binary
    return fetch(entry_dir()) / "grub"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_deb(dest: Path) -> Path:
    """The grub-legacy .deb in dest: $IMAGEKIT_GRUB_LEGACY_DEB, else `apt-get download` (run in dest)."""
    given = os.environ.get(DEB_ENV)
    if given:
        if not Path(given).is_file():
            raise Grub097Unavailable(f"{DEB_ENV}={given}: no such file")
        return Path(given)
    try:
        run(["apt-get", "download", f"{PACKAGE}={VERSION}"], cwd=dest)
    except CommandFailed as e:
        raise Grub097Unavailable(
            f"GRUB 0.97 is not in the cache ({entry_dir()}) and `apt-get download {PACKAGE}={VERSION}` "
            f"failed: {e.message}",
            hint=f"connect to the Debian archive once (bookworm main in apt's sources), or set {DEB_ENV} "
                 "to the .deb; imagekit never installs it") from None
    debs = sorted(dest.glob(f"{PACKAGE}_*.deb"))
    if not debs:
        raise Grub097Unavailable(f"apt-get download {PACKAGE}={VERSION} left no .deb in {dest}")
    return debs[0]


def verify_deb(deb: Path) -> None:
    actual = sha256_of(deb)
    if actual != DEB_SHA256:
        raise Grub097Unavailable(f"{deb}: sha256 {actual} is not {PACKAGE} {VERSION}'s {DEB_SHA256}")


def fetch(entry: Path) -> Path:
    """Download, verify and unpack the .deb; the entry appears complete under its name or not at all."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=entry.parent, prefix=".fetch-") as tmp:
        work = Path(tmp)
        deb = download_deb(work)
        verify_deb(deb)
        run(["dpkg-deb", "-x", deb, work / "root"])
        staging = work / "entry"
        staging.mkdir()
        shutil.copy2(work / "root/usr/sbin/grub", staging / "grub")
        shutil.copy2(work / "root/usr/share/doc/grub-legacy/copyright", staging / "copyright")
        (staging / "SOURCE").write_text(f"{PACKAGE} {VERSION} {DEB_SHA256} (apt-get download; dpkg-deb -x)\n")
        staging.chmod(0o755)
        try:
            staging.rename(entry)
        except OSError:
            if not (entry / "grub").is_file():  # lost a race to a complete entry: keep that one
                raise
    return entry
