"""Progress for long work: stages with timings on a terminal, silence in a pipeline.

The CLI builds one `Progress` per command and hands it to the stage functions; stages never print.
`Progress.stage()` times a stage and records it (the build manifest keeps the timings); the stage
can say its phase (`StageTimer.phase`) and count (`StageTimer.count`); `Progress.bar()` counts bytes
or items. On a terminal there is one rich Console and one live display for the whole command: each
running stage or bar is a row of it (elapsed time, phase, bytes/rate/ETA), a finished stage leaves one
line above it, and info and warnings print through the same Console, so nothing is left stale.
In a pipe: a plain line per stage. With `--json`: nothing; stdout carries only the command's result.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from rich.markup import escape

if TYPE_CHECKING:
    from rich.console import Console


class Bar(Protocol):
    def advance(self, n: int = 1) -> None: ...

    def update(self, completed: int, total: int | None = None) -> None: ...


class _NullBar:
    def advance(self, n: int = 1) -> None:
        pass

    def update(self, completed: int, total: int | None = None) -> None:
        pass


class StageTimer:
    """A running stage: its time, and what it is doing now (shown on its live row)."""

    def __init__(self, name: str, detail: str = "", owner: Progress | None = None, task: Any = None) -> None:
        self.name, self.detail = name, detail
        self.seconds = 0.0
        self.note = ""
        self.current = ""
        self.done = 0  # for a stage that counts (StageTimer.count)
        self._owner, self._task = owner, task

    def set_note(self, note: str) -> None:
        """A word shown after the stage's time (e.g. 'cached')."""
        self.note = note

    def phase(self, text: str) -> None:
        """What the stage does now (e.g. 'kernel', 'unpack 120/240'); a new line in a pipe, the row on a tty."""
        if text == self.current:
            return
        self.current = text
        if self._owner is not None:
            self._owner._show_phase(self, text)

    def count(self, done: int, total: int | None, what: str = "") -> None:
        """`done of total` (e.g. lint checks): the row on a tty only."""
        text = f"{what} {done}/{total}" if total else f"{what} {done}"
        self.current = text.strip()
        if self._owner is not None and self._owner.mode == "tty":
            self._owner._show_phase(self, self.current, quiet_plain=True)


@dataclass
class Progress:
    """Stage reporting. mode: 'tty' (rich, live), 'plain' (a line per stage) or 'quiet'."""

    mode: str = "quiet"
    timings: dict[str, float] = field(default_factory=dict)
    _console_: Console | None = field(default=None, repr=False)
    _live: Any = field(default=None, repr=False)
    _rows: int = field(default=0, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @classmethod
    def for_cli(cls, json_output: bool, quiet: bool = False) -> Progress:
        if json_output or quiet:
            return cls("quiet")
        return cls("tty" if sys.stderr.isatty() else "plain")

    def _console(self) -> Console:
        """The command's one Console (stderr)."""
        if self._console_ is None:
            from rich.console import Console

            self._console_ = Console(stderr=True, highlight=False)
        return self._console_

    def _open_row(self, description: str, total: int | None, kind: str, unit: str = "B") -> Any:
        """A row of the one live display, started with its first row."""
        with self._lock:
            if self._live is None:
                self._live = _live_display(self._console())
                self._live.start()
            self._rows += 1
            return self._live.add_task(description, total=total, kind=kind, unit=unit, phase="")

    def _close_row(self, task: Any) -> None:
        with self._lock:
            self._live.remove_task(task)
            self._rows -= 1
            if self._rows == 0:  # nothing running: the live display goes (transient), the lines above stay
                self._live.stop()
                self._live = None

    def _show_phase(self, timer: StageTimer, text: str, quiet_plain: bool = False) -> None:
        if self.mode == "tty" and timer._task is not None and self._live is not None:
            self._live.update(timer._task, phase=text)
        elif self.mode == "plain" and not quiet_plain:
            print(f"    {text}", file=sys.stderr, flush=True)

    def info(self, message: str) -> None:
        """A one-line note for a person (hidden in quiet mode)."""
        if self.mode == "tty":
            self._console().print(f"  [dim]{escape(message)}[/dim]")
        elif self.mode == "plain":
            print(f"  {message}", file=sys.stderr, flush=True)

    def warn(self, message: str) -> None:
        """A warning: shown in every mode but quiet-json, on stderr."""
        if self.mode == "tty":
            self._console().print(f"[yellow]warning:[/yellow] {escape(message)}")
        else:
            print(f"warning: {message}", file=sys.stderr, flush=True)

    @contextmanager
    def stage(self, name: str, detail: str = "") -> Iterator[StageTimer]:
        label = f"{name} {detail}".strip()
        task = self._open_row(label, None, "stage") if self.mode == "tty" else None
        timer = StageTimer(name, detail, self, task)
        if self.mode == "plain":
            print(f"==> {label}", file=sys.stderr, flush=True)
        start = time.monotonic()
        ok = False
        try:
            yield timer
            ok = True
        finally:
            timer.seconds = time.monotonic() - start
            self.timings[name] = round(self.timings.get(name, 0.0) + timer.seconds, 3)
            tail = f" ({timer.note})" if timer.note else ""
            if self.mode == "tty":
                colour = "green" if ok else "red"
                self._console().print(f"[{colour}]{'✓' if ok else '✗'}[/{colour}] {escape(label):<40} "
                                      f"{timer.seconds:7.1f}s{escape(tail)}")
                self._close_row(task)
            elif self.mode == "plain":
                print(f"    {'done' if ok else 'FAILED'} in {timer.seconds:.1f}s{tail}", file=sys.stderr, flush=True)

    @contextmanager
    def bar(self, description: str, total: int | None, unit: str = "B") -> Iterator[Bar]:
        """A row with a bar (bytes: size, rate, ETA; items: done of total) on a terminal; nothing elsewhere."""
        if self.mode != "tty":
            yield _NullBar()
            return
        task = self._open_row(description, total, "bar", unit)
        live = self._live

        class _RichBar:
            def advance(self, n: int = 1) -> None:
                live.advance(task, n)

            def update(self, completed: int, total: int | None = None) -> None:
                live.update(task, completed=completed, total=total)

        try:
            yield _RichBar()
        finally:
            self._close_row(task)


def _live_display(console: Console) -> Any:
    """rich's Progress as the one live display: a row per stage (spinner, label, phase, elapsed) or bar."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        ProgressColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.progress import Progress as RichProgress
    from rich.text import Text

    class BarOnly(BarColumn):
        def render(self, task: Any) -> Any:
            return super().render(task) if task.fields.get("kind") == "bar" else Text("")

    class Detail(ProgressColumn):
        """A stage's phase; a bar's bytes, rate and ETA (or items done of total)."""

        parts_bytes = (DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
        parts_items = (MofNCompleteColumn(),)

        def render(self, task: Any) -> Text:
            if task.fields.get("kind") != "bar":
                return Text(str(task.fields.get("phase", "")), style="cyan")
            parts = self.parts_bytes if task.fields.get("unit") == "B" else self.parts_items
            out = Text()
            for part in parts:
                out.append_text(part.render(task))
                out.append(" ")
            return out

    return RichProgress(SpinnerColumn(), TextColumn("{task.description}"), BarOnly(bar_width=30), Detail(),
                        TimeElapsedColumn(), console=console, transient=True)
