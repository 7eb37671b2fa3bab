"""GRUB 0.97's `grub` shell on an image file: read-only, batch, offline, device names as the AKI sees them.

`--read-only` is real in 0.97-80 (`grub --help`: "do not write anything to devices"): the disk is opened
O_RDONLY and BIOS writes are dropped; the tests prove the image's sha256 is unchanged.
The disk is handed over through a device map naming a symlink in a scratch directory, so no path of the
user's (spaces, odd characters) reaches GRUB's device-map parser.

hd0 AKI (partitionless image): stock 0.97 will not mount a filesystem on a *hard disk*'s whole drive
("Filesystem type unknown"); Xen's `50fs_fulldisk.diff` removes exactly that test (`current_drive & 0x80`)
from every filesystem's mount. A floppy drive never had the test, so the image is mapped as (fd0) *and*
(hd0): `(hd0)` is rewritten to `(fd0)` on the way in and back on the way out, which is that patch, while
`(hd0,N)` still reaches the hard-disk mapping and fails as it does on the AKI (no partition table).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from imagekit.pvgrub.fetch import grub_binary
from imagekit.pvgrub.variant import Variant
from imagekit.util.errors import ImagekitError
from imagekit.util.run import run

TIMEOUT = 120  # seconds: a shell that hangs is killed (timeout(1)) rather than waited on
ERROR_LINE = re.compile(r"^Error (\d+): (.*?)\s*$", re.MULTILINE)
PROMPT = "grub> "
SHELL_FLAGS = ("--no-floppy", "--read-only", "--no-pager", "--no-curses")


class ShellFailed(ImagekitError):
    """The shell itself died (a signal, a timeout): not a GRUB error about the image."""


@dataclass(frozen=True)
class GrubError:
    """One of GRUB 0.97's numbered errors (stage2/common.c err_list), as it printed it."""

    number: int
    text: str

    def __str__(self) -> str:
        return f"Error {self.number}: {self.text}"


def parse_error(output: str) -> GrubError | None:
    """The first `Error N: text` GRUB printed in `output`, if any."""
    match = ERROR_LINE.search(output)
    return GrubError(int(match.group(1)), match.group(2)) if match else None


@dataclass(frozen=True)
class Disk:
    """An image as one PV-GRUB AKI sees it: the hd0 AKI (whole disk) or the hd00 AKI (MBR partitions)."""

    image: Path
    variant: Variant

    def device_map(self, link: Path, extra: dict[str, Path] | None = None) -> str:
        drives = {"(fd0)": link, "(hd0)": link} if self.variant is Variant.HD0 else {"(hd0)": link}
        drives.update(extra or {})
        return "".join(f"{drive} {path}\n" for drive, path in drives.items())

    def to_shell(self, text: str) -> str:
        """PV-GRUB's device names -> the shell's (the fulldisk patch emulated by a floppy mapping)."""
        return text.replace("(hd0)", "(fd0)") if self.variant is Variant.HD0 else text

    def from_shell(self, text: str) -> str:
        return text.replace("(fd0)", "(hd0)") if self.variant is Variant.HD0 else text


@dataclass(frozen=True)
class CommandResult:
    """One command given to the shell, with what GRUB printed after it (device names as the AKI's)."""

    command: str
    output: str
    error: GrubError | None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class FileRead:
    """A file read through GRUB 0.97's filesystem code (`dump`: grub_open, then grub_read to the end)."""

    path: str  # as PV-GRUB names it: "(hd0,0)/boot/vmlinuz"
    size: int | None  # bytes read; None when GRUB could not open it
    error: GrubError | None  # open error (15, 17, 2, ...) or read error (16, 14, ...)
    data: Path | None = None  # where the bytes went, when kept

    @property
    def ok(self) -> bool:
        return self.error is None


class Shell:
    """A scratch directory with the device map: `run` feeds commands to one fresh `grub --batch` each time."""

    def __init__(self, disk: Disk, workdir: Path) -> None:
        self.disk = disk
        self.workdir = workdir
        self.link = workdir / "disk.img"
        self.link.symlink_to(disk.image.resolve())
        self.extra: dict[str, Path] = {}
        self.write_map()

    def write_map(self) -> None:
        (self.workdir / "device.map").write_text(self.disk.device_map(self.link, self.extra))

    def add_drive(self, drive: str, image: Path) -> None:
        """Map another drive (the helper that carries a derived menu.lst)."""
        self.extra[drive] = image
        self.write_map()

    def invoke(self, args: Sequence[str], stdin: bytes) -> str:
        """Run the shell with args; its stdout as text (latin-1: one character per byte GRUB wrote)."""
        argv: list[str | Path] = ["timeout", str(TIMEOUT), grub_binary(), *SHELL_FLAGS,
                f"--device-map={self.workdir / 'device.map'}", *args]
        proc = run(argv, check=False, input=stdin, cwd=self.workdir)
        if proc.returncode != 0:
            what = "timed out" if proc.returncode == 124 else f"exited with status {proc.returncode}"
            raise ShellFailed(f"GRUB 0.97's shell {what} on {self.disk.image}",
                              hint="run with -v to see the command; a negative status is a signal")
        return proc.stdout.decode("latin-1")

    def run(self, commands: Sequence[str], *, translate: bool = True) -> tuple[CommandResult, ...]:
        """Each command's result. The shell goes on after an error, so later results still come back.
        translate=False leaves the output as GRUB printed it (a file's text must not be rewritten)."""
        sent = [self.disk.to_shell(c.replace("\t", " ").strip()) for c in commands]
        text = self.invoke(["--batch", "--no-config-file"], "".join(f"{c}\n" for c in [*sent, "quit"]).encode())
        back = self.disk.from_shell if translate else str
        return tuple(CommandResult(command, back(out), parse_error(out))
                     for command, out in zip(commands, split_outputs(text, sent), strict=True))

    def cat(self, path: str) -> tuple[str | None, GrubError | None]:
        """A text file as GRUB's `cat` shows it: tabs expanded, CR dropped, other unprintables as '?'."""
        (result,) = self.run([f"cat {path}"], translate=False)
        return (None, result.error) if result.error else (result.output, None)

    def dump(self, path: str, dest: Path | None = None) -> FileRead:
        """Read `path` whole with GRUB's `dump` (exact bytes), kept at dest when given. GRUB writes into
        the scratch directory (its argument parser splits at whitespace) and the file is moved after.
        The target exists once grub_open succeeded: its size is what grub_read delivered before any error."""
        target = self.workdir / "dump"
        target.unlink(missing_ok=True)
        (result,) = self.run([f"dump {path} {target}"])
        if not target.exists():
            return FileRead(path, None, result.error)
        size = target.stat().st_size
        if dest is None or not result.ok:
            target.unlink()
            return FileRead(path, size, result.error)
        shutil.move(target, dest)
        return FileRead(path, size, None, dest)


def split_outputs(text: str, sent: Sequence[str]) -> list[str]:
    """Cut the shell's stdout into each sent command's output: what follows `grub> CMD` up to the next
    prompt. The last command's output ends at the last `grub> quit` (a file's text may lack a newline)."""
    starts: list[tuple[int, int]] = []
    pos = 0
    for command in sent:
        echo = f"{PROMPT}{command}\n"
        at = text.find(echo, pos)
        if at < 0:
            raise ShellFailed(f"GRUB 0.97's shell did not echo {command!r}; its output: {text[-200:]!r}")
        starts.append((at, at + len(echo)))
        pos = at + len(echo)
    end = text.rfind(f"{PROMPT}quit")
    bounds = [s for s, _ in starts[1:]] + [end if end >= pos else len(text)]
    return [text[body:stop] for (_, body), stop in zip(starts, bounds, strict=True)]


@contextmanager
def open_shell(image: Path, variant: Variant) -> Iterator[Shell]:
    """A Shell on image; its scratch directory (device map, dumped files not kept) is removed after."""
    with tempfile.TemporaryDirectory(prefix="imagekit-grub097-") as tmp:
        yield Shell(Disk(image, variant), Path(tmp))
