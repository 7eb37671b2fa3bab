"""A menu.lst as GRUB 0.97 itself reads it: the oracle for tests that render one (not imagekit's parser).

The real `grub` shell (Debian's 0.97-80, the one lint runs) is given the menu.lst as written, on a small
ext2 disk shaped as the AKI sees it, and run in menu mode without curses. What it prints is the answer:
  - the menu it lists (` N: title`, every entry, as GRUB cut them);
  - for each entry, chosen with the menu keys (`^` to the top, `v` N times, Enter), each command it echoes
    as it runs it (tabs, continuations and comments already handled by stage2's get_line_from_config).
For the hd0 AKI, `(hd0)` is written `(fd0)`, as lint's shell has it: stock 0.97 mounts a whole-disk
filesystem only as a floppy, and PV-GRUB's fulldisk patch makes (hd0) that. Each file the menu names is
there as a small bzImage-shaped kernel, so `kernel` and `initrd` load and every command of the entry runs;
the shell's boot then fails (Error 28: no room in its 3 MiB), which ends the run.
The keys are read only while the menu counts down: the menu needs a timeout of at least 1.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from imagekit.bootloader.menulst import Entry
from imagekit.pvgrub.shell import open_shell
from imagekit.pvgrub.variant import Variant
from tests.kernel.bzimage_factory import make_bzimage

LISTED = re.compile(r"^ ?(\d+): (.*)$")
RULER = "-" * 67
BOOTING = re.compile(r"^  Booting '(.*)'$")
STAND_IN = make_bzimage(b"\0" * 4096)  # GRUB 0.97's i386 loader takes it: [Linux-bzImage, setup=...]
PART_START = 2048


@dataclass(frozen=True)
class GrubRead:
    titles: tuple[str, ...]  # the entries GRUB lists, in order
    commands: tuple[tuple[str, ...], ...]  # per entry: the commands GRUB echoed running it
    outputs: tuple[str, ...]  # per entry: what the shell printed from `Booting` on (for failure messages)


def grub097_reads(menu: str, variant: Variant, files: Iterable[str], *, separate_boot: bool) -> GrubRead:
    """menu (menu.lst's text) read and run entry by entry by GRUB 0.97 on a disk with `files` (paths on the
    boot filesystem, as the menu names them) and the menu at /boot/grub (/grub on a separate /boot)."""
    with tempfile.TemporaryDirectory(prefix="imagekit-grub097-reads-") as tmp:
        work = Path(tmp)
        menu_path = "grub/menu.lst" if separate_boot else "boot/grub/menu.lst"
        tree = work / "tree"
        (tree / menu_path).parent.mkdir(parents=True)
        # the hd0 AKI's fulldisk patch, emulated as the shell lint runs does it: (hd0) is (fd0), mapped whole
        (tree / menu_path).write_bytes(_shell_names(menu, variant).encode())
        for name in files:
            path = tree / name.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(STAND_IN)
        image = _disk(work, tree, variant)
        root = "(hd0)" if variant is Variant.HD0 else "(hd0,0)"
        with open_shell(image, variant) as shell:
            config = shell.disk.to_shell(f"{root}/{menu_path}")
            listing = shell.disk.from_shell(shell.invoke([f"--config-file={config}"], b"\n"))
            titles = _listed(listing)
            commands, outputs = [], []
            for n in range(len(titles)):
                keys = ("^" * len(titles) + "v" * n + "\n").encode()
                out = shell.disk.from_shell(shell.invoke([f"--config-file={config}"], keys))
                booted = _booted(out)
                assert booted is not None and booted[0] == titles[n], (n, titles, out)
                commands.append(booted[1])
                outputs.append(out[out.find("  Booting"):])
    return GrubRead(titles, tuple(commands), tuple(outputs))


def entry_files(entries: Iterable[Entry]) -> set[str]:
    """The kernels and initrds the entries name: the files the oracle's disk holds."""
    return {f for e in entries for f in (e.kernel, e.initrd) if f}


def entry_commands(entries: Iterable[Entry], root: str) -> tuple[tuple[str, ...], ...]:
    """What GRUB should echo running each entry imagekit renders: root, kernel with its arguments, initrd."""
    return tuple((f"root {root}", f"kernel {e.kernel} {e.kernel_args}".rstrip(),
                  *([f"initrd {e.initrd}"] if e.initrd else [])) for e in entries)


def _shell_names(text: str, variant: Variant) -> str:
    return text.replace("(hd0)", "(fd0)") if variant is Variant.HD0 else text


def _disk(work: Path, tree: Path, variant: Variant) -> Path:
    fs = work / "fs.img"
    with fs.open("wb") as f:
        f.truncate(8 << 20)
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext2", "-d", tree, fs], check=True, capture_output=True)
    if variant is Variant.HD0:
        return fs  # the hd0 AKI: the filesystem is the whole disk
    disk = work / "disk.img"
    with disk.open("wb") as out:
        out.truncate(PART_START * 512)
        out.seek(PART_START * 512)
        out.write(fs.read_bytes())
    subprocess.run(["sfdisk", "-q", disk], input=f"start={PART_START}, type=83, bootable\n", text=True,
                   check=True, capture_output=True)
    return disk


def _listed(output: str) -> tuple[str, ...]:
    """The entries between the menu's two rulers (` 0: title`)."""
    lines = output.splitlines()
    rulers = [i for i, line in enumerate(lines) if line == RULER]
    assert len(rulers) >= 2, f"GRUB 0.97 showed no menu: {output[-400:]!r}"
    titles = []
    for line in lines[rulers[0] + 1: rulers[1]]:
        match = LISTED.match(line)
        assert match and int(match.group(1)) == len(titles), (line, output)
        titles.append(match.group(2))
    return tuple(titles)


def _booted(output: str) -> tuple[str, tuple[str, ...]] | None:
    """(title, commands echoed) of the entry the shell booted: command echoes start in column 0; what the
    commands print is indented (` Filesystem type ...`, `   [Linux-bzImage ...]`); errors say `Error N:`."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if BOOTING.match(line)), None)
    if start is None:
        return None
    match = BOOTING.match(lines[start])
    assert match is not None
    echoed = []
    for line in lines[start + 1:]:
        if line.startswith(("Error ", "Press any key")) or BOOTING.match(line):
            break
        if line and not line.startswith(" "):
            echoed.append(line)
    return match.group(1), tuple(echoed)
