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
    ] = 320,
    size: Annotated[int, typer.Option("--size", help="Synthetic image size.", min=32)] = 64,
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs.", min=1)] = 6,
    arch: Annotated[
        str, typer.Option("--arch", help="Model (a small timm ResNet by default).")
    ] = "resnet10t",
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
) -> None:
    """Run the whole chain on synthetic data on a CPU, in a fresh registry home under --out.

    Synthesises a training and a test set, registers them, prints their statistics, splits the
    training set into folds, trains a small model briefly, evaluates it with max and with mean
    aggregation of the crops, predicts the test set and says where everything is. It takes a few
    minutes on a laptop CPU. Rerunning it clears the previous demo's folder first.

    Example: hpatool demo --out /tmp/hpa-demo
    """
    from hpatool.cli._console import out, progress_bar
    from hpatool.cli.predict import evaluate, predict
    from hpatool.cli.stats import stats
    from hpatool.cli.training import split, train
    from hpatool.demo import constant_baseline, make_demo_data

    started = time.perf_counter()
    console = out()

    def step(text: str) -> None:
        console.rule(f"[bold]{text}[/] ({time.perf_counter() - started:.0f} s)")

    step("1. synthesise and register a training and a test set")
    with progress_bar("synth") as progress:
        data = make_demo_data(out_dir, samples=samples, size=size, seed=seed, progress=progress)
    console.print(f"{data.train} and {data.test} ({size}x{size} px) registered in {data.home}")
    home = data.home
    step("2. label statistics")
    stats(
        [data.train, data.test],
        json_=False,
        plot=data.out_dir / "class-counts.png",
        top_pairs=5,
        home=home,
    )
    step("3. multilabel-stratified folds")
    split(data.train, folds=5, seed=seed, home=home)
    step(f"4. train {arch} on fold 0's complement")
    run = "demo-run"
    crop = size
    train(
        dataset=[data.train],
        arch=arch,
        fold=0,
        epochs=epochs,
        batch_size=16,
        crop=crop,
        lr=3e-3,
        workers=0,
        device="cpu",
        out=data.runs_dir,
        name=run,
        seed=seed,
        home=home,
    )
    for i, agg in enumerate(("max", "mean")):
        step(f"{5 + i}. evaluate on the validation fold, {agg} over 4 crops")
        evaluate(
            dataset=data.train,
            run=run,
            crops=4,
            crop_size=crop * 3 // 4,
            agg=agg,
            device="cpu",
            plot=data.out_dir / f"f1-{agg}.png",
            home=home,
        )
    baseline = constant_baseline(home, data.train, fold=0)
    console.print(f"The best constant predictor scores macro F1 {baseline:.4f} on this fold.")
    step("7. predict the test set")
    submission = data.out_dir / "submission.csv"
    predict(
        dataset=data.test,
        run=run,
        crops=4,
        crop_size=crop * 3 // 4,
        agg="max",
        out=submission,
        probs=data.out_dir / "probs.csv",
        device="cpu",
        home=home,
    )
    step("done")
    run_dir = data.runs_dir / run
    console.print(f"Submission:   {submission} (probabilities: {data.out_dir / 'probs.csv'})")
    console.print(
        f"Checkpoints:  {run_dir / 'checkpoint-best.pt'}, {run_dir / 'checkpoint-last.pt'}"
    )
    console.print(
        f"Plots:        {run_dir / 'curves.png'}, {data.out_dir / 'f1-max.png'}, "
        f"{data.out_dir / 'f1-mean.png'}, {data.out_dir / 'class-counts.png'}"
    )
    console.print(f"Registry:     {home} (try: hpatool --home {home} runs show {run})")
    console.print(f"Demo finished in {time.perf_counter() - started:.1f} s.")
