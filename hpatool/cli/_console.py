"""The one place that imports rich: consoles, tables, progress bars and the error line."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from hpatool._io import ProgressFn

__all__ = ["Table", "err", "out", "print_error", "print_json", "progress_bar"]

_MIN_WIDTH = 120


def out() -> Console:
    """A console on the current stdout (looked up per call, so test runners can capture it)."""
    console = Console(file=sys.stdout, highlight=False, soft_wrap=True)
    if not console.is_terminal and console.width < _MIN_WIDTH:
        console.width = _MIN_WIDTH  # don't fold tables into 80 columns when piped
    return console


def err() -> Console:
    return Console(file=sys.stderr, highlight=False)


def print_error(message: str) -> None:
    """One line on stderr: ``error: <message>``, red on a terminal, never wrapped. Under
    torchrun the lines of ranks other than 0 say which rank they come from."""
    rank = os.environ.get("RANK", "0")
    if rank != "0" and os.environ.get("WORLD_SIZE", "1") != "1":
        message = f"[rank {rank}] {message}"
    console = err()
    if console.is_terminal:
        console.print(f"[bold red]error:[/] {message}", soft_wrap=True, emoji=False)
    else:
        print(f"error: {message}", file=sys.stderr)


def print_json(doc: Any) -> None:
    """Plain JSON on stdout, no colour and no wrapping, for scripts."""
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


@contextlib.contextmanager
def progress_bar(description: str, unit: str = "samples") -> Iterator[ProgressFn]:
    """A rich progress bar on stderr, driven by a ``progress(done, total)`` callback.

    Drawn only on a terminal, so piped output and test runners stay clean.
    """
    console = err()
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    task = bar.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    with bar:
        yield update
