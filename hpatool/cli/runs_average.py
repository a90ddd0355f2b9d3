"""``hpatool runs average``: a run whose weights are the mean of another run's last epochs;
``engine.training.average`` does the work."""

from __future__ import annotations

from typing import Annotated

import typer

from hpatool.cli._common import HomeOpt, JsonOpt, open_registry
from hpatool.cli._scoring_options import CacheOpt, DeviceOpt, WorkersOpt

RunArg = Annotated[
    str,
    typer.Argument(metavar="RUN", help="The run whose epochs to average.", show_default=False),
]
LastOpt = Annotated[
    int,
    typer.Option(
        "--last",
        metavar="K",
        help="Average the weights of its last K kept epochs (it trained with "
        "--keep-checkpoints K or more).",
        min=1,
        show_default=False,
    ),
]
NameOpt = Annotated[
    str,
    typer.Option(
        "--name",
        metavar="NAME",
        help="The new run's name (its folder goes beside RUN's).",
        show_default=False,
    ),
]
ExperimentOpt = Annotated[
    str | None,
    typer.Option(
        "--experiment",
        metavar="EXP",
        help="Add the new run to experiment EXP as the model of RUN's fold (average every "
        "fold's run into one new experiment to compare it out of fold).",
        show_default=False,
    ),
]
BatchSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        help="Samples per batch (default: the run's --batch-size).",
        min=1,
        show_default=False,
    ),
]


def runs_average(
    run: RunArg,
    last: LastOpt,
    name: NameOpt,
    experiment: ExperimentOpt = None,
    batch_size: BatchSizeOpt = None,
    workers: WorkersOpt = None,
    device: DeviceOpt = None,
    cache: CacheOpt = None,
    json_: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Write a new run whose weights are the mean of RUN's last K epoch checkpoints (SWA).

    BatchNorm statistics are recomputed on RUN's training samples (one pass, the run's
    --augment), not averaged. The new run is then scored like any run: its validation fold's
    centre crops (metrics.csv, thresholds.json) and the run's view (oof.csv, thresholds tuned on
    it), so 'predict', 'evaluate', 'runs compare' and experiments use it as they use RUN. It is
    registered 'done' and is not trained further.

    Example: hpatool runs average r50-f0 --last 3 --name r50-f0-swa
    """
    from hpatool.cli._console import out, print_json, progress_bar
    from hpatool.engine.training.average import average_run

    stages = {"batchnorm": "BatchNorm statistics", "oof": "scoring validation fold"}
    with open_registry(home) as reg, progress_bar(f"average {run}", "images") as bar:

        def progress(stage: str, done: int, total: int) -> None:
            bar.update(done, total, description=stages.get(stage, stage))

        result = average_run(
            reg,
            run,
            last=last,
            name=name,
            experiment=experiment,
            device=device or "auto",
            workers=workers,
            batch_size=batch_size,
            cache=cache or "auto",
            progress=progress,
        )
    if json_:
        print_json(result.to_json())
        return
    record = result.record
    epochs = ", ".join(str(e) for e in result.epochs)
    bn = (
        f"BatchNorm statistics of {result.bn_layers} layers recomputed on "
        f"{result.bn_samples:,} training samples"
        if result.bn_layers
        else "no BatchNorm layers"
    )
    joined = ""
    if record.experiment:
        new = " (new)" if result.experiment_created else ""
        joined = f"; fold {record.fold} of experiment {record.experiment}{new}"
    heldout = result.oof_macro_f1_heldout
    figures = (
        f"validation macro F1 {result.metrics['macro_f1']:.4f} held out (centre crop); "
        f"out-of-fold macro F1 on {result.view_text}: "
        + ("-" if heldout is None else f"{heldout:.4f}")
        + f" held out, {result.oof_macro_f1:.4f} in sample"
    )
    out().print(
        f"Run {record.name}: the mean of epochs {epochs} of run {result.source}; {bn}; "
        f"{figures}{joined}. Files in {record.out_dir}",
        markup=False,
        soft_wrap=True,
    )
