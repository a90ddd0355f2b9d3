"""Options shared by several commands, and opening the registry they name."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import click
import typer

from hpatool.registry import Registry

HomeOpt = Annotated[
    Path | None,
    typer.Option(
        "--home",
        help="Registry home folder (default: $HPATOOL_HOME, else the user data dir).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def open_registry(home: Path | None) -> Registry:
    """The registry at the command's ``--home``, else the top-level ``--home``, else the default."""
    if home is None:
        ctx = click.get_current_context(silent=True)
        if ctx is not None:
            home = ctx.meta.get("hpatool.home")
    return Registry.open(home)
