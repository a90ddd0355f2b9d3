"""``hpatool synth`` and ``hpatool demo``: synthetic HPA-like data and the whole chain on it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer


def synth(
    out_dir: Annotated[
        Path, typer.Argument(metavar="OUT_DIR", help="Folder to write into.", show_default=False)
    ],
    samples: Annotated[int, typer.Option("--samples", help="Number of samples.", min=1)] = 256,
    size: Annotated[int, typer.Option("--size", help="Image width and height.", min=32)] = 512,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same files).")] = 0,
    workers: Annotated[int, typer.Option("--workers", help="Processes.", min=1)] = 1,
) -> None:
    """Write an HPA-like dataset: four 8-bit greyscale PNGs per sample and a labels.csv.

    Class frequencies are as skewed as the real train.csv, and each class leaves its own
    pattern in the green (protein) channel, placed relative to the blue nuclei, so a CNN can
    learn it.

    Example: hpatool synth data/synth --samples 500 --size 256 --seed 1
    """
    from hpatool.cli._console import out, progress_bar
    from hpatool.synth import synth_dataset

    with progress_bar("synth") as progress:
        result = synth_dataset(
            out_dir, samples=samples, size=size, seed=seed, workers=workers, progress=progress
        )
    out().print(
        f"Wrote {len(result.ids):,} samples ({size}x{size}) to {result.out_dir}; "
        f"labels in {result.labels_csv}. Register them with: hpatool datasets add NAME "
        f"--labels {result.labels_csv} --root {result.out_dir}"
    )


def demo(
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out", help="Folder for everything the demo makes (its own registry home included)."
        ),
    ] = Path("hpatool-demo"),
    samples: Annotated[
        int, typer.Option("--samples", help="Training samples to synthesise.", min=1)
    ] = 256,
    size: Annotated[
        int, typer.Option("--size", help="Image size of the synthetic data.", min=32)
    ] = 128,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
) -> None:
    """Run the whole chain on synthetic data, in a fresh registry home under --out.

    Today that is: synth, register, stats. Rerunning it clears the previous demo's folder
    first.

    Example: hpatool demo --out /tmp/hpa-demo
    """
    from hpatool.cli._console import out, progress_bar
    from hpatool.cli.stats import stats
    from hpatool.demo import run_demo

    started = time.perf_counter()
    console = out()
    console.rule("hpatool demo")
    with progress_bar("synth") as progress:
        result = run_demo(out_dir, samples=samples, size=size, seed=seed, progress=progress)
    console.print(
        f"1. synthesised {samples} samples in {result.train_dir}; registered as "
        f"{', '.join(result.datasets)} in {result.home}"
    )
    console.print("2. label statistics:")
    stats(
        result.datasets,
        json_=False,
        plot=result.out_dir / "class-counts.png",
        top_pairs=5,
        home=result.home,
    )
    console.print(
        f"Demo finished in {time.perf_counter() - started:.1f} s. Everything is in "
        f"{result.out_dir} (registry home {result.home})."
    )


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
    app.command("demo")(demo)
