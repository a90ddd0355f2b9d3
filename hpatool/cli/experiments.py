"""``hpatool experiments list`` and ``experiments show``: the experiments of the registry (the
fold runs of ``hpatool cv`` and ``train --experiment``) and their out-of-fold scores."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hpatool.cli._common import HomeOpt, JsonOpt, open_registry

if TYPE_CHECKING:
    from hpatool.engine.runs.experiments import ExperimentReport
    from hpatool.engine.runs.oof import OofSummary
    from hpatool.engine.views import View

app = typer.Typer(
    help="List and show experiments: fold runs and their out-of-fold (OOF) macro F1.\n\n"
    "Example: hpatool experiments show r50",
    no_args_is_help=True,
)


@app.command("list")
def experiments_list(json_: JsonOpt = False, home: HomeOpt = None) -> None:
    """List experiments: datasets, fold runs, OOF macro F1 (held out; in sample beside it).

    Example: hpatool experiments list --json
    """
    from hpatool.cli._console import Table, out, print_json
    from hpatool.engine.runs.experiments import experiment_report
    from hpatool.errors import HpaToolError

    rows: list[dict[str, Any]] = []
    with open_registry(home) as reg:
        for record in reg.experiments():
            doc: dict[str, Any] = {
                **record.to_json(),
                "oof_macro_f1_heldout": None,
                "oof_macro_f1": None,
                "oof_samples": 0,
            }
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
                held = report.oof.heldout_macro_f1
                doc["oof_macro_f1_heldout"] = None if held is None else float(held)
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
    columns = (
        "name", "datasets", "folds", "OOF samples", "OOF F1 held out", "in sample", "created",
    )  # fmt: skip
    for col in columns:
        table.add_column(col, justify="left" if col in ("name", "datasets", "created") else "right")
    for doc in rows:
        runs = doc.get("runs") or []
        folds = str(len(runs) if isinstance(runs, list) else runs)
        if doc.get("split_folds"):
            folds += f"/{doc['split_folds']}"
        oof = "-" if doc["oof_macro_f1"] is None else f"{doc['oof_macro_f1']:.4f}"
        held = doc["oof_macro_f1_heldout"]
        held_text = "-" if held is None else f"{held:.4f}"
        samples = (
            f"{doc['oof_samples']:,}/{doc['dataset_samples']:,}"
            if doc.get("dataset_samples")
            else "-"
        )
        table.add_row(
            doc["name"], ", ".join(doc["datasets"]), folds, samples, held_text, oof,
            doc["created_at"],
        )  # fmt: skip
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
        metavar="FILE.png",
        help="Also draw the per-class OOF F1 (with each class's support) and each fold's macro "
        "F1 beside the OOF one, in one figure (PNG, SVG or PDF).",
        show_default=False,
    ),
]


PlotThresholdsOpt = Annotated[
    Path | None,
    typer.Option(
        "--plot-thresholds",
        metavar="FILE.png",
        help="Also draw each class's OOF F1 against its threshold (one panel per class), the "
        "chosen threshold marked and each fold's held-out threshold ticked.",
        show_default=False,
    ),
]
#: ``--sort``: the order of the per-class rows.
SORTS = ("class", "f1", "support")
SortOpt = Annotated[
    str,
    typer.Option(
        "--sort",
        metavar="class|f1|support",
        help="Order of the per-class table: class (its number), f1 (highest first) or support "
        "(most positives first).",
    ),
]


def sort_classes(rows: list[Any], sort: str, key_f1: Any = None) -> list[Any]:
    """Per-class rows (with ``.index``, ``.f1``, ``.support``) in ``--sort`` order."""
    from hpatool.errors import UsageError

    if sort not in SORTS:
        raise UsageError(f"--sort {sort!r} is invalid; use one of {', '.join(SORTS)}")
    if sort == "f1":
        return sorted(
            rows, key=lambda r: (r.support == 0, -(key_f1(r) if key_f1 else r.f1), r.index)
        )
    if sort == "support":
        return sorted(rows, key=lambda r: (-r.support, r.index))
    return list(rows)


@app.command("show")
def experiments_show(
    experiment: Annotated[
        str, typer.Argument(metavar="EXP", help="Experiment name.", show_default=False)
    ],
    json_: JsonOpt = False,
    plot: PlotOpt = None,
    plot_thresholds: PlotThresholdsOpt = None,
    sort: SortOpt = "class",
    home: HomeOpt = None,
) -> None:
    """Show an experiment: each fold's run and macro F1, and the out-of-fold (OOF) scores.

    The OOF macro F1 puts every fold run's oof.csv together (one prediction per sample of the
    dataset, from the model that did not train on it). The held-out figure, the one to compare
    options by, thresholds fold k's predictions with per-class thresholds tuned only on the
    other folds' predictions, then scores all folds together; the in-sample figure tunes the
    thresholds on all OOF predictions and scores those same predictions (optimistic, most for
    rare classes). Per class: held-out precision, recall, F1, the in-sample F1 and support; the
    view (crops, aggregation, TTA) of each run. An experiment with one fold has no held-out
    figure. A run trained on another split (see 'hpatool runs import') is named: its oof.csv
    predictions are not out-of-fold for the current split. With --json and no oof.csv yet,
    "thresholds" is null and "oof_macro_f1" null; "oof_macro_f1_heldout" and
    "heldout_thresholds" (fold -> the thresholds applied to it) are null with one fold.

    Example: hpatool experiments show r50 --plot r50.png
    """
    from hpatool.cli._console import out, print_json
    from hpatool.engine.runs.experiments import experiment_report

    sort_classes([], sort)  # a bad --sort before any work
    targets: dict[str, Path] = {}
    with open_registry(home) as reg:
        report = experiment_report(reg, experiment)
        from hpatool.outputs import check_figure

        for flag, given in (("--plot", plot), ("--plot-thresholds", plot_thresholds)):
            if given is not None:
                targets[flag] = check_figure(given, flag, reg)
    if targets and report.oof is None:
        from hpatool.errors import NotFound

        raise NotFound(
            f"{next(iter(targets))}: experiment {experiment!r} has no OOF predictions yet (no "
            "run has an oof.csv); nothing to draw"
        )
    if "--plot" in targets:
        _plot(report, targets["--plot"])
    if "--plot-thresholds" in targets:
        _plot_thresholds(report, targets["--plot-thresholds"])
    if json_:
        print_json(report.to_json())
        return
    _print_report(report, sort)
    for target in targets.values():
        out().print(f"Plot written to {target}", markup=False)


def _plot_thresholds(report: ExperimentReport, path: Path) -> None:
    from hpatool.plot_thresholds import plot_thresholds

    oof = report.oof
    assert oof is not None
    held = [c.f1 for c in oof.heldout_classes] if oof.heldout_classes is not None else None
    f1, label = headline(report)
    plot_thresholds(
        oof.y_true,
        oof.probs,
        list(oof.thresholds),
        oof.heldout_thresholds,
        held,
        f"Experiment {report.name} on {report.dataset}: {label} {f1:.4f}, "
        f"{len(oof.ids):,} out-of-fold predictions",
        path,
    )


def _shown(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def flag(name: str) -> str:
    from hpatool.engine.config import flag as option_flag

    return option_flag(name)


def _plot(report: ExperimentReport, path: Path) -> None:
    from hpatool.run_plots import plot_experiment

    oof = report.oof
    assert oof is not None
    classes = oof.heldout_classes if oof.heldout_classes is not None else oof.classes
    f1, label = headline(report)
    plot_experiment(
        [c.f1 for c in classes],
        [c.support for c in classes],
        [(f"fold {r.fold}: {r.name}", r.best_f1) for r in report.runs],
        f1,
        f"Experiment {report.name} on {report.dataset}: {label} {f1:.4f} over "
        f"{len(oof.ids):,} of {oof.dataset_samples:,} samples, "
        f"{len(report.runs) - len(oof.without_oof)} fold runs",
        path,
        label,
    )


def headline(report: ExperimentReport) -> tuple[float, str]:
    """The figure to compare by and its label: the held-out OOF macro F1, else (one fold) the
    in-sample one, labelled so."""
    oof = report.oof
    assert oof is not None
    if oof.heldout_macro_f1 is not None:
        return float(oof.heldout_macro_f1), "OOF macro F1 (held out)"
    return float(oof.macro_f1), "OOF macro F1 (in sample)"


def _view_text(view: View) -> str:
    """``max of 8 crops of 256 px``, ``max over the grid of 256 px windows``, ..."""
    if view.tta == "grid":
        return f"{view.agg} over the grid of {view.crop} px windows"
    if view.tta in ("flips", "grid+flips"):
        return (
            f"{view.agg} over the grid of {view.crop} px windows x {min(view.crops, 8)} "
            "flips/rotations"
        )
    return f"{view.agg} of {view.crops} {view.tta} of {view.crop} px"


def _print_report(report: ExperimentReport, sort: str = "class") -> None:
    from hpatool.cli._console import Table, out
    from hpatool.engine.runs.oof import OOF_FILE

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
    columns = ["fold", "run", "status", "best epoch", "fold F1 (held out)", "oof.csv"]
    for col in [*columns, *([] if one_view else ["view"])]:
        table.add_column(
            col, justify="right" if col in ("fold", "best epoch", columns[4]) else "left"
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
    for run, keys in report.differs.items():
        what = "; ".join(
            f"{flag(k)} {_shown(a)}, the experiment's {_shown(b)}" for k, (a, b) in keys.items()
        )
        console.print(f"note: {run} trained differently from the other folds: {what}", markup=False)
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
    _print_classes(oof, sort)


def _print_classes(oof: OofSummary, sort: str = "class") -> None:
    """The per-class OOF table (held out where there is a held-out figure) and the figures."""
    from hpatool.cli._console import Table, out

    console = out()
    held = oof.heldout_classes
    title = (
        "Per class, out-of-fold, held out (each fold thresholded as tuned on the other folds)"
        if held is not None
        else "Per class, out-of-fold, in sample (thresholds tuned on all OOF predictions)"
    )
    classes = Table(title=title)
    for col in ("class", "thresh.", "precision", "recall", "F1", "in-sample F1", "support"):
        classes.add_column(col, justify="left" if col == "class" else "right")
    rows = held if held is not None else oof.classes
    triples = list(zip(rows, oof.classes, oof.thresholds, strict=True))
    order = sort_classes([c for c, _, _ in triples], sort)
    by_index = {c.index: (c, own, t) for c, own, t in triples}
    for c, own, t in (by_index[r.index] for r in order):
        empty = c.support == 0
        classes.add_row(
            f"{c.index} {c.name}",
            f"{t:.3f}",
            f"{c.precision:.3f}",
            f"{c.recall:.3f}",
            "-" if empty else f"{c.f1:.3f}",
            "-" if empty else f"{own.f1:.3f}",
            f"{c.support:,}",
        )
    console.print(classes)
    if oof.without_oof:
        console.print(
            f"runs without oof.csv (left out): {', '.join(oof.without_oof)}", markup=False
        )
    console.print(
        "thresh.: tuned on all OOF predictions (what predict --threshold auto applies)",
        markup=False,
    )
    if oof.heldout_macro_f1 is not None:
        console.print(
            f"OOF macro F1 [bold]{oof.heldout_macro_f1:.4f}[/] held out (the figure to compare "
            f"by), {oof.macro_f1:.4f} in sample (thresholds tuned on the predictions scored), "
            f"over {len(oof.ids):,} of {oof.dataset_samples:,} labelled samples of "
            f"{oof.dataset} (one prediction per sample, from the model that did not train on "
            "it; a class with no positives counts as 0)"
        )
    else:
        console.print(
            f"OOF macro F1 {oof.macro_f1:.4f} in sample (thresholds tuned on the predictions "
            f"scored; optimistic) over {len(oof.ids):,} of {oof.dataset_samples:,} labelled "
            f"samples of {oof.dataset}; no held-out figure: one fold (held-out thresholds are "
            "tuned on the other folds)"
        )
