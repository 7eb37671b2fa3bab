"""Test helpers: run the CLI as a user would, make a tiny busybox userland."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECIPES = REPO / "recipes"
IMAGEKIT = [sys.executable, "-m", "imagekit"]



def run_imagekit(*args: str | os.PathLike[str], check: bool = False, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the imagekit CLI as a user would (a subprocess), capturing stdout and stderr."""
    proc = subprocess.run([*IMAGEKIT, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd or REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"imagekit {args} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def make_small_tree(dest: Path) -> Path:
    """A tiny userland: busybox-static as /bin/sh and /sbin/init. The kernel comes from the host profile."""
    for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "boot", "run"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(shutil.which("busybox") or "/bin/busybox", dest / "bin/busybox")
    for applet in ("sh", "mount", "cat", "echo", "poweroff", "sleep"):
        (dest / "bin" / applet).symlink_to("busybox")
    init = dest / "sbin/init"
    init.write_text("#!/bin/sh\nmount -t proc proc /proc\necho imagekit-small-init\npoweroff -f\n")
    init.chmod(0o755)
    return dest


# Shipped recipes the session's `recipe_images` builds with SOURCE_DATE_EPOCH: the LVM one, so that its boot
# test and the readers' parity run on an image whose LVM metadata imagekit rewrote (image/lvm_rewrite.py)
EPOCH_BUILDS = {"debian-12-lvm": 1767225600}


SMALL_RECIPE = """\
name = "{name}"
size = "{size}"
layout = "{layout}"
hostname = "small"
[rootfs]
source = "directory"
path = "tree"
[kernel]
profile = "host-cloud-amd64"
{extra}
"""


def processes_naming(where: Path, program: str = "") -> list[int]:
    """Processes on the machine whose command line names a path under `where` (and whose argv[0]
    contains `program`): what a run left behind."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and program.encode() in argv[0] and any(str(where).encode() in a for a in argv):
            found.append(int(cmdline.parent.name))
    return found


def dumpe2fs(image: Path) -> dict[str, int | str]:
    """An ext filesystem's superblock as e2fsprogs' dumpe2fs -h prints it (numbers as ints): an oracle
    independent of imagekit's own superblock reader."""
    out = subprocess.run(["dumpe2fs", "-h", str(image)], capture_output=True, text=True, check=True).stdout
    fields: dict[str, int | str] = {}
    for line in out.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            value = value.strip()
            fields[key.strip()] = int(value) if value.isdigit() else value
    return fields


def sha256(path: Path) -> str:
    """A file's sha256 (hex), read in chunks (images are gigabytes): what sha256sum prints."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def menu_lst(text: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """menu.lst read as plain lines with a regex: (its global commands, each title's commands), a command
    mapped to the rest of its line (`kernel` -> "/boot/vmlinuz root=... ro"). An oracle independent of
    imagekit's menu.lst parser (bootloader/menulst.py) and of GRUB 0.97's run of it (pvgrub/)."""
    head: dict[str, str] = {}
    entries: list[dict[str, str]] = []
    for line in text.splitlines():
        found = re.fullmatch(r"\s*([a-z]+)(?:[\s=]+(.*?))?\s*", line)
        if not found:
            continue
        command, rest = found[1], found[2] or ""
        if command == "title":
            entries.append({"title": rest})
        elif entries:
            entries[-1][command] = rest
        else:
            head[command] = rest
    return head, entries


def debugfs_cat(image: Path, path: str, offset: int = 0) -> str:
    """A file of the ext filesystem at `offset` bytes into image, as e2fsprogs' debugfs reads it."""
    device = f"{image}?offset={offset}" if offset else str(image)
    proc = subprocess.run(["debugfs", "-R", f"cat {path}", device], capture_output=True, text=True, check=True)
    assert "File not found" not in proc.stderr, proc.stderr
    return proc.stdout
