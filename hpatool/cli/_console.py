"""The one place that imports rich: consoles, tables, progress bars and the error line."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

from rich.console import Console, RenderableType
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column, Table
from rich.text import Text

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
    """A console on the current stdout (looked up per call, so test runners can capture it).
    On a terminal long lines wrap between words (the terminal itself would cut words in two);
    piped, they stay whole."""
    console = _Console(file=sys.stdout, highlight=False, soft_wrap=True)
    if console.is_terminal:
        console.soft_wrap = False
    elif console.width < _MIN_WIDTH:
        console.width = _MIN_WIDTH  # don't fold tables into 80 columns when piped
    return console


#: The stderr consoles of the progress bars being drawn, innermost last: a line printed on
#: stderr meanwhile (a warning, an error) goes through the bar's console, which prints it
#: above the bar instead of into it.
_LIVE: list[Console] = []


def err() -> Console:
    """A console on the current stderr: the live progress bar's, while one is drawn there."""
    if _LIVE:  # (rich has replaced sys.stderr by a proxy of that console meanwhile)
        return _LIVE[-1]
    return _Console(file=sys.stderr, highlight=False)


def one_line(text: str) -> str:
    """``text`` with control characters (a NUL or escape byte read from a hostile file, a line
    break) shown escaped (``\\x00``, ``\\n``), so that it stays one line and cannot drive the
    terminal."""
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() or ch == " " else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )


def print_error(message: str) -> None:
    """One line on stderr: ``error: <message>``, red on a terminal, never wrapped. Under
    torchrun the lines of ranks other than 0 say which rank they come from."""
    rank, world_size = env_rank()
    message = one_line(message)
    if rank != 0 and world_size > 1:
        message = f"[rank {rank}] {message}"
    console = err()
    if console.is_terminal:
        console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True, emoji=False)
    else:
        print(f"error: {message}", file=sys.stderr)


def print_json(doc: Any) -> None:
    """Plain JSON on stdout, no colour and no wrapping, for scripts."""
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")


class Bar:
    """A live progress bar: call it as a ``progress(done, total)`` callback, or ``update`` it
    with a new description or stats text as well; ``print`` a line above it."""

    def __init__(self, progress: Progress, task: TaskID, *, live: bool = False) -> None:
        self._progress = progress
        self._task = task
        self._live = live

    def __call__(self, done: int, total: int) -> None:
        self._progress.update(self._task, completed=done, total=total)

    def print(self, renderable: RenderableType) -> None:
        """Print a line while the bar is live: through the bar's console (rich draws the bar
        again below the line, which stays whole) when the bar is drawn and stdout is a
        terminal; otherwise on stdout, as ``out().print`` does."""
        stdout = out()
        if self._live and stdout.is_terminal:
            self._progress.console.print(renderable, highlight=False)
        else:
            stdout.print(renderable)

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


class _StatsColumn(ProgressColumn):
    """The free stats text: the one column that gives way (cut with an ellipsis) when the
    line is too long, so that the counts and the ETA stay whole."""

    def __init__(self) -> None:
        super().__init__(table_column=Column(no_wrap=False, overflow="ellipsis"))

    def render(self, task: Task) -> Text:
        text = Text.from_markup(str(task.fields.get("stats", "")))
        text.no_wrap = True
        text.overflow = "ellipsis"
        return text


#: Below this console width the bar drops its percentage and elapsed-time columns.
_WIDE = 120


def _columns(unit: str, width: int, compact: bool) -> list[Any]:
    """The bar's columns for a console ``width`` columns wide: the counts and the ETA never
    wrap; the stats text is cut first."""
    keep = Column(no_wrap=True)
    bar_width = max(8, min(40, width // (10 if compact or width < _WIDE else 6)))
    columns: list[Any] = [
        TextColumn("[bold]{task.description}", table_column=keep),
        BarColumn(bar_width=bar_width),
        MofNCompleteColumn(table_column=Column(no_wrap=True)),
        TextColumn(unit, table_column=Column(no_wrap=True)),
        _StatsColumn(),
    ]
    if not compact and width >= _WIDE:
        columns += [
            TaskProgressColumn(table_column=Column(no_wrap=True)),
            TimeElapsedColumn(table_column=Column(no_wrap=True)),
        ]
    columns += [
        TextColumn("eta", table_column=Column(no_wrap=True)),
        TimeRemainingColumn(compact=compact, table_column=Column(no_wrap=True)),
    ]
    return columns


@contextlib.contextmanager
def progress_bar(
    description: str,
    unit: str = "samples",
    *,
    enabled: bool = True,
    compact: bool = False,
    console: Console | None = None,
) -> Iterator[Bar]:
    """The one progress bar of hpatool, on stderr (or ``console``), drawn only on a terminal
    (piped output and test runners stay clean): description, bar, ``done/total unit``, a free
    ``stats`` text set through ``Bar.update``, and the ETA; on a console at least 120 columns
    wide also the percentage and the elapsed time. At 80 columns the counts and the ETA stay
    whole (the stats text is cut first). ``compact`` keeps the bar narrow and the ETA short for
    rows that carry a long stats text. Lines printed while it is live go through
    ``Bar.print``."""
    console = console if console is not None else err()
    live = enabled and console.is_terminal
    columns = _columns(unit, console.width, compact)
    bar = Progress(*columns, console=console, disable=not live)
    task = bar.add_task(description, total=None, stats="")
    if live:
        _LIVE.append(console)
    try:
        with bar:
            yield Bar(bar, task, live=live)
    finally:
        if live:
            _LIVE.remove(console)
