"""``hpatool experiments list`` and ``experiments show``: the experiments of the registry (the
fold runs of ``hpatool cv`` and ``train --experiment``) and their out-of-fold scores."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hpatool.cli._common import HomeOpt, JsonOpt, open_registry

if TYPE_CHECKING:
    from hpatool.engine.experiments import ExperimentReport

app = typer.Typer(
    help="List and show experiments: fold runs and their out-of-fold (OOF) macro F1.\n\n"
    "Example: hpatool experiments show r50",
    no_args_is_help=True,
)


@app.command("list")
def experiments_list(json_: JsonOpt = False, home: HomeOpt = None) -> None:
    """List experiments: datasets, fold runs, OOF macro F1.

    Example: hpatool experiments list --json
    """
    from hpatool.cli._console import Table, out, print_json
    from hpatool.engine.experiments import experiment_report
    from hpatool.errors import HpaToolError

    rows: list[dict[str, Any]] = []
    with open_registry(home) as reg:
        for record in reg.experiments():
            doc: dict[str, Any] = {**record.to_json(), "oof_macro_f1": None, "oof_samples": 0}
            try:
                report = experiment_report(reg, record.name)
            except HpaToolError as exc:  # a hand-edited row, an unreadable oof.csv
                doc["problem"] = str(exc)
                try:  # "runs" is a list of run names, as in the other rows
                    doc["runs"] = [r.name for r in reg.experiment_runs(record.name)]
                except HpaToolError:
                    doc["runs"] = []
                rows.append(doc)
                continue
            doc["split_folds"] = report.split_folds
            doc["runs"] = [r.name for r in report.runs]
            if report.oof is not None:
                doc["oof_macro_f1"] = float(report.oof.macro_f1)
                doc["oof_samples"] = len(report.oof.ids)
                doc["dataset_samples"] = report.oof.dataset_samples
            rows.append(doc)
    if json_:
        print_json(rows)
        return
    if not rows:
        out().print(
            "No experiments yet; start one with 'hpatool cv --dataset NAME --name EXP'.",
            markup=False,
        )
        return
    table = Table(title="Experiments")
    for col in ("name", "datasets", "folds", "OOF samples", "OOF macro F1", "created"):
        table.add_column(col, justify="left" if col in ("name", "datasets", "created") else "right")
    for doc in rows:
        runs = doc.get("runs") or []
        folds = str(len(runs) if isinstance(runs, list) else runs)
        if doc.get("split_folds"):
            folds += f"/{doc['split_folds']}"
        oof = "-" if doc["oof_macro_f1"] is None else f"{doc['oof_macro_f1']:.4f}"
        samples = (
            f"{doc['oof_samples']:,}/{doc['dataset_samples']:,}"
            if doc.get("dataset_samples")
            else "-"
        )
        table.add_row(
            doc["name"], ", ".join(doc["datasets"]), folds, samples, oof, doc["created_at"]
        )
    out().print(table)
    for doc in rows:
        if doc["oof_macro_f1"] is None and not doc.get("problem"):
            out().print(f"note: {doc['name']}: no OOF predictions yet", markup=False)
        elif doc.get("problem"):
            out().print(f"note: {doc['name']}: {doc['problem']}", markup=False, soft_wrap=True)


PlotOpt = Annotated[
    Path | None,
    typer.Option(
        "--plot",
        help="Also draw the per-class OOF F1 (with each class's support) and each fold's macro "
        "F1 beside the OOF one, in one figure (PNG, SVG or PDF).",
        show_default=False,
    ),
]


@app.command("show")
def experiments_show(
    experiment: Annotated[str, typer.Argument(help="Experiment name.", show_default=False)],
    json_: JsonOpt = False,
    plot: PlotOpt = None,
    home: HomeOpt = None,
) -> None:
    """Show an experiment: each fold's run and macro F1, and the out-of-fold (OOF) scores.

    The OOF macro F1 puts every fold run's oof.csv together (one prediction per sample of the
    dataset, from the model that did not train on it), with per-class thresholds tuned on them
    all: the figure to compare options by (a fold's own F1 is tuned on that fold, optimistic).
    Per class: precision, recall, F1 and support; the view (crops, aggregation, TTA) of each
    run. A run trained on another split (see 'hpatool runs import') is named: its oof.csv
    predictions are not out-of-fold for the current split. With --json and no oof.csv yet,
    "thresholds" is null and "oof_macro_f1" null.

    Example: hpatool experiments show r50 --plot r50.png
    """
    from hpatool.cli._console import out, print_json
    from hpatool.engine.experiments import experiment_report

    with open_registry(home) as reg:
        report = experiment_report(reg, experiment)
        if plot is not None:
            from hpatool.outputs import check_figure

            target = check_figure(plot, "--plot", reg)
    if plot is not None and report.oof is None:
        from hpatool.errors import NotFound

        raise NotFound(
            f"--plot: experiment {experiment!r} has no OOF predictions yet (no run has an "
            "oof.csv); nothing to draw"
        )
    if plot is not None:
        _plot(report, target)
    if json_:
        print_json(report.to_json())
        return
    _print_report(report)
    if plot is not None:
        out().print(f"Plot written to {target}", markup=False)


def _plot(report: ExperimentReport, path: Path) -> None:
    from hpatool.plots import plot_experiment

    oof = report.oof
    assert oof is not None
    plot_experiment(
        [c.f1 for c in oof.classes],
        [c.support for c in oof.classes],
        [(f"fold {r.fold}: {r.name}", r.best_f1) for r in report.runs],
        float(oof.macro_f1),
        f"Experiment {report.name} on {report.dataset}: OOF macro F1 {oof.macro_f1:.4f} over "
        f"{len(oof.ids):,} of {oof.dataset_samples:,} samples, "
        f"{len(report.runs) - len(oof.without_oof)} fold runs",
        path,
    )


def _view_text(view: dict[str, Any]) -> str:
    crops, tta = view.get("crops"), view.get("tta", "crops")
    what = {"crops": "crops", "flips": "flips", "crops+flips": "crops+flips"}.get(tta, tta)
    return f"{view.get('agg')} of {crops} {what} of {view.get('crop')} px"


def _print_report(report: ExperimentReport) -> None:
    from hpatool.cli._console import Table, out
    from hpatool.engine.oof import OOF_FILE

    console = out()
    oof = report.oof
    split = f", split into {report.split_folds} folds" if report.split_folds else ", not split"
    console.print(
        f"Experiment [bold]{report.name}[/]: folds of {report.dataset}{split}; datasets "
        f"{', '.join(report.datasets)}; created {report.created_at}"
    )
    views = oof.views if oof is not None else {}
    shown = {_view_text(views[r.name]) for r in report.runs if r.name in views}
    one_view = len(shown) == 1  # the usual case: shown once, in the title
    title = (
        f"Folds (each scored its validation fold with {next(iter(shown))})" if one_view else "Folds"
    )
    table = Table(title=title)
    columns = ["fold", "run", "status", "best epoch", "fold F1", "oof.csv"]
    for col in [*columns, *([] if one_view else ["view"])]:
        table.add_column(
            col, justify="right" if col in ("fold", "best epoch", "fold F1") else "left"
        )
    for r in report.runs:
        table.add_row(
            "-" if r.fold is None else str(r.fold),
            r.name,
            r.status,
            "-" if r.best_epoch is None else str(r.best_epoch),
            "-" if r.best_f1 is None else f"{r.best_f1:.4f}",
            "yes" if (r.out_dir / OOF_FILE).is_file() else "no",
            *([] if one_view else [_view_text(views[r.name]) if r.name in views else "-"]),
        )
    console.print(table)
    if report.folds_missing:
        console.print(
            f"folds without a run: {', '.join(map(str, report.folds_missing))} ('hpatool cv "
            f"--name {report.name}' trains them)",
            markup=False,
        )
    if report.not_out_of_fold:
        console.print(
            f"runs trained on another split: {', '.join(report.not_out_of_fold)}; their "
            "oof.csv predictions are not out-of-fold for the current split: retrain them or "
            "split as they were",
            markup=False,
            soft_wrap=True,
        )
    if oof is None:
        console.print("no OOF predictions yet", markup=False)
        return
    classes = Table(title="Per class, out-of-fold (thresholds tuned on all OOF predictions)")
    for col in ("class", "thresh.", "precision", "recall", "F1", "support"):
        classes.add_column(col, justify="left" if col == "class" else "right")
    for c, t in zip(oof.classes, oof.thresholds, strict=True):
        empty = c.support == 0
        classes.add_row(
            f"{c.index} {c.name}",
            f"{t:.3f}",
            f"{c.precision:.3f}",
            f"{c.recall:.3f}",
            "-" if empty else f"{c.f1:.3f}",
            f"{c.support:,}",
        )
    console.print(classes)
    if oof.without_oof:
        console.print(
            f"runs without oof.csv (left out): {', '.join(oof.without_oof)}", markup=False
        )
    console.print(
        f"OOF macro F1 [bold]{oof.macro_f1:.4f}[/] over {len(oof.ids):,} of "
        f"{oof.dataset_samples:,} labelled samples of {oof.dataset} (one prediction per sample, "
        "from the model that did not train on it; a class with no positives counts as 0)"
    )
