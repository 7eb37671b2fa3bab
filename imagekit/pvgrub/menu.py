"""menu.lst as GRUB 0.97 runs it on PV-GRUB, decided by GRUB 0.97 itself.

GRUB 0.97 (stage2.c) reads menu.lst line by line: a command it does not know is skipped where it stands
(in the global section and inside an entry alike: `uuid` is dropped, the entry still runs); a command it
knows that is menu-only (`timeout`, `default`, `fallback`, `hiddenmenu`) inside an entry fails that
entry with Error 27 when it runs. A failing entry hands over to the next `fallback` entry; when none is
left PV-GRUB shows the menu again and waits (a hang on EC2).

The shell's own `kernel`/`initrd` are GRUB 0.97's i386 loaders in 3 MiB of emulated memory (a real
kernel fails with Error 28, 16 or crashes the shell). PV-GRUB does not use them: Xen's Mini-OS
`load_image`/`load_initrd` (stubdom/grub/mini-os.c) grub_open the file and grub_read it whole into
memory; Xen's domain builder judges the bytes at boot. So the menu is run by the shell in menu mode on a
*derived* menu.lst, identical but for:
  - `kernel [--opts] FILE ARGS`, `initrd FILE`, `module FILE` -> `dump FILE OUT` (grub_open + grub_read
    to the end, like load_file; the bytes land in OUT). An initrd before any kernel in its entry is left
    alone: the shell's initrd then fails with Error 19, as PV-GRUB's does.
  - `timeout N` -> `timeout 0`, `hiddenmenu` dropped: nobody presses a key on EC2, so the countdown only
    delays (and a key would cancel the fallback); no timeout at all is recorded: PV-GRUB waits forever.
  - each entry ends with `print imagekit-boot N` and `quit`: reaching them is "this entry boots".
  - titles carry their entry number, so each `Booting '...'` names its entry.
  - `savedefault` -> a `print` saying it was not run (the shell's crashes; PV-GRUB's is Xen's own).
The derived menu sits on a small ext2 helper disk mapped as (fd1).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from imagekit.pvgrub.shell import CommandResult, FileRead, GrubError, Shell, ShellFailed, open_shell, parse_error
from imagekit.pvgrub.variant import Variant
from imagekit.util.errors import UsageError
from imagekit.util.run import run

MENU_ONLY = frozenset({"default", "fallback", "hiddenmenu", "timeout", "title"})  # BUILTIN_MENU, no CMDLINE
LOADERS = {"kernel": "kernel", "initrd": "initrd", "module": "module", "modulenounzip": "module"}
HELPER_DRIVE = "(fd1)"
MARK = "imagekit-boot"
# Commands the shell cannot stand in for. savedefault: 0.97-80's crashes the shell (SIGSEGV), and PV-GRUB's
# is Xen's own (30savedefault.diff: a `default` file beside menu.lst); it is reported, not run.
NOT_RUN = {"savedefault": "imagekit: savedefault is not run (PV-GRUB writes its default file)"}
BOOTING = re.compile(r"^  Booting '(?:imagekit-entry-(\d+) ?)(.*)'$", re.MULTILINE)
# PV-GRUB 1.03 and earlier: one place per AKI; 1.04 and later: this order (shared/REFERENCE.md).
MENU_103 = {Variant.HD0: ("(hd0)/boot/grub",), Variant.HD00: ("(hd0,0)/boot/grub",)}
MENU_104 = ("(hd0)/boot/grub", "(hd0,0)/boot/grub", "(hd0,0)/grub", "(hd0,1)/boot/grub", "(hd0,1)/grub",
            "(hd0,2)/boot/grub", "(hd0,2)/grub", "(hd0,3)/boot/grub", "(hd0,3)/grub")


@dataclass(frozen=True)
class Line:
    number: int  # 1-based line of menu.lst where the command starts
    text: str  # as GRUB's get_line_from_config delivers it (tabs as spaces, continuations joined)

    @property
    def word(self) -> str:
        """The command name as find_command cuts it: up to a space or '='."""
        return re.split(r"[ =]", self.text, maxsplit=1)[0]

    @property
    def arg(self) -> str:
        """What follows the command (skip_to(1, ...): spaces and '=' skipped)."""
        return self.text[len(self.word):].lstrip(" =")


def config_lines(text: str) -> list[Line]:
    """menu.lst split as stage2's get_line_from_config: CR dropped, tab -> space, backslash-newline joins,
    '#' comments only at a line's start, leading blanks and empty lines skipped."""
    lines: list[Line] = []
    number, start, buf = 1, 1, ""
    text = text.replace("\r", "").replace("\t", " ")
    for physical in text.split("\n"):
        piece = physical
        if not buf:
            start = number
            piece = piece.lstrip(" ")
            if piece.startswith("#"):
                piece = ""
        if piece.endswith("\\"):
            buf += piece[:-1] + " "
        else:
            buf += piece
            if buf:
                lines.append(Line(start, buf))
            buf = ""
        number += 1
    if buf:
        lines.append(Line(start, buf))
    return lines


@dataclass(frozen=True)
class Entry:
    index: int
    title: str
    line: int
    commands: tuple[Line, ...]  # every command line of the entry, as written (GRUB decides what runs)
    skipped: tuple[Line, ...]  # those GRUB 0.97 does not know: it drops them without a word


@dataclass(frozen=True)
class Menu:
    path: str  # where it was found, as PV-GRUB names it
    default: str | None  # the `default` argument as written (GRUB itself resolves it)
    fallback: str | None
    timeout: str | None  # None: no timeout line, PV-GRUB waits for a key forever
    hidden: bool
    entries: tuple[Entry, ...]
    global_lines: tuple[Line, ...]  # the lines before the first title
    skipped: tuple[Line, ...]  # unknown commands in the global section


def read_menu(path: str, text: str, known: frozenset[str]) -> Menu:
    """menu.lst cut into its global section and entries; `skipped` names what GRUB 0.97 will drop, by the
    command table of the shell that runs it. default/fallback/timeout are kept as written: GRUB resolves them."""
    head: list[Line] = []
    sections: list[tuple[Line, list[Line]]] = []
    for line in config_lines(text):
        if line.word == "title":
            sections.append((line, []))
        else:
            (sections[-1][1] if sections else head).append(line)
    values = {line.word: line.arg for line in head if line.word in ("default", "fallback", "timeout")}
    entries = tuple(Entry(i, title.arg, title.number, tuple(lines), tuple(x for x in lines if x.word not in known))
                    for i, (title, lines) in enumerate(sections))
    return Menu(path, values.get("default"), values.get("fallback"), values.get("timeout"),
                any(line.word == "hiddenmenu" for line in head), entries, tuple(head),
                tuple(x for x in head if x.word not in known))


@dataclass(frozen=True)
class Load:
    """A kernel, initrd or module line, loaded as PV-GRUB's Mini-OS load_file does: read whole."""

    kind: str  # kernel | initrd | module
    line: Line
    file: str  # the file as the line names it
    args: str  # the rest: the kernel command line
    read: FileRead


@dataclass(frozen=True)
class Attempt:
    """One entry GRUB 0.97 tried, in the order it tried them: the default, then fallbacks."""

    entry: Entry
    results: tuple[CommandResult, ...]  # the entry's commands that ran, with what GRUB printed
    error: GrubError | None
    loads: tuple[Load, ...]

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def failed_at(self) -> Line | None:
        """The menu.lst line whose command failed."""
        if self.ok or not self.results:
            return None
        return next((c for c in self.entry.commands if c.text == self.results[-1].command), None)

    def loaded(self, kind: str) -> Load | None:
        return next((ld for ld in self.loads if ld.kind == kind and ld.read.ok), None)


@dataclass(frozen=True)
class BootPlan:
    """What PV-GRUB would do with the image: where it found menu.lst, each entry tried, which one boots."""

    menu: Menu | None
    searched: tuple[tuple[str, GrubError | None], ...]  # each menu.lst path tried, with its error
    attempts: tuple[Attempt, ...]

    @property
    def booted(self) -> Attempt | None:
        last = self.attempts[-1] if self.attempts else None
        return last if last and last.ok else None

    @property
    def fell_back(self) -> bool:
        return self.booted is not None and len(self.attempts) > 1


@dataclass(frozen=True)
class _Derived:
    """The derived menu.lst and, per entry, its commands as sent and the loads they stand for."""

    text: str
    sent: dict[int, list[tuple[str, Line]]]  # per entry: the line the shell echoes for it, its menu.lst line
    loads: dict[int, list[tuple[str, Line, str, str, Path]]]


def loader_file(line: Line) -> tuple[str, str]:
    """(FILE, ARGS) of `kernel [--type=T] [--no-mem-option] FILE ARGS` (kernel_func's options skipped)."""
    words = line.arg.split(" ")
    while words and words[0].startswith("--"):
        words.pop(0)
    words = [w for w in words if w] or [""]
    return words[0], " ".join(words[1:])


def derive(shell: Shell, menu: Menu, only: int | None = None, stand_in: frozenset[str] = frozenset()) -> _Derived:
    """The menu.lst the shell runs (see the module's docstring for each change). `only`: that entry alone
    (its default and fallback lines replaced by `default ONLY`). `stand_in`: load kinds whose `dump` is only
    printed, as the shell would echo it, and not run (`split_run`: another shell reads those files)."""
    to = shell.disk.to_shell
    out = ["timeout 0"] if menu.timeout is None else []
    out += ["timeout 0" if line.word == "timeout" else to(line.text)
            for line in menu.global_lines
            if line.word != "hiddenmenu" and not (only is not None and line.word in ("default", "fallback"))]
    out += [f"default {only}"] if only is not None else []
    sent: dict[int, list[tuple[str, Line]]] = {}
    loads: dict[int, list[tuple[str, Line, str, str, Path]]] = {}
    for entry in menu.entries:
        out.append(f"title imagekit-entry-{entry.index} {entry.title}")
        sent[entry.index], loads[entry.index] = [], []
        have_kernel = False
        for line in entry.commands:
            if line.word == "boot":
                break
            kind = LOADERS.get(line.word)
            command = to(line.text)
            if kind and (kind == "kernel" or have_kernel):
                file, args = loader_file(line)
                target = shell.workdir / f"entry{entry.index}-{len(loads[entry.index])}.{kind}"
                loads[entry.index].append((kind, line, file, args, target))
                command = f"dump {to(file)} {target}"
                have_kernel = have_kernel or kind == "kernel"
            echo = command
            if kind in stand_in and command.startswith("dump "):
                command = f"print {command}"  # prints the line the dump would echo; reads nothing
            if line.word in NOT_RUN:
                command, echo = f"print {NOT_RUN[line.word]}", NOT_RUN[line.word]  # print does not echo
            out.append(command)
            sent[entry.index].append((echo, line))
        out += [f"print {MARK} {entry.index}", "quit"]
    return _Derived("\n".join(out) + "\n", sent, loads)


def helper_disk(workdir: Path, menu_text: str) -> Path:
    """A small ext2 image holding the derived menu.lst (mke2fs -d: no root, no loop device)."""
    tree = workdir / "helper"
    tree.mkdir()
    (tree / "menu.lst").write_text(menu_text, encoding="latin-1")
    image = workdir / "helper.img"
    with image.open("wb") as f:
        f.truncate(1 << 20)
    run(["mke2fs", "-q", "-F", "-t", "ext2", "-d", tree, image])
    return image


def known_commands(shell: Shell) -> frozenset[str]:
    """The shell's command table: `help --all` lists the command-line commands (two columns), plus the
    menu-only ones, which it does not list."""
    (result,) = shell.run(["help --all"])
    names = {half.split(" ", 1)[0] for row in result.output.splitlines() for half in (row[:39], row[39:])}
    return frozenset(n for n in names if n) | MENU_ONLY


def find_menu(shell: Shell, dirs: Sequence[str]) -> tuple[str | None, str, tuple[tuple[str, GrubError | None], ...]]:
    """The first menu.lst GRUB 0.97 can read in dirs: (path, exact text, every path tried with its error)."""
    tried: list[tuple[str, GrubError | None]] = []
    for directory in dirs:
        path = f"{directory}/menu.lst"
        target = shell.workdir / "menu.lst"
        read = shell.dump(path, target)
        tried.append((path, read.error))
        if read.ok:
            return path, target.read_text(encoding="latin-1"), tuple(tried)
    return None, "", tuple(tried)


def attempt_of(menu: Menu, derived: _Derived, shell: Shell, index: int, block: str) -> Attempt:
    entry = menu.entries[index]
    marker = f"\n{MARK} {index}\n"  # what `print` printed (print does not echo itself)
    booted = marker in block
    lines = block.split(marker)[0].splitlines()
    results: list[CommandResult] = []
    current: tuple[str, Line] | None = None
    body: list[str] = []
    queue = list(derived.sent[index])

    def flush() -> None:
        if current is not None:
            out = NOT_RUN.get(current[1].word) or shell.disk.from_shell("\n".join(body) + "\n")
            results.append(CommandResult(current[1].text, out, parse_error(out)))

    for text in lines:
        match = next((i for i, (cmd, _) in enumerate(queue) if cmd == text), None)
        if match is not None:
            flush()
            current, body = queue[match], []
            del queue[: match + 1]
        else:
            body.append(text)
    flush()
    error = None if booted else parse_error(block) or GrubError(0, "the entry stopped without an error")
    loads = tuple(Load(kind, line, file, args, _read(shell, file, target, results, line))
                  for kind, line, file, args, target in derived.loads[index]
                  if any(r.command == line.text for r in results))
    return Attempt(entry, tuple(results), error, loads)


def _read(shell: Shell, file: str, target: Path, results: list[CommandResult], line: Line) -> FileRead:
    error = next((r.error for r in results if r.command == line.text), None)
    size = target.stat().st_size if target.exists() else None
    return FileRead(file, size, error, target if target.exists() and error is None else None)


def searches_one_place(aki_version: str) -> bool:
    """PV-GRUB 1.03 and earlier read menu.lst from one place; 1.04 and later search."""
    return tuple(int(p) for p in aki_version.split(".")) <= (1, 3)


def plan_boot(image: Path, variant: Variant, *, aki_version: str = "1.03", keep: Path | None = None,
              only: int | None = None) -> BootPlan:
    """Run menu.lst as PV-GRUB (that AKI version, that variant) would; kernel/initrd bytes are moved to
    `keep` (a directory) when given, named entryN-K.kernel / .initrd. `only=N` runs entry N alone, no
    fallback: how lint learns the error of an entry GRUB would not try (each run reads that entry's files)."""
    dirs = MENU_103[variant] if searches_one_place(aki_version) else MENU_104
    with open_shell(image, variant) as shell:
        path, text, tried = find_menu(shell, dirs)
        if path is None:
            return BootPlan(None, tried, ())
        menu = read_menu(path, text, known_commands(shell))
        if only is not None and not 0 <= only < len(menu.entries):
            raise UsageError(f"{path} has {len(menu.entries)} entries: there is no entry {only}")
        with ExitStack() as kept_until_moved:
            attempts = split_run(image, variant, menu, only, kept_until_moved) if splits(menu) else None
            if attempts is None:
                attempts = run_menu(shell, menu, derive(shell, menu, only))
            if keep is not None:
                attempts = tuple(_kept(a, keep) for a in attempts)
        return BootPlan(menu, tried, attempts)


def run_menu(shell: Shell, menu: Menu, derived: _Derived) -> tuple[Attempt, ...]:
    """The derived menu.lst run by GRUB 0.97 in menu mode: each entry it tried, in order."""
    shell.add_drive(HELPER_DRIVE, helper_disk(shell.workdir, derived.text))
    output = shell.invoke([f"--config-file={HELPER_DRIVE}/menu.lst"], b"")
    return tuple(attempt_of(menu, derived, shell, int(m.group(1)), block) for m, block in _blocks(output))


# --- reading the kernels and the initrds at once ------------------------------------------------------------
# GRUB 0.97 reads a file one byte per grub_read (~30 ns a byte: ~2 s for a cloud kernel, ~2 s for its initrd).
# Two shells run the same derived menu at once: one reads the kernels and only prints the initrd/module dumps,
# the other the reverse. When every file each one read was read whole and both took the same path, each
# command did exactly what it does in one shell that reads them all (a stood-in dump succeeds, as the real one
# did in the other shell, and a dump changes nothing a later command reads), so the two are merged. Any other
# outcome (a file that fails, a shell that dies) is decided by the one-shell run, as before.
SPLIT_ENV = "IMAGEKIT_GRUB097_SPLIT"  # "off": one shell reads every file, in order
KERNELS = frozenset({"kernel"})
OTHERS = frozenset({"initrd", "module"})


def splits(menu: Menu) -> bool:
    """Worth two shells: some entry loads a kernel and something else (and the split is not turned off)."""
    if os.environ.get(SPLIT_ENV, "") == "off":
        return False
    kinds = {LOADERS.get(line.word) for entry in menu.entries for line in entry.commands}
    return "kernel" in kinds and bool(kinds & OTHERS)


def split_run(image: Path, variant: Variant, menu: Menu, only: int | None,
              stack: ExitStack) -> tuple[Attempt, ...] | None:
    """The menu's attempts from two shells at once, or None when they cannot stand for one (see above)."""
    shells = [stack.enter_context(open_shell(image, variant)) for _ in range(2)]
    runs = [(shells[0], derive(shells[0], menu, only, stand_in=OTHERS)),
            (shells[1], derive(shells[1], menu, only, stand_in=KERNELS))]
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(run_menu, shell, menu, derived) for shell, derived in runs]
        try:
            kernels, others = (f.result() for f in futures)
        except ShellFailed:
            return None
    if not _agree(kernels, others):
        return None
    return tuple(_merged(a, b) for a, b in zip(kernels, others, strict=True))


def _agree(kernels: Sequence[Attempt], others: Sequence[Attempt]) -> bool:
    def read_whole(attempts: Sequence[Attempt], kinds: frozenset[str]) -> bool:
        return all(ld.read.ok and ld.read.data is not None for a in attempts for ld in a.loads if ld.kind in kinds)

    def path(attempts: Sequence[Attempt]) -> list[tuple[int, tuple[str, ...], GrubError | None, tuple[str, ...]]]:
        return [(a.entry.index, tuple(r.command for r in a.results), a.error, tuple(ld.kind for ld in a.loads))
                for a in attempts]

    return read_whole(kernels, KERNELS) and read_whole(others, OTHERS) and path(kernels) == path(others)


def _merged(kernels: Attempt, others: Attempt) -> Attempt:
    """One attempt: the kernel reads from the shell that read kernels, the others' reads from the other."""
    def read_by_others(result: CommandResult) -> bool:
        return LOADERS.get(Line(0, result.command).word) in OTHERS

    results = tuple(b if read_by_others(a) else a for a, b in zip(kernels.results, others.results, strict=True))
    loads = tuple(b if a.kind in OTHERS else a for a, b in zip(kernels.loads, others.loads, strict=True))
    return Attempt(kernels.entry, results, kernels.error, loads)


def _blocks(output: str) -> list[tuple[re.Match[str], str]]:
    marks = list(BOOTING.finditer(output))
    ends = [m.start() for m in marks[1:]] + [len(output)]
    return [(m, output[m.end():end]) for m, end in zip(marks, ends, strict=True)]


def _kept(attempt: Attempt, keep: Path) -> Attempt:
    keep.mkdir(parents=True, exist_ok=True)
    loads = []
    for ld in attempt.loads:
        data = ld.read.data
        if data is not None:
            data = Path(shutil.move(data, keep / data.name))
        loads.append(Load(ld.kind, ld.line, ld.file, ld.args, FileRead(ld.read.path, ld.read.size, ld.read.error,
                                                                      data)))
    return Attempt(attempt.entry, attempt.results, attempt.error, tuple(loads))
