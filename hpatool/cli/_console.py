"""The one place that imports rich: consoles, tables, progress bars and the error line."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from hpatool.engine.distributed import env_rank

__all__ = ["Bar", "Table", "err", "out", "print_error", "print_json", "progress_bar"]

_MIN_WIDTH = 120


class _Console(Console):
    """rich's Console, except that a closed pipe raises ``BrokenPipeError`` (the root command
    group ends quietly with exit 141 on it) instead of rich's own ``SystemExit(1)``."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


def out() -> Console:
    """A console on the current stdout (looked up per call, so test runners can capture it)."""
    console = _Console(file=sys.stdout, highlight=False, soft_wrap=True)
    if not console.is_terminal and console.width < _MIN_WIDTH:
        console.width = _MIN_WIDTH  # don't fold tables into 80 columns when piped
    return console


def err() -> Console:
    return _Console(file=sys.stderr, highlight=False)


def print_error(message: str) -> None:
    """One line on stderr: ``error: <message>``, red on a terminal, never wrapped. Under
    torchrun the lines of ranks other than 0 say which rank they come from."""
    rank, world_size = env_rank()
    if rank != 0 and world_size > 1:
        message = f"[rank {rank}] {message}"
    console = err()
    if console.is_terminal:
        console.print(f"[bold red]error:[/] {message}", soft_wrap=True, emoji=False)
    else:
        print(f"error: {message}", file=sys.stderr)


def print_json(doc: Any) -> None:
    """Plain JSON on stdout, no colour and no wrapping, for scripts."""
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


class Bar:
    """A live progress bar: call it as a ``progress(done, total)`` callback, or ``update`` it
    with a new description or stats text as well."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task

    def __call__(self, done: int, total: int) -> None:
        self._progress.update(self._task, completed=done, total=total)

    def update(
        self,
        done: int | None = None,
        total: int | None = None,
        *,
        description: str | None = None,
        stats: str | None = None,
    ) -> None:
        fields: dict[str, Any] = {}
        if done is not None:
            fields["completed"] = done
        if total is not None:
            fields["total"] = total
        if description is not None:
            fields["description"] = description
        if stats is not None:
            fields["stats"] = stats
        self._progress.update(self._task, **fields)


@contextlib.contextmanager
def progress_bar(
    description: str, unit: str = "samples", *, enabled: bool = True, compact: bool = False
) -> Iterator[Bar]:
    """The one progress bar of hpatool, on stderr, drawn only on a terminal (piped output and
    test runners stay clean): description, bar, ``done/total unit``, a free ``stats`` text set
    through ``Bar.update``, elapsed time and ETA. ``compact`` keeps it short (a narrow bar and
    no elapsed time) for rows that carry a long stats text."""
    console = err()
    columns: list[Any] = [
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=12 if compact else None),
        MofNCompleteColumn(),
        TextColumn(unit),
        TextColumn("{task.fields[stats]}"),
    ]
    if not compact:
        columns += [TaskProgressColumn(), TimeElapsedColumn()]
    columns += [TextColumn("eta"), TimeRemainingColumn(compact=compact)]
    bar = Progress(*columns, console=console, disable=not (enabled and console.is_terminal))
    task = bar.add_task(description, total=None, stats="")
    with bar:
        yield Bar(bar, task)
