"""Read a GRUB 2 `grub.cfg` the way lint and the boot harness need it: entries, their files, the menu.

    cfg = parse_grub_cfg(text)
    cfg.entries[0].linux, cfg.entries[0].initrds, cfg.entries[0].search   # '/boot/vmlinuz-6.1...', ...

GRUB 2's configuration is a small shell language; this reads the subset that boot menus use (ours
from the jinja2 template, and grub-mkconfig's, `if`/`else` and `submenu` included): `set default=`,
`set fallback=`, `set timeout=`, `serial`, `terminal_output`, and per `menuentry` the `search`
(or `set root=`) that picks the filesystem and the `linux`/`initrd` lines. Anything else is skipped.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

SEARCH_KINDS = {"--fs-uuid": "UUID", "-u": "UUID", "--label": "LABEL", "-l": "LABEL", "--file": "FILE",
                "-f": "FILE"}
ALIASES = {"search.fs_uuid": "UUID", "search.fs_label": "LABEL", "search.file": "FILE"}


class GrubCfgError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


@dataclass(frozen=True)
class Search:
    kind: str  # UUID, LABEL or FILE
    value: str

    def __str__(self) -> str:
        return f"{self.kind}={self.value}"


@dataclass
class GrubEntry:
    title: str
    line: int
    submenu: str | None = None  # the submenu it sits in (not counted by a numeric `default`)
    search: Search | None = None
    root: str | None = None  # `set root=...` (a GRUB device such as hd0,gpt2)
    linux: str | None = None
    args: str = ""
    initrds: list[str] = field(default_factory=list)


@dataclass
class GrubCfg:
    default: str | None = None
    fallback: list[str] = field(default_factory=list)
    timeout: str | None = None
    serial: bool = False  # a `serial` command (the port is set up)
    terminal_serial: bool = False  # `terminal_output` includes serial
    search: Search | None = None  # a search outside any entry (applies to all that have none)
    entries: list[GrubEntry] = field(default_factory=list)

    @property
    def top_level(self) -> list[GrubEntry]:
        """The entries a numeric `default` counts (one per menu line; a submenu counts as one)."""
        seen: set[str] = set()
        items = []
        for e in self.entries:
            if e.submenu is None:
                items.append(e)
            elif e.submenu not in seen:
                seen.add(e.submenu)
                items.append(e)
        return items

    def pick(self, ref: str) -> GrubEntry | None:
        """The entry a `default`/`fallback` value names: an index, a title or an id; None if none."""
        if re.fullmatch(r"[0-9]{1,9}", ref, re.ASCII):  # not str.isdigit(): "²" is a digit to it, not to int()
            items = self.top_level
            return items[int(ref)] if int(ref) < len(items) else None
        if ref.isdigit():  # digits GRUB does not read as an index (Unicode, or too many): no entry
            return None
        title = ref.split(">")[-1]
        return next((e for e in self.entries if e.title == title), None)


def _words(line: str, lineno: int) -> list[str]:
    try:
        return shlex.split(line, comments=True)
    except ValueError as exc:
        raise GrubCfgError(lineno, str(exc)) from None


_SET = re.compile(r"^set\s+(\w+)=(.*)$")


def _search(words: list[str]) -> Search | None:
    """`search [--fs-uuid|--label|--file] [--set[=root]] ... VALUE` (or search.fs_uuid VALUE root)."""
    kind, var, value = ALIASES.get(words[0]), None, None
    rest = iter(words[1:])
    for w in rest:
        if w in SEARCH_KINDS:
            kind = SEARCH_KINDS[w]
        elif w == "--set":
            var = "root"
        elif w.startswith("--set="):
            var = w.split("=", 1)[1]
        elif w.startswith("-"):
            continue  # --no-floppy, --hint=..., --hint-bios=...
        elif value is None:
            value = w
        elif words[0] in ALIASES:
            var = w  # search.fs_uuid UUID VAR
    if words[0] in ALIASES and var is None:
        var = "root"
    if kind is None or value is None or var != "root":
        return None
    return Search(kind, value)


def parse_grub_cfg(text: str) -> GrubCfg:
    cfg = GrubCfg()
    entry: GrubEntry | None = None
    submenu: str | None = None
    depth = 0  # braces of functions, if-blocks are not braces in GRUB; menuentry/submenu/function are
    entry_depth = submenu_depth = -1
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = _words(line, lineno)
        if not words:
            continue
        head = words[0]
        if head in ("menuentry", "submenu"):
            if not line.endswith("{"):
                raise GrubCfgError(lineno, f"{head} without an opening brace")
            if len(words) < 2:
                raise GrubCfgError(lineno, f"{head} without a title")
            if head == "submenu":
                submenu, submenu_depth = words[1], depth
            else:
                entry, entry_depth = GrubEntry(words[1], lineno, submenu), depth
                cfg.entries.append(entry)
            depth += 1
            continue
        if line.endswith("{"):  # a function
            depth += 1
            continue
        if head == "}":
            depth -= 1
            if depth < 0:
                raise GrubCfgError(lineno, "a closing brace with no block open")
            if depth == entry_depth:
                entry, entry_depth = None, -1
            elif depth == submenu_depth:
                submenu, submenu_depth = None, -1
            continue
        _statement(cfg, entry, words, line)
    if depth > 0:
        raise GrubCfgError(len(text.splitlines()), "a block is not closed (missing '}')")
    return cfg


def _statement(cfg: GrubCfg, entry: GrubEntry | None, words: list[str], line: str) -> None:
    head = words[0]
    if head.startswith("search"):
        found = _search(words)
        if found is not None:
            if entry is not None:
                entry.search = found
            else:
                cfg.search = found
        return
    if head in ("linux", "linux16", "linuxefi") and entry is not None and len(words) > 1:
        entry.linux, entry.args = words[1], " ".join(words[2:])
    elif head in ("initrd", "initrd16", "initrdefi") and entry is not None:
        entry.initrds = words[1:]
    elif head == "serial":
        cfg.serial = True
    elif head == "terminal_output":
        cfg.terminal_serial = cfg.terminal_serial or "serial" in words[1:]
    elif (m := _SET.match(" ".join(words))) is not None:
        _set(cfg, entry, m.group(1), m.group(2))


def _set(cfg: GrubCfg, entry: GrubEntry | None, name: str, value: str) -> None:
    if name == "root" and entry is not None:
        entry.root = value
    elif entry is not None:
        return
    elif name == "default":
        cfg.default = value
    elif name == "fallback":
        cfg.fallback = value.split()
    elif name == "timeout":
        cfg.timeout = value
