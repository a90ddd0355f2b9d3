"""Every figure hpatool draws, with matplotlib's object API (``Figure``, never pyplot and never
``matplotlib.use``), so a notebook's backend is left alone. Each function takes plain data and a
path and writes the picture atomically in the format the path's extension names."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpatool._io import save_figure
from hpatool.labels import CLASS_NAMES, NUM_CLASSES

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.axes import Axes


def _figure(width: float, height: float, dpi: int = 100) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=dpi, layout="constrained")


def _class_bars(ax: Axes, series: Sequence[tuple[str, Sequence[float]]]) -> None:
    """Grouped bars, one group per class and one colour per series, class names on the axis."""
    import numpy as np

    x = np.arange(NUM_CLASSES)
    width = 0.8 / max(len(series), 1)
    for i, (label, values) in enumerate(series):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels(
        [f"{i} {name}" for i, name in enumerate(CLASS_NAMES)], rotation=60, ha="right", fontsize=8
    )
    ax.legend()


def plot_class_counts(series: Sequence[tuple[str, Sequence[int]]], path: Path) -> Path:
    """Class counts of one or more datasets (``(legend label, 28 counts)``), log axis."""
    fig = _figure(14, 6)
    ax = fig.subplots()
    # Log axis: zero counts are drawn as missing bars rather than failing on log(0).
    _class_bars(ax, [(label, [c if c > 0 else float("nan") for c in v]) for label, v in series])
    ax.set_yscale("log")
    ax.set_ylabel("samples with the class (log scale)")
    ax.set_title("Class counts")
    ax.grid(axis="y", which="both", alpha=0.3)
    return save_figure(fig, path, dpi=110)


def plot_f1(series: Sequence[tuple[str, Sequence[float]]], title: str, path: Path) -> Path:
    """Per-class F1 bars, one colour per ``(legend label, 28 F1 values)``."""
    fig = _figure(14, 5.5)
    ax = fig.subplots()
    _class_bars(ax, series)
    ax.set_ylim(0, 1.15)  # headroom above F1 = 1 for the legend
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.legend(loc="upper left", ncols=max(1, len(series)))
    ax.set_ylabel("F1")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path, dpi=110)


def plot_curves(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """A run's ``curves.png``: training/validation loss and macro F1 per epoch."""
    epochs = [r["epoch"] for r in rows]
    fig = _figure(10, 4)
    ax_loss, ax_f1 = fig.subplots(1, 2)
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in rows], "o-", label="validation")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("Loss")
    ax_loss.legend()
    ax_f1.plot(epochs, [r["macro_f1"] for r in rows], "o-", label="tuned thresholds")
    ax_f1.plot(epochs, [r["macro_f1_at_0.5"] for r in rows], "o-", label="threshold 0.5")
    ax_f1.set_xlabel("epoch")
    ax_f1.set_ylabel("macro F1")
    ax_f1.set_title("Validation macro F1")
    ax_f1.set_ylim(0, 1)
    ax_f1.legend()
    for ax in (ax_loss, ax_f1):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    return save_figure(fig, path, dpi=100)


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
    fig = _figure(20, 4.6)
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
