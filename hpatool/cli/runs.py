"""``hpatool runs list``, ``runs show``, ``runs compare``, ``runs remove``, ``runs import``,
``runs average`` and ``runs export``: the training runs of the registry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hpatool.cli._common import HomeOpt, JsonOpt, open_registry
from hpatool.cli.runs_average import runs_average
from hpatool.cli.runs_export import runs_export

if TYPE_CHECKING:
    from hpatool.engine.runs.admin import RunSummary

app = typer.Typer(
    help="List, show, compare, remove, import, average and export training runs.\n\n"
    "Example: hpatool runs list",
    no_args_is_help=True,
)


@app.command("list")
def runs_list(json_: JsonOpt = False, home: HomeOpt = None) -> None:
    """List training runs: arch, datasets, fold, epochs, best macro F1, status.

    Example: hpatool runs list --json
    """
    from hpatool.cli._console import Table, err, out, print_json

    with open_registry(home) as reg:
        records = reg.runs()
    for r in records:  # a hand-edited row: said, the others listed as they are
        if r.problem:
            err().print(f"warning: {r.problem}", markup=False, soft_wrap=True)
    if json_:
        print_json(
            [{**r.to_json(), **({"problem": r.problem} if r.problem else {})} for r in records]
        )
        return
    if not records:
        out().print("No runs yet; start one with 'hpatool train --dataset NAME --arch ARCH'.")
        return
    table = Table(title="Runs")
    experiments = any(r.experiment for r in records)
    cols: tuple[str, ...] = (
        "name", "arch", "datasets", "fold", "epochs", "best F1", "status", "folder",
    )  # fmt: skip
    if experiments:  # the column only where some run belongs to an experiment
        cols = (*cols[:4], "experiment", *cols[4:])
    for col in cols:
        table.add_column(col, justify="right" if col in ("fold", "epochs", "best F1") else "left")
    for r in records:
        best = f"{r.best_f1:.4f}" if r.best_f1 is not None else "-"
        table.add_row(
            r.name + (" (bad row)" if r.problem else ""),
            r.arch,
            ", ".join(r.datasets),
            "-" if r.fold is None else str(r.fold),
            *([r.experiment or "-"] if experiments else []),
            str(r.epochs_done),
            best,
            r.status,
            str(r.out_dir),
        )
    out().print(table)


@app.command("show")
def runs_show(
    run: Annotated[str, typer.Argument(metavar="RUN", help="Run name.", show_default=False)],
    json_: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Show one training run: its configuration, best macro F1 and files.

    Example: hpatool runs show resnet50-f0-20240101-120000
    """
    from hpatool.cli._console import Table, out, print_json
    from hpatool.engine.runs.admin import RunSummary, oof_thresholds
    from hpatool.engine.runs.run_dir import RunDir

    with open_registry(home) as reg:
        record = reg.run(run)
    doc = record.to_json()
    oof = RunSummary(record.name, record.arch, [], None, "", 0, record.out_dir)
    oof_thresholds(oof)
    doc["oof_macro_f1"] = oof.oof_f1  # the run's view, thresholds tuned on it (None: not yet)
    doc["oof_macro_f1_heldout"] = oof.oof_f1_heldout  # the same, held out (split halves)
    files = {name: str(path) for name, path in RunDir(record.out_dir).files().items()}
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
        "experiment",
        "status",
        "epochs_done",
        "best_f1",
        "best_epoch",
        "oof_macro_f1_heldout",
        "oof_macro_f1",
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
    for key, value in _provenance_rows(record.config.get("provenance")):
        table.add_row(key, value)
    for key, path in files.items():
        table.add_row(f"file: {key}", path)
    out().print(table)


def _provenance_rows(doc: object) -> list[tuple[str, str]]:
    """``runs show``'s rows of the run's provenance (versions, git commit, device, the
    --pretrained file's sha256); none for a run trained before it was recorded."""
    if not isinstance(doc, dict):
        return []
    rows = [(f"version: {k}", str(doc[k])) for k in ("hpatool", "torch", "timm") if k in doc]
    git = doc.get("git")
    if isinstance(git, dict):
        dirty = " (with uncommitted changes)" if git.get("dirty") else ""
        rows.append(("git commit", f"{git.get('commit')}{dirty}"))
    if doc.get("gpu"):
        rows.append(("gpu", str(doc["gpu"])))
    pretrained = doc.get("pretrained")
    if isinstance(pretrained, dict) and pretrained.get("sha256"):
        rows.append(("pretrained sha256", f"{pretrained['sha256']} ({pretrained.get('file')})"))
    return rows


@app.command("compare")
def runs_compare(
    runs: Annotated[
        list[str],
        typer.Argument(metavar="RUN", help="Run names, in the order to show.", show_default=False),
    ],
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            metavar="FILE.png",
            help="Also draw the runs' validation macro F1 and losses per epoch in one figure "
            "(PNG, SVG or PDF).",
            show_default=False,
        ),
    ] = None,
    json_: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Compare training runs side by side: held-out macro F1, its epoch, losses, speed.

    For each run: arch, datasets, fold, epochs done, the out-of-fold macro F1 held out (the
    best checkpoint's oof.csv, thresholds tuned on one half and scored on the other, both ways,
    over 5 seeded splittings: the figure to compare runs by) and in sample (tuned on all of it),
    the best epoch's held-out validation macro F1 and its epoch, the macro F1 at threshold 0.5
    and the validation loss at that epoch, images/s, status; read from its files (the
    registry's best F1 when it has no metrics.csv yet).

    Example: hpatool runs compare resnet50-f0 densenet121-f0 --plot compare.png
    """
    from hpatool.cli._console import out, print_json
    from hpatool.engine.runs.admin import compare_runs

    with open_registry(home) as reg:
        summaries = compare_runs(reg, runs, plot=plot)
    if json_:
        print_json([s.to_json() for s in summaries])
        return
    _print_comparison(summaries)
    for s in summaries:
        if s.note:
            out().print(f"note: run {s.name}: {s.note}", markup=False, soft_wrap=True)
    if plot is not None:
        out().print(f"Plot written to {plot.expanduser()}")


def _epochs_done(s: RunSummary) -> str:
    """``'4'``, or ``'0 (+ part of epoch 1)'`` for a run stopped in the middle of an epoch."""
    part = s.rows[-1]["epoch"] if s.rows and s.rows[-1]["partial"] else None
    return f"{s.epochs_done}" + (f" (+ part of epoch {part})" if part else "")


def _print_comparison(summaries: list[RunSummary]) -> None:
    """The runs as columns, one row per field; the highest best F1 in bold."""
    from hpatool.cli._console import Table, out

    def num(value: float | None, fmt: str = ".4f") -> str:
        return "-" if value is None else format(value, fmt)

    top = max((s.oof_f1_heldout for s in summaries if s.oof_f1_heldout is not None), default=None)
    table = Table(title="Runs compared")
    table.add_column("")
    for s in summaries:
        table.add_column(s.name, justify="right")
    fields: list[tuple[str, Callable[[RunSummary], str]]] = [
        ("arch", lambda s: s.arch),
        ("datasets", lambda s: ", ".join(s.datasets)),
        ("fold", lambda s: "-" if s.fold is None else str(s.fold)),
        ("epochs done", _epochs_done),
        (
            "OOF macro F1, held out",
            lambda s: (
                ("[bold]" if s.oof_f1_heldout == top and len(summaries) > 1 else "")
                + _oof_cell(s, s.oof_f1_heldout)
            ),
        ),
        ("OOF macro F1, in sample", lambda s: num(s.oof_f1)),
        ("best val. macro F1 (held out)", lambda s: num(s.best_f1)),
        ("best epoch", lambda s: "-" if s.best_epoch is None else str(s.best_epoch)),
        ("macro F1 at 0.5 (that epoch)", lambda s: num(s.f1_at_05)),
        ("val loss (that epoch)", lambda s: num(s.val_loss)),
        ("images/s (mean of epochs)", lambda s: num(s.images_per_s, ",.1f")),
        ("status", lambda s: s.status),
    ]
    for label, cell in fields:
        table.add_row(label, *[cell(s) for s in summaries])
    out().print(table)


def _oof_cell(s: RunSummary, f1: float | None) -> str:
    """``0.2603 (max, grid)``: the validation fold scored by the best checkpoint with the
    run's view (the run's ``oof.csv``)."""
    if f1 is None:
        return "-"
    view = s.oof_view or {}
    tta = view.get("tta", "crops")
    many = "" if tta == "grid" else f" of {view.get('crops')}"
    shown = f" ({view.get('agg')}{many} {tta})" if view else ""
    return f"{f1:.4f}{shown}"


@app.command("remove")
def runs_remove(
    run: Annotated[str, typer.Argument(metavar="RUN", help="Run name.", show_default=False)],
    files: Annotated[
        bool,
        typer.Option(
            "--files",
            help="Also delete the run's files (config.json, checkpoints, metrics, curves) and "
            "its folder when nothing else is left in it.",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Remove a run marked running although its process cannot be seen to be gone "
            "(it ran on another host); one whose process is gone on this host needs no --force.",
        ),
    ] = False,
    home: HomeOpt = None,
) -> None:
    """Remove a training run from the registry, and with --files its run files.

    Example: hpatool runs remove resnet50-f0-20240101-120000 --files
    """
    from hpatool.cli._console import out
    from hpatool.engine.runs.admin import remove_run

    with open_registry(home) as reg:
        removed = remove_run(reg, run, files=files, force=force)
    if not files:
        out().print(f"Removed run {removed.name}; its files stay in {removed.out_dir}")
    elif removed.folder_removed:
        out().print(f"Removed run {removed.name} and its folder {removed.out_dir}")
    else:
        kept = f"; kept {len(removed.kept)} other entries" if removed.kept else ""
        out().print(
            f"Removed run {removed.name} and {len(removed.deleted)} of its files in "
            f"{removed.out_dir}{kept}"
        )


@app.command("import")
def runs_import(
    run_dir: Annotated[
        Path,
        typer.Argument(
            metavar="RUN_DIR",
            help="A run folder (OUT/NAME) trained elsewhere: its config.json and metrics.csv.",
            show_default=False,
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            metavar="NAME",
            help="Register it under this name (default: the name in its config.json).",
            show_default=False,
        ),
    ] = None,
    json_: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Register a run folder trained on another machine or with another --home.

    Its config.json gives the run's options (datasets, fold, experiment), its metrics.csv the
    best epoch and macro F1; the run is 'done' when all its epochs and its oof.csv are there,
    else 'interrupted' (continue it with 'hpatool train --resume --name RUN'). The folder stays
    where it is. A run of an experiment joins it (the experiment is created if new), so the
    folds of 'hpatool train --experiment EXP' trained on several machines come together.

    Example: hpatool runs import /mnt/gpu2/runs/r50-f3
    """
    from hpatool.cli._console import out, print_json
    from hpatool.engine.runs.run_import import import_run

    with open_registry(home) as reg:
        imported = import_run(reg, run_dir, name=name)
    record = imported.record
    if json_:
        print_json({**record.to_json(), "experiment_created": imported.experiment_created})
        return
    best = "-" if record.best_f1 is None else f"{record.best_f1:.4f} (epoch {record.best_epoch})"
    joined = ""
    if record.experiment:
        new = " (new)" if imported.experiment_created else ""
        joined = f", fold {record.fold} of experiment {record.experiment}{new}"
    out().print(
        f"Imported run {record.name}{joined}: {record.status}, {record.epochs_done} "
        f"epoch{'' if record.epochs_done == 1 else 's'}, "
        f"best macro F1 {best}; files in {record.out_dir}",
        markup=False,
    )
    for note in imported.notes:
        out().print(f"note: {note}", markup=False)


app.command("average")(runs_average)  # its own module, cli/runs_average.py
app.command("export")(runs_export)  # its own module, cli/runs_export.py
