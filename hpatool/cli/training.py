"""``hpatool split``, ``hpatool train`` and ``hpatool runs ...``: folds, training, runs."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hpatool.cli._common import HomeOpt, JsonOpt, open_registry

if TYPE_CHECKING:
    from hpatool.engine.train import ProgressCallback


def split(
    name: Annotated[str, typer.Argument(help="Dataset to split (labelled).", show_default=False)],
    folds: Annotated[int, typer.Option("--folds", help="Number of folds.", min=2, max=20)] = 5,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the split.", min=0)] = 0,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing split with other --folds/--seed.")
    ] = False,
    json_: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Split a dataset into multilabel-stratified folds (iterative stratification).

    Every class with at least --folds samples lands in every fold. The folds are stored in the
    registry; 'hpatool train --fold K' validates on fold K, and 'hpatool datasets show NAME'
    shows the class counts per fold.

    Example: hpatool split kaggle-train --folds 5 --seed 0
    """
    from hpatool.cli._console import Table, out, print_json
    from hpatool.data.split import split_dataset
    from hpatool.labels import CLASS_NAMES

    with open_registry(home) as reg:
        result = split_dataset(reg, name, folds=folds, seed=seed, force=force)
    if json_:
        print_json(
            {
                "dataset": result.dataset,
                "folds": result.folds,
                "seed": result.seed,
                "samples": result.samples,
                "fold_sizes": result.fold_sizes,
                "class_counts": result.class_counts,
                "replaced": result.replaced,
                "uneven": result.uneven,
            }
        )
        return
    console = out()
    sizes = ", ".join(f"{n:,}" for n in result.fold_sizes)
    console.print(
        f"Split [bold]{name}[/] into {result.folds} folds (seed {result.seed}): "
        f"{result.samples:,} samples, fold sizes {sizes}."
    )
    totals = [sum(counts[c] for counts in result.class_counts) for c in range(len(CLASS_NAMES))]
    rare = sorted((c for c in range(len(CLASS_NAMES)) if totals[c]), key=lambda c: totals[c])[:5]
    table = Table(title="Rarest classes per fold")
    table.add_column("class")
    for k in range(result.folds):
        table.add_column(f"fold {k}", justify="right")
    for c in rare:
        table.add_row(f"{c} {CLASS_NAMES[c]}", *(str(counts[c]) for counts in result.class_counts))
    console.print(table)
    if result.uneven:
        names = ", ".join(CLASS_NAMES[c] for c in result.uneven)
        console.print(f"[yellow]warning:[/] some folds have no sample of: {names}")


@contextlib.contextmanager
def _train_progress(enabled: bool) -> Iterator[ProgressCallback]:
    """A rich progress bar on stderr (steps, loss, images/s, ETA) + one stdout line per epoch."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from hpatool.cli._console import err, out
    from hpatool.engine.train import TrainEvent

    console = err()
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps  loss {task.fields[loss]}  {task.fields[ips]} img/s"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        disable=not (enabled and console.is_terminal),
    )
    task = bar.add_task("train", total=None, loss="-", ips="-")

    def callback(event: TrainEvent) -> None:
        if not enabled:
            return
        if event.kind == "start":
            info = event.info
            resumed = " (resumed)" if info.get("resumed") else ""
            out().print(
                f"Run [bold]{event.name}[/]{resumed}: {info['train_samples']:,} training, "
                f"{info['val_samples']:,} validation samples on {info['device']}"
                + (f" x{info['world_size']}" if info["world_size"] > 1 else "")
                + f"; files in {event.run_dir}"
            )
            bar.update(task, total=event.total_steps, completed=event.step)
        elif event.kind == "step":
            bar.update(
                task,
                completed=event.step,
                description=f"epoch {event.epoch}/{event.epochs}",
                loss=f"{event.loss:.4f}" if event.loss is not None else "-",
                ips=f"{event.images_per_s:.1f}" if event.images_per_s else "-",
            )
        elif event.kind == "validate":
            bar.update(task, description=f"epoch {event.epoch}/{event.epochs} validating")
        elif event.kind == "epoch" and event.metrics is not None:
            bar.update(task, description=f"epoch {event.epoch}/{event.epochs} done")
            m = event.metrics
            partial = " (partial, --max-steps)" if m.get("partial") else ""
            out().print(
                f"epoch {event.epoch}/{event.epochs}{partial}: train loss {m['train_loss']:.4f}, "
                f"val loss {m['val_loss']:.4f}, macro F1 {m['macro_f1']:.4f} tuned / "
                f"{m['macro_f1_at_0.5']:.4f} at 0.5, {m['images_per_s']:.1f} img/s"
                + ("  [green]best[/]" if event.best else "")
            )

    with bar:
        yield callback


def train(
    dataset: Annotated[
        list[str] | None,
        typer.Option(
            "--dataset",
            "-d",
            help="Registered dataset; repeat for more. Validation is "
            "a fold of the first (run 'hpatool split' on it); the others only add "
            "training samples. Required unless --resume.",
            show_default=False,
        ),
    ] = None,
    arch: Annotated[
        str | None,
        typer.Option(
            "--arch",
            help="resnet50, inceptionresnetv2, or any timm model name (default: resnet50).",
            show_default=False,
        ),
    ] = None,
    fold: Annotated[
        int | None,
        typer.Option(
            "--fold",
            help="Validation fold of the first dataset (default: 0).",
            min=0,
            show_default=False,
        ),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            "--epochs",
            help="Epochs; the cosine schedule spans them all (default: 10).",
            min=1,
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            help="Samples per step per process (default: 32).",
            min=1,
            show_default=False,
        ),
    ] = None,
    crop: Annotated[
        int | None,
        typer.Option(
            "--crop",
            help="Random square crop side in pixels; validation "
            "uses the centre crop (default: 256).",
            min=8,
            show_default=False,
        ),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            "--lr",
            help="Peak AdamW learning rate after warm-up (default: 5e-4).",
            show_default=False,
        ),
    ] = None,
    loss: Annotated[
        str | None,
        typer.Option(
            "--loss",
            help="bce or focal (sigmoid focal, gamma 2) (default: bce).",
            show_default=False,
        ),
    ] = None,
    oversample: Annotated[
        str | None,
        typer.Option(
            "--oversample",
            help="auto (rare classes 2-7x), none, or "
            "CLASS=FACTOR,... e.g. 27=7,Lysosomes=5 (default: auto).",
            show_default=False,
        ),
    ] = None,
    pretrained: Annotated[
        str | None,
        typer.Option(
            "--pretrained",
            help="Local 3-channel state dict (timm or "
            "torchvision) to start from, or none (default: none).",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            help="DataLoader worker processes (default: min(4, CPUs)).",
            min=0,
            show_default=False,
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option("--device", help="auto, cpu or cuda (default: auto).", show_default=False),
    ] = None,
    amp: Annotated[
        bool | None,
        typer.Option(
            "--amp/--no-amp", help="Mixed precision on CUDA (default: on).", show_default=False
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Parent folder of run folders (default: runs).", show_default=False
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Run name and folder (default: ARCH-fFOLD-TIMESTAMP).",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue run --name from its checkpoint-last.pt.")
    ] = False,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed",
            help="Seed of init, sampling and augmentation (default: 0).",
            min=0,
            show_default=False,
        ),
    ] = None,
    max_steps: Annotated[
        int | None,
        typer.Option(
            "--max-steps",
            help="Stop after this many optimizer steps in total (smoke tests).",
            min=1,
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            help="Use only the first N samples of each dataset (quick runs).",
            min=1,
            show_default=False,
        ),
    ] = None,
    json_: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Train a 4-channel (R, G, B, Y) CNN with 28 outputs on registered datasets.

    Validation is fold --fold of the first --dataset. Each epoch writes metrics.csv,
    checkpoint-last.pt, checkpoint-best.pt (on a new best tuned macro F1), thresholds.json and
    curves.png to OUT/NAME; config.json holds the resolved configuration. --resume --name RUN
    continues exactly where the run stopped (other options default to the run's). Under
    'torchrun --nproc-per-node N -m hpatool train ...' it trains with DDP.

    Example: hpatool train --dataset kaggle-train --arch resnet50 --fold 0 --epochs 20
    """
    from hpatool.cli._common import ROOT_HOME
    from hpatool.cli._console import out as stdout
    from hpatool.cli._console import print_json
    from hpatool.engine.train import fit

    options: dict[str, Any] = {
        "datasets": list(dataset) if dataset else None,
        "arch": arch,
        "fold": fold,
        "epochs": epochs,
        "batch_size": batch_size,
        "crop": crop,
        "lr": lr,
        "loss": loss,
        "oversample": oversample,
        "pretrained": pretrained,
        "workers": workers,
        "device": device,
        "amp": amp,
        "out": str(out) if out is not None else None,
        "name": name,
        "seed": seed,
        "max_steps": max_steps,
        "limit": limit,
    }
    if not resume and workers is None:
        options["workers"] = min(4, os.cpu_count() or 1)
    main_rank = os.environ.get("RANK", "0") == "0"
    with _train_progress(enabled=main_rank and not json_) as callback:
        result = fit(
            options,
            home=home if home is not None else ROOT_HOME.get(),
            resume=resume,
            progress=callback,
        )
    if not main_rank:
        return
    if json_:
        print_json(
            {
                "name": result.name,
                "run_dir": str(result.run_dir),
                "status": result.status,
                "epochs_done": result.epochs_done,
                "steps": result.steps,
                "best_f1": result.best_f1,
                "best_epoch": result.best_epoch,
                "history": result.history,
            }
        )
        return
    best = (
        f"{result.best_f1:.4f} (epoch {result.best_epoch})" if result.best_f1 is not None else "-"
    )
    stdout().print(
        f"Run [bold]{result.name}[/] {result.status}: {result.epochs_done} epochs, "
        f"{result.steps:,} steps, best tuned macro F1 {best}. Files in {result.run_dir}"
    )


runs_app = typer.Typer(
    help="List and show training runs.\n\nExample: hpatool runs list", no_args_is_help=True
)


@runs_app.command("list")
def runs_list(json_: JsonOpt = False, home: HomeOpt = None) -> None:
    """List training runs: arch, datasets, fold, epochs, best macro F1, status.

    Example: hpatool runs list --json
    """
    from hpatool.cli._console import Table, out, print_json

    with open_registry(home) as reg:
        records = reg.runs()
    if json_:
        print_json([r.to_json() for r in records])
        return
    if not records:
        out().print("No runs yet; start one with 'hpatool train --dataset NAME --arch ARCH'.")
        return
    table = Table(title="Runs")
    for col in ("name", "arch", "datasets", "fold", "epochs", "best F1", "status", "folder"):
        table.add_column(col, justify="right" if col in ("fold", "epochs", "best F1") else "left")
    for r in records:
        best = f"{r.best_f1:.4f}" if r.best_f1 is not None else "-"
        table.add_row(
            r.name,
            r.arch,
            ", ".join(r.datasets),
            "-" if r.fold is None else str(r.fold),
            str(r.epochs_done),
            best,
            r.status,
            str(r.out_dir),
        )
    out().print(table)


@runs_app.command("show")
def runs_show(
    run: Annotated[str, typer.Argument(help="Run name.", show_default=False)],
    json_: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Show one training run: its configuration, best macro F1 and files.

    Example: hpatool runs show resnet50-f0-20240101-120000
    """
    from hpatool.cli._console import Table, out, print_json
    from hpatool.engine.checkpoint import RUN_FILES

    with open_registry(home) as reg:
        record = reg.run(run)
    doc = record.to_json()
    files = {f: str(record.out_dir / f) for f in RUN_FILES if (record.out_dir / f).exists()}
    doc["files"] = files
    if json_:
        print_json(doc)
        return
    table = Table(title=f"Run {record.name}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key in (
        "name",
        "arch",
        "datasets",
        "fold",
        "status",
        "epochs_done",
        "best_f1",
        "best_epoch",
        "out_dir",
        "created_at",
        "updated_at",
    ):
        value = doc[key]
        if isinstance(value, list):
            value = ", ".join(map(str, value))
        elif isinstance(value, float):
            value = f"{value:.4f}"
        table.add_row(key, "-" if value is None else str(value))
    options = record.config.get("options", {})
    for key, value in options.items():
        table.add_row(f"option: {key}", "-" if value is None else str(value))
    for key in (
        "train_samples",
        "val_samples",
        "steps_per_epoch",
        "total_steps",
        "device",
        "amp",
        "world_size",
    ):
        if key in record.config:
            table.add_row(key, str(record.config[key]))
    for key, path in files.items():
        table.add_row(f"file: {key}", path)
    out().print(table)
