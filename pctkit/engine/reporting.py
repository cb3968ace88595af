"""What a run tells the person watching it: messages, warnings and progress.

On a terminal each stage gets a Rich progress bar. Anywhere else (a batch job's log
file, a pipe) or with ``log_format="plain"`` every report is one complete, timestamped
line that is never cut or wrapped: the stage, ``iteration/total``, the logged terms,
the learning rate, iterations per second and the time left. Only rank 0 reports.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Literal

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column
from rich.text import Text

LogFormat = Literal["auto", "rich", "plain"]
Advance = Callable[[int], None]
Describe = Callable[[str], None]

PLAIN_PROGRESS_SECONDS = 60.0
"""Without log records (pseudo labels, evaluation), a plain progress line at most this often."""


def format_duration(seconds: float) -> str:
    """``73`` -> ``"1:13"``, ``4000`` -> ``"1:06:40"``."""
    if not math.isfinite(seconds):
        return "?"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def record_summary(record: dict[str, Any]) -> str:
    """One training record as ``key=value`` pairs: every term (the total first), the
    lowest J where the method logs J, and each net's learning rate."""
    terms = dict(record.get("terms", {}))
    parts = [f"loss={terms.pop('loss'):.4g}"] if "loss" in terms else []
    parts += [f"{name}={value:.4g}" for name, value in terms.items()]
    scores = record.get("method", {}).get("J")
    if scores:
        parts.append(f"min_J={min(scores):.3f}")
    if record.get("skipped_steps"):
        parts.append(f"skipped_nonfinite_steps={record['skipped_steps']}")
    rates = record.get("lr", {})
    if len(set(rates.values())) == 1:
        parts.append(f"lr={next(iter(rates.values())):.3g}")
    else:
        parts += [f"lr_{role}={rate:.3g}" for role, rate in rates.items()]
    return " ".join(parts)


class Reporter:
    """Prints messages and shows the progress of each stage (rank 0 only).

    Args:
        console: where to write (default: standard error).
        enabled: ``False`` silences messages and progress (other ranks, ``--quiet``).
        warnings: ``False`` silences warnings too (other ranks); ``--quiet`` keeps them.
        log_format: ``"rich"`` (bars), ``"plain"`` (timestamped lines) or ``"auto"``:
            rich on a terminal, plain otherwise.
    """

    def __init__(
        self,
        console: Console | None = None,
        enabled: bool = True,
        log_format: LogFormat = "auto",
        warnings: bool = True,
    ) -> None:
        self.console = console or Console(stderr=True)
        self.enabled = enabled
        self.warnings = warnings
        self.plain = log_format == "plain" or (log_format == "auto" and not self.console.is_terminal)
        self._progress: Progress | None = None
        """The live Rich progress display, while a task shows in it: a task opened
        inside another (the validation inside a training stage) joins it as a row."""

    def _line(self, text: str) -> None:
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        # A Text object, soft-wrapped: written whole, whatever the console's width.
        self.console.print(Text(f"{stamp} {text}"), soft_wrap=True, highlight=False)

    def message(self, text: str) -> None:
        """A line of text (Rich markup allowed)."""
        if self.enabled:
            self._print(text)

    def warning(self, text: str) -> None:
        """A warning, shown once, in the same stream as the messages (also when they are
        silenced by ``--quiet``)."""
        if self.warnings:
            self._print(f"[yellow]warning[/]: {escape(text)}")

    def _print(self, text: str) -> None:
        if self.plain:
            self._line(Text.from_markup(text).plain)
        else:
            self.console.print(text)

    def describe_record(self, describe: Describe) -> Callable[[dict[str, Any]], None]:
        """A callback that shows a training record through a task's ``describe``."""
        return lambda record: describe(record_summary(record))

    @contextmanager
    def task(self, title: str, total: int, start: int = 0) -> Iterator[tuple[Advance, Describe]]:
        """Progress of one stage, ``start`` of ``total`` done already (a resumed stage);
        yields ``(advance, describe)`` callables. Tasks nest: one opened inside another
        (a validation inside a training stage) gets its own lines, or its own row under
        the outer bar, removed when it ends."""
        if not self.enabled:
            yield (lambda advance: None), (lambda text: None)
        elif self.plain:
            with self._plain_task(title, total, start) as callbacks:
                yield callbacks
        else:
            with self._rich_task(title, total, start) as callbacks:
                yield callbacks

    @contextmanager
    def _rich_task(self, title: str, total: int, start: int) -> Iterator[tuple[Advance, Describe]]:
        if self._progress is not None:  # nested: a row of the live display
            with self._rich_row(self._progress, title, total, start, remove=True) as callbacks:
                yield callbacks
            return
        # The status (the logged terms) takes the width that is left and is cut first:
        # titles, the bar, counts and times stay whole in a narrow terminal.
        columns = (
            TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True)),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn(
                "{task.fields[status]}", table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis")
            ),
        )
        with Progress(*columns, console=self.console, transient=False, expand=True) as progress:
            self._progress = progress
            try:
                with self._rich_row(progress, title, total, start, remove=False) as callbacks:
                    yield callbacks
            finally:
                self._progress = None

    @contextmanager
    def _rich_row(
        self, progress: Progress, title: str, total: int, start: int, *, remove: bool
    ) -> Iterator[tuple[Advance, Describe]]:
        task_id = progress.add_task(title, total=total, completed=start, status="")

        def advance(count: int) -> None:
            progress.advance(task_id, count)

        def describe(text: str) -> None:
            progress.update(task_id, status=text)

        try:
            yield advance, describe
        finally:
            if remove:
                progress.remove_task(task_id)

    @contextmanager
    def _plain_task(self, title: str, total: int, start: int) -> Iterator[tuple[Advance, Describe]]:
        started = time.monotonic()
        # Speed is measured from the first advance over the window since the previous
        # line, so the ETA follows the current pace.
        state: dict[str, float] = {"done": start, "mark_done": -1, "mark_time": started, "shown": started}

        def status() -> str:
            now = time.monotonic()
            done = int(state["done"])
            window = now - state["mark_time"]
            rate = (done - state["mark_done"]) / window if window > 0 and state["mark_done"] >= 0 else 0.0
            eta = (total - done) / rate if rate > 0 else float("inf")
            if rate > 0:
                state["mark_done"], state["mark_time"] = done, now
            return (
                f"{title} {done}/{total} {rate:.2f} it/s elapsed {format_duration(now - started)} "
                f"eta {format_duration(eta)}"
            )

        def advance(count: int) -> None:
            if state["mark_done"] < 0:
                state["mark_done"], state["mark_time"] = state["done"] + count, time.monotonic()
            state["done"] += count
            if time.monotonic() - state["shown"] >= PLAIN_PROGRESS_SECONDS and state["done"] < total:
                state["shown"] = time.monotonic()
                self._line(status())

        def describe(text: str) -> None:
            state["shown"] = time.monotonic()
            self._line(f"{status()} {text}")

        if start:
            self._line(f"{title} continues at {start} of {total} ({total - start} to do)")
        else:
            self._line(f"{title} started ({total} to do)")
        yield advance, describe
        self._line(
            f"{title} finished {int(state['done'])}/{total} in {format_duration(time.monotonic() - started)}"
        )
