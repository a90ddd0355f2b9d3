"""``hpatool synth``: write a synthetic HPA-like dataset (images and labels.csv)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hpatool.cli._common import ROOT_HOME
from hpatool.options import SynthConfig


def synth(
    out_dir: Annotated[
        Path, typer.Argument(metavar="OUT_DIR", help="Folder to write into.", show_default=False)
    ],
    samples: Annotated[
        int, typer.Option("--samples", help="Number of samples.", min=1)
    ] = SynthConfig.samples,
    size: Annotated[
        int, typer.Option("--size", help="Image width and height.", min=32)
    ] = SynthConfig.size,
    seed: Annotated[
        int, typer.Option("--seed", help="Random seed (same seed, same files).")
    ] = SynthConfig.seed,
    workers: Annotated[
        int, typer.Option("--workers", help="Processes.", min=1)
    ] = SynthConfig.workers,
) -> None:
    """Write an HPA-like dataset: four 8-bit greyscale PNGs per sample and a labels.csv.

    Class frequencies are as skewed as the real train.csv, and each class leaves its own
    pattern in the green (protein) channel, placed relative to the blue nuclei, so a CNN can
    learn it.

    Example: hpatool synth data/synth --samples 500 --size 256 --seed 1
    """
    from hpatool.cli._console import out, progress_bar
    from hpatool.outputs import existing_registry
    from hpatool.synth import synth_dataset

    with existing_registry(ROOT_HOME.get()) as reg, progress_bar("synth") as progress:
        result = synth_dataset(
            out_dir,
            samples=samples,
            size=size,
            seed=seed,
            workers=workers,
            progress=progress,
            registry=reg,
        )
    out().print(
        f"Wrote {len(result.ids):,} samples ({size}x{size}) to {result.out_dir}; "
        f"labels in {result.labels_csv}. Register them with: hpatool datasets add NAME "
        f"--labels {result.labels_csv} --root {result.out_dir}"
    )
