"""The dataset figures: a dataset's class counts (``stats --plot``) and a sample's four stains
(``show``), and the helpers every figure module shares (``figure``, ``legend_above``). Drawn
with matplotlib's object API (``Figure``, never pyplot and never ``matplotlib.use``), so a
notebook's backend is left alone; each function takes plain data and a path and writes the
picture atomically in the format the path's extension names. The figures of runs are in
``hpatool.run_plots``, the thresholds figure in ``hpatool.plot_thresholds``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpatool._io import save_figure
from hpatool.labels import CLASS_NAMES, NUM_CLASSES

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.axes import Axes


def figure(width: float, height: float, dpi: int = 100) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=dpi, layout="constrained")


def _class_bars(
    ax: Axes, series: Sequence[tuple[str, Sequence[float]]], *, legend: bool = True
) -> list[tuple[float, Any]]:
    """Grouped bars, one group per class and one colour per series, class names on the axis;
    with ``legend``, the legend above the axes (outside them: it never covers a bar). Returns
    each series' bar offset from its class position and its colour."""
    import numpy as np

    x = np.arange(NUM_CLASSES)
    width = 0.8 / max(len(series), 1)
    placed: list[tuple[float, Any]] = []
    for i, (label, values) in enumerate(series):
        offset = (i - (len(series) - 1) / 2) * width
        bars = ax.bar(x + offset, values, width, label=label)
        placed.append((offset, bars.patches[0].get_facecolor()))
    ax.set_xticks(x)
    ax.set_xticklabels(
        [f"{i} {name}" for i, name in enumerate(CLASS_NAMES)], rotation=60, ha="right", fontsize=8
    )
    ax.set_xlim(-0.6, NUM_CLASSES - 0.4)
    if legend:
        legend_above(ax)
    return placed


def legend_above(ax: Axes, handles: Sequence[Any] | None = None, ncols: int | None = None) -> None:
    """The axes' legend in a row (or rows) above it, outside the plotting area."""
    if handles is None:
        handles = ax.get_legend_handles_labels()[0]
    ax.legend(
        handles=list(handles),
        loc="lower left",
        bbox_to_anchor=(0.0, 1.01, 1.0, 0.1),
        ncols=ncols or min(len(handles), 4),
        frameon=False,
        fontsize=9,
        borderaxespad=0.2,
    )


def plot_class_counts(
    series: Sequence[tuple[str, Sequence[int], int]],
    path: Path,
    *,
    share: bool = False,
    rare_share: float | None = None,
) -> Path:
    """Class counts of one or more datasets (``(legend label, 28 counts, labelled samples)``),
    log axis. With ``share``, each class's share of the dataset's labelled samples (%), so
    datasets of different sizes compare. A class without any sample is marked with a ``0`` at
    the foot of its (missing) bar. ``rare_share`` (a fraction, e.g. 0.01) draws the rare line:
    one line at that share, or in count mode one per dataset at that share of its samples."""
    from matplotlib.lines import Line2D
    from matplotlib.transforms import blended_transform_factory

    fig = figure(14, 6.5)
    ax = fig.subplots()
    values = [
        [100.0 * c / labelled if share else float(c) for c in counts]
        for _, counts, labelled in series
    ]
    # Log axis: a zero cannot be drawn (log 0), so it is a missing bar marked with a "0".
    placed = _class_bars(
        ax,
        [
            (s[0], [v if v > 0 else float("nan") for v in vals])
            for s, vals in zip(series, values, strict=True)
        ],
        legend=False,
    )
    ax.set_yscale("log")
    handles = list(ax.get_legend_handles_labels()[0])
    if rare_share is not None:
        handles += _rare_lines(ax, series, placed, share=share, rare_share=rare_share)
    foot = blended_transform_factory(ax.transData, ax.transAxes)
    zeros = False
    for (offset, colour), vals in zip(placed, values, strict=True):
        for cls, v in enumerate(vals):
            if v == 0:
                zeros = True
                ax.text(cls + offset, 0.01, "0", transform=foot, ha="center", va="bottom",
                        color=colour, fontsize=9, fontweight="bold")  # fmt: skip
    if zeros:
        handles.append(
            Line2D([], [], linestyle="none", marker="$0$", color="0.2", label="no sample")
        )
    legend_above(ax, handles, ncols=len(series))
    fig.suptitle("Class shares" if share else "Class counts")
    what = "share of labelled samples, % (log scale)" if share else "samples with the class"
    ax.set_ylabel(what if share else f"{what} (log scale)")
    ax.grid(axis="y", which="both", alpha=0.3)
    if share:
        from matplotlib.ticker import FuncFormatter

        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}%"))
    return save_figure(fig, path, dpi=110)


def _rare_lines(
    ax: Axes,
    series: Sequence[tuple[str, Sequence[int], int]],
    placed: Sequence[tuple[float, Any]],
    *,
    share: bool,
    rare_share: float,
) -> list[Any]:
    """The rare threshold: in share mode one grey line; in count mode one line per dataset
    (its colour), at ``rare_share`` of its labelled samples. Returns the legend handles."""
    pct = f"{100 * rare_share:g}%"
    if share:
        line = ax.axhline(100 * rare_share, color="0.25", linestyle="--", linewidth=1.2,
                          label=f"{pct}: rare below")  # fmt: skip
        return [line]
    lines = []
    for (label, _, labelled), (_, colour) in zip(series, placed, strict=True):
        lines.append(
            ax.axhline(
                rare_share * labelled,
                color=colour,
                linestyle="--",
                linewidth=1.2,
                label=f"{pct} of {label}: rare below",
            )
        )
    return lines


def plot_sample(arr: np.ndarray, composite_rgb: np.ndarray, title: str, path: Path) -> Path:
    """A sample's four stains (``arr``: (4, H, W) uint8, R G B Y), each black-to-colour, and
    its colour composite, side by side."""
    from matplotlib.colors import LinearSegmentedColormap

    def black_to(name: str, rgb: tuple[float, float, float]) -> LinearSegmentedColormap:
        return LinearSegmentedColormap.from_list(name, [(0.0, 0.0, 0.0), rgb])

    panels = [
        ("red: microtubules", arr[0], black_to("red", (1.0, 0.0, 0.0))),
        ("green: protein", arr[1], black_to("green", (0.0, 1.0, 0.0))),
        ("blue: nucleus", arr[2], black_to("blue", (0.2, 0.4, 1.0))),
        ("yellow: ER", arr[3], black_to("yellow", (1.0, 1.0, 0.0))),
    ]
    fig = figure(20, 4.6)
    axes = fig.subplots(1, 5)
    for ax, (name, img, cmap) in zip(axes, panels, strict=False):
        ax.imshow(img, cmap=cmap, vmin=0, vmax=255)
        ax.set_title(name)
    axes[4].imshow(composite_rgb)
    axes[4].set_title("composite (yellow = red + green)")
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title)
    return save_figure(fig, path, dpi=100)
