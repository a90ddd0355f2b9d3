"""``hpatool show``: one sample's four stains and their colour composite, as a picture."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hpatool.cli._common import HomeOpt, open_registry


def show(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Dataset name.", show_default=False)],
    sample_id: Annotated[str, typer.Argument(metavar="ID", help="Sample id.", show_default=False)],
    out_path: Annotated[
        Path,
        typer.Option("--out", metavar="FILE.png", help="PNG file to write.", show_default=False),
    ],
    home: HomeOpt = None,
) -> None:
    """Draw a sample's four stains side by side and the colour composite, titled with its labels.

    Example: hpatool show kaggle-train 00070df0-bbc3-11e8-b2bc-ac1f6b6435d0 --out sample.png
    """
    from hpatool.cli._console import out
    from hpatool.show import show_sample

    with open_registry(home) as reg:
        show_sample(reg, name, sample_id, out_path)
    out().print(f"Wrote {out_path}")
