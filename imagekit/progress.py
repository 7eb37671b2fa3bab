"""Progress for long work: stages with timings on a terminal, silence in a pipeline.

The CLI builds one `Progress` and hands it to the stage functions; stages never print.
`Progress.stage()` times a stage and records it (the build manifest keeps the timings);
`Progress.bar()` counts bytes or items. With `--json` (or stderr not a terminal and
`quiet`), nothing is drawn: stdout carries only the command's result.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

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


@dataclass
class StageTimer:
    name: str
    detail: str = ""
    seconds: float = 0.0
    note: str = ""

    def set_note(self, note: str) -> None:
        """A word shown after the stage's time (e.g. 'cached')."""
        self.note = note


@dataclass
class Progress:
    """Stage reporting. mode: 'tty' (rich, live), 'plain' (a line per stage) or 'quiet'."""

    mode: str = "quiet"
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def for_cli(cls, json_output: bool, quiet: bool = False) -> Progress:
        if json_output or quiet:
            return cls("quiet")
        return cls("tty" if sys.stderr.isatty() else "plain")

    def _console(self) -> Console:
        from rich.console import Console

        return Console(stderr=True, highlight=False)

    def info(self, message: str) -> None:
        """A one-line note for a person (hidden in quiet mode)."""
        if self.mode == "tty":
            self._console().print(f"  [dim]{message}[/dim]")
        elif self.mode == "plain":
            print(f"  {message}", file=sys.stderr, flush=True)

    def warn(self, message: str) -> None:
        """A warning: shown in every mode but quiet-json, on stderr."""
        if self.mode == "tty":
            self._console().print(f"[yellow]warning:[/yellow] {message}")
        else:
            print(f"warning: {message}", file=sys.stderr, flush=True)

    @contextmanager
    def stage(self, name: str, detail: str = "") -> Iterator[StageTimer]:
        timer = StageTimer(name, detail)
        label = f"{name} {detail}".strip()
        start = time.monotonic()
        status = None
        if self.mode == "tty":
            status = self._console().status(f"{label} ...")
            status.start()
        elif self.mode == "plain":
            print(f"==> {label}", file=sys.stderr, flush=True)
        ok = False
        try:
            yield timer
            ok = True
        finally:
            timer.seconds = time.monotonic() - start
            self.timings[name] = round(self.timings.get(name, 0.0) + timer.seconds, 3)
            if status is not None:
                status.stop()
            mark = "done" if ok else "FAILED"
            tail = f" ({timer.note})" if timer.note else ""
            if self.mode == "tty":
                colour = "green" if ok else "red"
                self._console().print(
                    f"[{colour}]{'✓' if ok else '✗'}[/{colour}] {label:<40} {timer.seconds:7.1f}s{tail}"
                )
            elif self.mode == "plain":
                print(f"    {mark} in {timer.seconds:.1f}s{tail}", file=sys.stderr, flush=True)

    @contextmanager
    def bar(self, description: str, total: int | None, unit: str = "B") -> Iterator[Bar]:
        """A progress bar on a terminal; nothing elsewhere."""
        if self.mode != "tty":
            yield _NullBar()
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )
        from rich.progress import (
            Progress as RichProgress,
        )

        columns = [TextColumn("{task.description}"), BarColumn()]
        columns += [DownloadColumn(), TransferSpeedColumn()] if unit == "B" else [MofNCompleteColumn()]
        columns.append(TimeElapsedColumn())
        with RichProgress(*columns, console=self._console(), transient=True) as rp:
            task = rp.add_task(description, total=total)

            class _RichBar:
                def advance(self, n: int = 1) -> None:
                    rp.advance(task, n)

                def update(self, completed: int, total: int | None = None) -> None:
                    rp.update(task, completed=completed, total=total)

            yield _RichBar()
