"""Progress and messages for humans, on stderr, so stdout stays free for `--json`.

rich is imported only when something is shown: a quiet (`--json`) command never pays
for it, which keeps short CI invocations such as `tfrollout push --json` fast.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rich.console import Console


class Advance(Protocol):
    """What a progress context hands out: call it with the amount of work done."""

    def __call__(self, amount: float = 1, *, status: str | None = None) -> None: ...


class Reporter:
    """Stage banners, notes and progress bars; silent when `quiet` (tests, --json in CI)."""

    def __init__(self, *, quiet: bool = False, console: Console | None = None) -> None:
        self.quiet = quiet
        self._console = console

    @property
    def console(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True, file=sys.stderr)
        return self._console

    def stage(self, name: str) -> None:
        if not self.quiet:
            self.console.rule(f"[bold]{name}")

    def note(self, message: str) -> None:
        if not self.quiet:  # a log file keeps the whole line (rich would wrap it at 80 columns)
            from pipeline.redaction import redact_text

            self.console.print(redact_text(message), highlight=False, soft_wrap=not self.console.is_terminal)

    @contextmanager
    def progress(self, description: str, total: float, *, unit: str = "steps") -> Iterator[Advance]:
        """A bar for long work; `unit="bytes"` shows sizes and transfer speed."""
        if self.quiet:
            yield lambda amount=1, *, status=None: None
            return
        if not self.console.is_terminal:  # CI logs: whole plain lines, not a bar cut at 80 columns
            with self._lines(description, total, unit) as advance:
                yield advance
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        if unit == "bytes":
            columns = [TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                       TransferSpeedColumn(), TimeRemainingColumn()]
        else:
            columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TaskProgressColumn(), TimeElapsedColumn(), TextColumn("{task.fields[status]}")]
        with Progress(*columns, console=self.console, transient=False) as bar:
            task = bar.add_task(description, total=total, status="")

            def advance(amount: float = 1, *, status: str | None = None) -> None:
                if status is None:
                    bar.advance(task, amount)
                else:
                    bar.update(task, advance=amount, status=status)

            yield advance

    @contextmanager
    def _lines(self, description: str, total: float, unit: str) -> Iterator[Advance]:
        """Progress as log lines: one at most every LINE_EVERY_S seconds, and one at the end."""
        import time

        done, latest, t0 = 0.0, "", time.monotonic()
        last = t0

        def line() -> str:
            amount = f"{done / 2**20:,.1f}/{total / 2**20:,.1f} MiB" if unit == "bytes" else f"{done:g}/{total:g} {unit}"
            share = f" {100 * done / total:.0f}%" if total else ""
            return f"{description}: {amount}{share} in {time.monotonic() - t0:.1f} s{'; ' + latest if latest else ''}"

        def advance(amount: float = 1, *, status: str | None = None) -> None:
            nonlocal done, last, latest
            done += amount
            if status is not None:
                latest = status
            now = time.monotonic()
            if now - last >= LINE_EVERY_S:
                last = now
                print(line(), file=self.console.file, flush=True)

        yield advance
        print(line(), file=self.console.file, flush=True)


LINE_EVERY_S = 10.0
