"""``hpatool demo``: the whole chain on synthetic data, each step run as the command a user
would type (``hpatool.engine.demo`` plans the steps)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from hpatool.cli._common import ROOT_HOME
from hpatool.options import DemoConfig

OutOpt = Annotated[
    Path,
    typer.Option(
        "--out",
        metavar="DIR",
        help="Folder for everything the demo makes (its own registry home included).",
    ),
]
SamplesOpt = Annotated[
    int, typer.Option("--samples", help="Training samples to synthesise.", min=1)
]
SizeOpt = Annotated[int, typer.Option("--size", help="Synthetic image size.", min=32)]
EpochsOpt = Annotated[
    int, typer.Option("--epochs", help="Training epochs of each fold's run.", min=1)
]
FoldsOpt = Annotated[
    int, typer.Option("--folds", help="Folds to split into and cross-validate.", min=2)
]
ArchOpt = Annotated[
    str, typer.Option("--arch", metavar="ARCH", help="Model (a small timm ResNet by default).")
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]


def demo(
    out_dir: OutOpt = DemoConfig.out,
    samples: SamplesOpt = DemoConfig.samples,
    size: SizeOpt = DemoConfig.size,
    epochs: EpochsOpt = DemoConfig.epochs,
    folds: FoldsOpt = DemoConfig.folds,
    arch: ArchOpt = DemoConfig.arch,
    seed: SeedOpt = DemoConfig.seed,
) -> None:
    """Run the whole chain on synthetic data on a CPU, in a fresh registry home under --out.

    Synthesises a training and a test set, registers them, prints their statistics, looks for
    near-duplicates (dedup, so copies stay in one fold), splits the training set into --folds
    folds, cross-validates a small model (one short run per fold,
    each scoring its validation fold), shows the held-out out-of-fold (OOF) macro F1 (the figure
    to compare options by),
    evaluates fold 0's run (the mean over the grid, the max beside it), predicts the
    test set with the fold ensemble and says where everything is. It takes a few minutes on a
    laptop CPU. Rerunning it clears the previous demo's folder first.

    Example: hpatool demo --out /tmp/hpa-demo
    """
    from hpatool.cli._console import out, progress_bar
    from hpatool.engine.demo import constant_baseline, make_demo_data, oof_figures, plan_steps
    from hpatool.outputs import existing_registry

    started = time.perf_counter()
    console = out()

    def heading(text: str) -> None:
        console.rule(f"[bold]{text}[/] (at {time.perf_counter() - started:.0f} s)")

    heading("1. synthesise and register a training and a test set")
    with existing_registry(ROOT_HOME.get()) as reg, progress_bar("synth") as progress:
        data = make_demo_data(
            out_dir, samples=samples, size=size, seed=seed, progress=progress, registry=reg
        )
    console.print(f"{data.train} and {data.test} ({size}x{size} px) registered in {data.home}")
    steps = plan_steps(data, size=size, epochs=epochs, arch=arch, seed=seed, folds=folds)
    for step in steps:
        if step.args[0] == "evaluate":  # after the experiment: the bar a model has to clear
            baseline = constant_baseline(data.home, data.train, fold=0)
            console.print(f"The best constant predictor scores macro F1 {baseline:.4f} on fold 0.")
        heading(step.title)
        _run(data.home, step.args)
        if step.args[0] == "experiments":
            fold0, held, in_sample = oof_figures(data.home, data.experiment)
            single = f"{fold0:.4f}" if fold0 is not None else "-"
            held_text = f"{held:.4f}" if held is not None else "-"
            console.print(
                f"Out-of-fold over {folds} folds: macro F1 {held_text} held out (each fold "
                "thresholded as tuned on the others: the figure to compare options by); "
                f"{in_sample:.4f} in sample (thresholds tuned on the predictions scored: "
                f"optimistic). Fold 0 alone: {single} (held out within its fold)."
            )
    heading("done")
    console.print(
        f"Submission:   {data.submission} (the {folds}-fold ensemble; probabilities: {data.probs})"
    )
    console.print(
        f"Runs:         {data.runs_dir} ({data.experiment}-f0 .. -f{folds - 1}: checkpoints, "
        "oof.csv, thresholds.json, curves.png)"
    )
    console.print(
        f"Plots:        {data.run_dir / 'curves.png'}, {data.out_dir / 'f1.png'}, "
        f"{data.out_dir / 'oof-f1.png'}, {data.out_dir / 'class-counts.png'}"
    )
    console.print(
        f"Registry:     {data.home} (try: hpatool --home {data.home} experiments show "
        f"{data.experiment})"
    )
    console.print(f"Demo finished in {time.perf_counter() - started:.1f} s.")


def _run(home: Path, args: tuple[str, ...]) -> None:
    """``hpatool --home HOME ARGS...``, in this process; a failed step has printed its error
    line, and ends the demo with its exit code."""
    from hpatool.cli import app

    code = app(args=["--home", str(home), *args], prog_name="hpatool", standalone_mode=False)
    if code:
        raise typer.Exit(code)
