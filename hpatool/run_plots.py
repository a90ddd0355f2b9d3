"""The figures of runs, drawn like the dataset figures of ``hpatool.plots`` (matplotlib's
object API, written atomically): a run's ``curves.png`` (losses, held-out and in-sample macro
F1, learning rate by epoch), runs compared (``runs compare --plot``), ``evaluate --plot``'s
per-class F1, precision and recall under max and mean, and ``experiments show --plot``'s
per-class OOF F1 with each fold's macro F1."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpatool._io import save_figure
from hpatool.labels import CLASS_NAMES, NUM_CLASSES
from hpatool.plots import figure, legend_above

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: The colours of ``curves.png``'s lines, one per metric.
_CURVE_COLOURS = {
    "train_loss": "C0", "val_loss": "C1", "macro_f1": "C2", "macro_f1_at_0.5": "C3", "lr": "C4",
    "macro_f1_in_sample": "C5",
}  # fmt: skip
HELDOUT_F1_LABEL = "macro F1, held out (tuned on half the fold, scored on the other)"
IN_SAMPLE_F1_LABEL = "macro F1, in sample (tuned and scored on the fold)"
F1_AT_05_LABEL = "macro F1 at threshold 0.5"


def _num(value: Any) -> float:
    """A metrics value as a float; NaN when it is missing or empty."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _by_epoch(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: int(r["epoch"]))


def _epoch_line(
    ax: Axes, rows: Sequence[dict[str, Any]], key: str, label: str | None, **style: Any
) -> Any:
    """One metric per epoch, markers on the epochs; an epoch stopped part-way (``partial``)
    gets a hollow marker. Returns the line (for a legend)."""
    xs = [int(r["epoch"]) for r in rows]
    ys = [_num(r.get(key)) for r in rows]
    (line,) = ax.plot(xs, ys, marker="o", markersize=5, label=label, **style)
    hollow = [(x, y) for x, y, r in zip(xs, ys, rows, strict=True) if int(r.get("partial") or 0)]
    if hollow:
        hx, hy = zip(*hollow, strict=True)
        ax.plot(hx, hy, linestyle="none", marker="o", markersize=5, markerfacecolor="white",
                markeredgecolor=line.get_color(), zorder=line.get_zorder() + 0.1)  # fmt: skip
    return line


def _epoch_axis(ax: Axes, epochs: Sequence[int]) -> None:
    """Whole epochs on the x axis, even for a single (partial) epoch."""
    from matplotlib.ticker import MaxNLocator

    ticks = sorted(set(epochs))
    if ticks and len(ticks) <= 12:
        ax.set_xticks(ticks)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if ticks:
        ax.set_xlim(ticks[0] - 0.5, ticks[-1] + 0.5)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)


def _partial_handle() -> Any:
    from matplotlib.lines import Line2D

    return Line2D([], [], linestyle="none", marker="o", markerfacecolor="white",
                  markeredgecolor="0.3", label="epoch stopped part-way")  # fmt: skip


def plot_curves(
    rows: Sequence[dict[str, Any]], path: Path, best: dict[str, Any] | None = None
) -> Path:
    """A run's ``curves.png`` from its ``metrics.csv`` rows: training and validation loss,
    validation macro F1 (held out, in sample, and at 0.5) and the learning rate, per epoch.
    The best epoch's row (``best``: the run's choice, ``run_dir.best_row``) is marked in every
    panel."""
    from matplotlib.lines import Line2D

    rows = _by_epoch(rows)
    fig = figure(14, 4.8)
    ax_loss, ax_f1, ax_lr = fig.subplots(1, 3, width_ratios=(1, 1, 0.7))
    c = _CURVE_COLOURS
    handles = [
        _epoch_line(ax_loss, rows, "train_loss", "training loss", color=c["train_loss"]),
        _epoch_line(ax_loss, rows, "val_loss", "validation loss", color=c["val_loss"]),
        _epoch_line(ax_f1, rows, "macro_f1", HELDOUT_F1_LABEL, color=c["macro_f1"]),
        _epoch_line(ax_f1, rows, "macro_f1_at_0.5", F1_AT_05_LABEL, color=c["macro_f1_at_0.5"]),
        _epoch_line(ax_lr, rows, "lr", "learning rate (end of epoch)", color=c["lr"]),
    ]
    if any(_num(r.get("macro_f1_in_sample")) == _num(r.get("macro_f1_in_sample")) for r in rows):
        style = {"color": c["macro_f1_in_sample"], "linestyle": "--", "alpha": 0.7}
        handles.insert(
            3, _epoch_line(ax_f1, rows, "macro_f1_in_sample", IN_SAMPLE_F1_LABEL, **style)
        )
    if best is not None:
        epoch, f1 = int(best["epoch"]), _num(best["macro_f1"])
        for ax in (ax_loss, ax_f1, ax_lr):
            ax.axvline(epoch, color="0.35", linestyle=":", linewidth=1.3)
        ax_f1.plot([epoch], [f1], linestyle="none", marker="*", markersize=15,
                   color=c["macro_f1"], markeredgecolor="black", zorder=5)  # fmt: skip
        ax_f1.annotate(f"{f1:.3f}", (epoch, f1), textcoords="offset points", xytext=(0, 9),
                       ha="center", fontsize=9)  # fmt: skip
        handles.append(
            Line2D(
                [],
                [],
                color="0.35",
                linestyle=":",
                marker="*",
                markersize=12,
                markerfacecolor=c["macro_f1"],
                markeredgecolor="black",
                label=f"best epoch {epoch} (held-out macro F1 {f1:.3f})",
            )
        )
    if any(int(r.get("partial") or 0) for r in rows):
        handles.append(_partial_handle())
    epochs = [int(r["epoch"]) for r in rows]
    for ax, title in ((ax_loss, "Loss"), (ax_f1, "Validation macro F1"), (ax_lr, "Learning rate")):
        _epoch_axis(ax, epochs)
        ax.set_title(title)
    ax_loss.set_ylabel("loss")
    ax_f1.set_ylabel("macro F1")
    ax_f1.set_ylim(0, 1.05)
    _lr_axis(ax_lr, [_num(r.get("lr")) for r in rows])
    fig.legend(handles=handles, loc="outside lower center", ncols=4, frameon=False, fontsize=9)
    return save_figure(fig, path, dpi=100)


def _lr_axis(ax: Axes, lrs: Sequence[float]) -> None:
    """A log axis when the learning rate spans more than a factor 20, else plain numbers in
    scientific notation."""
    known = [v for v in lrs if v == v and v > 0]
    if known and max(known) / min(known) > 20:
        ax.set_yscale("log")
    else:
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    ax.set_ylabel("learning rate")


def plot_run_comparison(
    runs: Sequence[tuple[str, Sequence[dict[str, Any]], dict[str, Any] | None]], path: Path
) -> Path:
    """``runs compare --plot``: the runs' validation macro F1 (held out: solid; at
    0.5: dashed) and loss (validation: solid; training: dashed) per epoch, one colour per run
    (``(run name, metrics rows, its best epoch's row)``), each run's best epoch starred."""
    from matplotlib.lines import Line2D

    fig = figure(14, 5.2)
    ax_f1, ax_loss = fig.subplots(1, 2)
    handles, epochs, partial = [], [], False
    for i, (name, unsorted, best) in enumerate(runs):
        rows, colour = _by_epoch(unsorted), f"C{i % 10}"
        handles.append(_epoch_line(ax_f1, rows, "macro_f1", name, color=colour))
        _epoch_line(ax_f1, rows, "macro_f1_at_0.5", None, color=colour, linestyle="--", alpha=0.6)
        _epoch_line(ax_loss, rows, "val_loss", None, color=colour)
        _epoch_line(ax_loss, rows, "train_loss", None, color=colour, linestyle="--", alpha=0.6)
        if best is not None:
            ax_f1.plot([int(best["epoch"])], [_num(best["macro_f1"])], linestyle="none",
                       marker="*", markersize=15, color=colour, markeredgecolor="black",
                       zorder=5)  # fmt: skip
        epochs += [int(r["epoch"]) for r in rows]
        partial = partial or any(int(r.get("partial") or 0) for r in rows)
    handles += [
        Line2D([], [], color="0.3", label="solid: held-out F1 / validation loss"),
        Line2D([], [], color="0.3", linestyle="--", label="dashed: F1 at 0.5 / training loss"),
        Line2D(
            [],
            [],
            linestyle="none",
            marker="*",
            markersize=12,
            color="0.6",
            markeredgecolor="black",
            label="best epoch (held-out macro F1)",
        ),
    ]
    if partial:
        handles.append(_partial_handle())
    for ax, title in ((ax_f1, "Validation macro F1"), (ax_loss, "Loss")):
        _epoch_axis(ax, epochs)
        ax.set_title(title)
    ax_f1.set_ylabel("macro F1")
    ax_f1.set_ylim(0, 1.05)
    ax_loss.set_ylabel("loss")
    fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False, fontsize=9)
    return save_figure(fig, path, dpi=100)


def plot_evaluation(
    series: Sequence[tuple[str, Sequence[tuple[float, float, float]]]],
    support: Sequence[int],
    title: str,
    path: Path,
) -> Path:
    """``evaluate --plot``: per-class F1, precision and recall (three panels), one colour per
    ``(legend label, 28 (f1, precision, recall))`` series (``max`` and ``mean`` of the same
    crops), each class's support (positive samples) under its name; a class with no positives
    is shaded and marked "no positives", with no bars (its F1 is not 0, it is undefined)."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 10), dpi=100, layout="constrained")
    axes = fig.subplots(3, 1, sharex=True)
    x = np.arange(NUM_CLASSES)
    empty = [c for c in range(NUM_CLASSES) if support[c] == 0]
    width = 0.8 / max(len(series), 1)
    for row, (ax, metric) in enumerate(zip(axes, ("F1", "precision", "recall"), strict=True)):
        for i, (label, values) in enumerate(series):
            heights = [np.nan if support[c] == 0 else values[c][row] for c in range(NUM_CLASSES)]
            offset = (i - (len(series) - 1) / 2) * width
            ax.bar(x + offset, heights, width, label=label, color=f"C{i}")
        for c in empty:
            ax.axvspan(c - 0.5, c + 0.5, color="0.9", zorder=0)
            if row == 0:
                ax.text(
                    c,
                    0.5,
                    "no positives",
                    rotation=90,
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="0.35",
                )
        ax.set_ylim(0, 1.05)
        ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
        ax.set_ylabel(metric)
        ax.set_xlim(-0.6, NUM_CLASSES - 0.4)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(
        loc="lower left",
        bbox_to_anchor=(0, 1.0),
        ncols=max(1, len(series)),
        frameon=False,
        fontsize=9,
    )
    axes[-1].set_xticks(x)
    axes[-1].set_xticklabels(
        [f"{i} {name} ({support[i]:,})" for i, name in enumerate(CLASS_NAMES)],
        rotation=60,
        ha="right",
        fontsize=8,
    )
    axes[-1].set_xlabel(
        "class (support: positive samples); macro F1 counts a class with no positives as 0"
    )
    fig.suptitle(title)
    return save_figure(fig, path, dpi=100)


def plot_experiment(
    class_f1: Sequence[float],
    support: Sequence[int],
    folds: Sequence[tuple[str, float | None]],
    oof_macro_f1: float,
    title: str,
    path: Path,
    label: str = "OOF macro F1 (held out)",
) -> Path:
    """``experiments show --plot``: per-class out-of-fold F1 (bars; the class's support, its
    positive OOF samples, under its name; a class with none shaded, no bar) in
    the top panel, the OOF macro F1 as a line (held out, as ``label`` says); each fold run's
    own best macro F1 (held out within its fold, ``(run, F1 or None)``) beside the OOF figure
    in the bottom panel."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(14, 8), dpi=100, layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=(3, 1))
    x = np.arange(NUM_CLASSES)
    heights = [np.nan if support[c] == 0 else class_f1[c] for c in range(NUM_CLASSES)]
    top.bar(x, heights, 0.7, color="C0", label="OOF F1 per class")
    for c in range(NUM_CLASSES):
        if support[c] == 0:
            top.axvspan(c - 0.5, c + 0.5, color="0.9", zorder=0)
            top.text(c, 0.5, "no positives", rotation=90, ha="center", va="center", fontsize=8,
                     color="0.35")  # fmt: skip
    top.axhline(oof_macro_f1, color="C3", linestyle="--", label=f"{label} {oof_macro_f1:.4f}")
    top.set_ylim(0, 1.05)
    top.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    top.set_ylabel("F1 (OOF)")
    top.set_xlim(-0.6, NUM_CLASSES - 0.4)
    top.grid(axis="y", alpha=0.3)
    top.set_xticks(x)
    top.set_xticklabels(
        [f"{i} {name} ({support[i]:,})" for i, name in enumerate(CLASS_NAMES)],
        rotation=60,
        ha="right",
        fontsize=8,
    )
    legend_above(top, ncols=2)
    names = [name for name, _ in folds] + ["OOF (all folds)"]
    values = [np.nan if f1 is None else f1 for _, f1 in folds] + [oof_macro_f1]
    colors = ["C0"] * len(folds) + ["C3"]
    bottom.barh(np.arange(len(names)), values, color=colors)
    for i, v in enumerate(values):
        bottom.text((0 if v != v else v) + 0.005, i, "-" if v != v else f"{v:.4f}", va="center",
                    fontsize=8)  # fmt: skip
    bottom.set_yticks(np.arange(len(names)))
    bottom.set_yticklabels(names, fontsize=8)
    bottom.invert_yaxis()
    bottom.set_xlim(0, 1)
    bottom.set_xlabel(f"macro F1: each fold's best epoch (held out within its fold), and {label}")
    bottom.grid(axis="x", alpha=0.3)
    fig.suptitle(title)
    return save_figure(fig, path, dpi=100)
