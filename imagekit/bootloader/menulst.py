"""GRUB-legacy menu.lst: render it (jinja2) and parse it (for lint and the boot test).

PV-GRUB is GRUB 0.97 running as a Xen guest (seeds 002, 004). It reads `/boot/grub/menu.lst` from
`(hd0)` (partitionless image, hd0 AKI) or `(hd0,0)` (first partition, hd00 AKI), boots the `default`
entry and uses `fallback` only when the default cannot be *loaded* (kernel file missing, bad format),
never when a loaded kernel later dies. `MenuLst.pick()` reproduces that choice.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import jinja2

from imagekit.recipe.layouts import Variant
from imagekit.util.errors import ImagekitError

# ASCII digits only, and few of them: menu.lst comes from the image (hostile input); `\d` would take
# any Unicode digit and int() of 5,000 digits raises (Python's int-string limit)
ROOT_RE = re.compile(r"^\(hd(?P<disk>[0-9]{1,3})(?:,(?P<part>[0-9]{1,3}))?\)$")
MAX_NUMBER = 2**31 - 1  # GRUB legacy's safe_parse_maxint: a number must fit an int


class MenuLstError(ValueError):
    """A menu.lst GRUB-legacy would not accept. `line` is 1-based."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass(frozen=True)
class Entry:
    title: str
    root: str | None = None  # "(hd0)" or "(hd0,0)"
    kernel: str | None = None  # path on the boot filesystem, e.g. /boot/vmlinuz-6.1.0-cloud-amd64
    kernel_args: str = ""
    initrd: str | None = None
    line: int = 0  # where the title stands

    @property
    def root_partition(self) -> int | None:
        """None for (hd0) (whole disk), N for (hd0,N)."""
        m = ROOT_RE.match(self.root or "")
        return int(m["part"]) if m and m["part"] is not None else None

    def arg(self, name: str) -> str | None:
        """The value of `name=` on the kernel line (the last one wins, as in Linux)."""
        value = None
        for word in self.kernel_args.split():
            if word.startswith(name + "="):
                value = word[len(name) + 1 :]
        return value


@dataclass(frozen=True)
class Choice:
    index: int
    entry: Entry
    fallback: bool  # True when the default could not be loaded and a fallback was used
    skipped: tuple[int, ...] = ()  # entries tried and not loadable, in order


@dataclass(frozen=True)
class MenuLst:
    default: int = 0
    fallback: tuple[int, ...] = ()
    timeout: int | None = None
    hiddenmenu: bool = False
    entries: tuple[Entry, ...] = field(default_factory=tuple)

    def pick(self, loadable: Callable[[Entry], bool] = lambda e: True) -> Choice | None:
        """The entry PV-GRUB boots: the default if it loads, else each fallback in turn; None if none does."""
        skipped: list[int] = []
        for n, index in enumerate((self.default, *self.fallback)):
            if not 0 <= index < len(self.entries) or index in skipped:
                continue
            entry = self.entries[index]
            if entry.kernel and loadable(entry):
                return Choice(index, entry, fallback=n > 0, skipped=tuple(skipped))
            skipped.append(index)
        return None


# --- rendering -------------------------------------------------------------------------------------

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("imagekit", "templates"),
    keep_trailing_newline=True,
    trim_blocks=False,
    autoescape=False,  # a boot loader config, not HTML
    undefined=jinja2.StrictUndefined,
)


def render_menu_lst(
    entries: Sequence[Entry],
    *,
    root_device: str,
    default: int = 0,
    fallback: int | None = None,
    timeout: int = 1,
    hiddenmenu: bool = False,
) -> str:
    """menu.lst text for `entries`, every one booting from `root_device` ("(hd0)" or "(hd0,0)")."""
    for e in entries:  # GRUB legacy reads a command per line: a line break in a value would inject one
        for what, value in (("title", e.title), ("kernel", e.kernel), ("kernel line", e.kernel_args),
                            ("initrd", e.initrd)):
            if value is not None and any(c in value for c in "\n\r\0"):
                title = (e.title.splitlines() or [""])[0]
                raise ImagekitError(f"menu.lst: the {what} of entry {title!r} holds a line break")
    variant = next((v.value for v in Variant if v.legacy_root == root_device), Variant.HD00.value)
    text = _env.get_template("menu.lst.j2").render(
        entries=entries, root_device=root_device, default=default, fallback=fallback,
        timeout=timeout, hiddenmenu=hiddenmenu, aki_variant=variant,
    )
    return re.sub(r"\n{3,}", "\n\n", text).rstrip("\n") + "\n"


# --- parsing -----------------------------------------------------------------------------------------

_GLOBAL = {"default", "timeout", "fallback", "hiddenmenu", "color", "password", "serial", "terminal",
           "splashimage", "gfxmenu", "foreground", "background"}
_ENTRY = {"root", "rootnoverify", "kernel", "initrd", "module", "boot", "savedefault", "makeactive",
          "chainloader", "lock", "map", "setkey", "quiet", "uppermem"}


def _split(line: str) -> tuple[str, str]:
    m = re.match(r"^([A-Za-z_]+)\s*(?:=\s*|\s+|$)(.*)$", line)
    if not m:
        return line, ""
    return m[1].lower(), m[2].strip()


def _int(value: str, lineno: int, what: str) -> int:
    """A non-negative decimal number as GRUB legacy reads one (ASCII digits, at most MAX_NUMBER)."""
    shown = value if len(value) <= 20 else f"{value[:20]}... ({len(value)} characters)"
    if not re.fullmatch(r"[0-9]{1,10}", value, re.ASCII) or int(value) > MAX_NUMBER:
        raise MenuLstError(lineno, f"{what} {shown!r} is not a number from 0 to {MAX_NUMBER}")
    return int(value)


def parse_menu_lst(text: str) -> MenuLst:
    """Parse GRUB-legacy menu.lst syntax; raise MenuLstError on what GRUB would refuse."""
    default, timeout, hidden = 0, None, False
    fallback: tuple[int, ...] = ()
    entries: list[dict[str, object]] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        cmd, value = _split(line)
        if cmd == "title":
            entries.append({"title": value, "line": lineno})
            continue
        if not entries:
            if cmd == "default":
                default = 0 if value == "saved" else _int(value, lineno, "default")
            elif cmd == "timeout":
                timeout = _int(value, lineno, "timeout")
            elif cmd == "fallback":
                fallback = tuple(_int(v, lineno, "fallback") for v in value.split())
            elif cmd == "hiddenmenu":
                hidden = True
            elif cmd not in _GLOBAL:
                raise MenuLstError(lineno, f"unknown command {cmd!r} before the first title")
            continue
        current = entries[-1]
        if cmd in ("root", "rootnoverify"):
            if not ROOT_RE.match(value):
                raise MenuLstError(lineno, f"root {value!r} is not a GRUB device like (hd0) or (hd0,0)")
            current["root"] = value
        elif cmd == "kernel":
            path, _, args = value.partition(" ")
            if not path:
                raise MenuLstError(lineno, "kernel without a path")
            current["kernel"], current["kernel_args"] = path, args.strip()
        elif cmd == "initrd":
            if not value:
                raise MenuLstError(lineno, "initrd without a path")
            current["initrd"] = value.split()[0]
        elif cmd not in _ENTRY and cmd not in _GLOBAL:
            raise MenuLstError(lineno, f"unknown command {cmd!r} in entry {current['title']!r}")
    return MenuLst(
        default=default,
        fallback=fallback,
        timeout=timeout,
        hiddenmenu=hidden,
        entries=tuple(Entry(**e) for e in entries),  # type: ignore[arg-type]
    )


def split_device(path: str) -> tuple[str | None, str]:
    """'(hd0,0)/boot/vmlinuz' -> ('(hd0,0)', '/boot/vmlinuz'); a plain path -> (None, path)."""
    m = re.match(r"^(\(hd[0-9]{1,3}(?:,[0-9]{1,3})?\))(/.*)$", path)
    return (m[1], m[2]) if m else (None, path)
