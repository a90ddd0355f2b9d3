"""Options shared by several commands, and opening the registry they name."""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:  # imported when a command opens it, not for --help
    from hpatool.registry import Registry

#: The panels of the root ``--help``, in workflow order.
DATA_PANEL = "Data"
TRAINING_PANEL = "Training"
PREDICTION_PANEL = "Prediction"
TOOLS_PANEL = "Tools"


def _home_path(value: str | Path) -> Path:
    """The ``--home`` folder; an empty value is refused (it would mean the current folder)."""
    if isinstance(value, Path):
        return value
    if not value.strip():
        raise typer.BadParameter(
            "empty path; give the registry folder, or leave --home out to use $HPATOOL_HOME "
            "or the user data dir"
        )
    return Path(value)


HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home",
        parser=_home_path,
        metavar="DIR",
        help="Registry home folder (default: $HPATOOL_HOME, else the user data dir).",
        show_default=False,
    ),
]
#: The top-level ``hpatool --home DIR`` of the command being run (set by the root callback).
ROOT_HOME: ContextVar[Path | None] = ContextVar("hpatool_root_home", default=None)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def open_registry(home: Path | None) -> Registry:
    """The registry at the command's ``--home``, else the top-level ``--home``, else the default."""
    from hpatool.registry import Registry

    return Registry.open(home if home is not None else ROOT_HOME.get())
