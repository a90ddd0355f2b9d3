"""``hpatool runs export``: a run's best model as a TorchScript or ONNX file;
``engine.runs.export``
does the work."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hpatool.cli._common import HomeOpt, JsonOpt, open_registry


def runs_export(
    run: Annotated[
        str,
        typer.Argument(
            metavar="RUN", help="The run whose best model to export.", show_default=False
        ),
    ],
    format_: Annotated[
        str,
        typer.Option(
            "--format",
            metavar="torchscript|onnx",
            help="torchscript (a TorchScript file: torch.jit.load(FILE)) or onnx (needs the "
            "onnx package: pip install 'hpatool[export]').",
            show_default=False,
        ),
    ],
    out_file: Annotated[
        Path,
        typer.Option(
            "--out",
            metavar="FILE",
            help="The file to write (e.g. model.onnx); FILE.json is written beside it.",
            show_default=False,
        ),
    ],
    json_: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Export a run's best model as one file that needs neither hpatool nor timm.

    The model takes float32 pixel values 0..255 (N, 4, H, W), channels R, G, B, Y, normalises
    them as hpatool does and returns the 28 classes' sigmoid probabilities (N, 28); batch size
    and image size are free. FILE.json beside it says so, with the normalisation, the class
    names, the run's view (the windows predict cuts and how it combines their probabilities),
    its per-class thresholds and the versions. The file is traced on the CPU in float32, then
    loaded back and checked against the model before it is written.

    Example: hpatool runs export r50-f0 --format onnx --out r50-f0.onnx
    """
    from hpatool.cli._console import out, print_json
    from hpatool.engine.runs.export import export_run

    with open_registry(home) as reg:
        exported = export_run(reg, run, format_, out_file)
    if json_:
        print_json(exported.to_json())
        return
    out().print(
        f"Exported run {run}'s best model ({format_}, "
        f"{exported.size_bytes / 2**20:.1f} MiB) to {exported.path}; how to use it: "
        f"{exported.info_path}",
        markup=False,
        soft_wrap=True,
    )
