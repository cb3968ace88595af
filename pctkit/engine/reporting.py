"""Progress bars and messages for long work (rank 0 only; silent elsewhere)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Reporter:
    """Prints messages and shows one Rich progress bar per stage."""

    def __init__(self, console: Console | None = None, enabled: bool = True) -> None:
        self.console = console or Console(stderr=True)
        self.enabled = enabled

    def message(self, text: str) -> None:
        """A line of text (Rich markup allowed)."""
        if self.enabled:
            self.console.print(text)

    @contextmanager
    def task(self, title: str, total: int) -> Iterator[tuple[Callable[[int], None], Callable[[str], None]]]:
        """A progress bar; yields ``(advance, describe)`` callables."""
        if not self.enabled:
            yield (lambda advance: None), (lambda text: None)
            return
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
        )
        with Progress(*columns, console=self.console, transient=False) as progress:
            task_id = progress.add_task(title, total=total, status="")

            def advance(count: int) -> None:
                progress.advance(task_id, count)

            def describe(text: str) -> None:
                progress.update(task_id, status=text)

            yield advance, describe
