"""The figures (issue 7): ``stats --plot`` (shares, zero counts, the rare line, a legend that
covers no bar), a run's ``curves.png`` (best epoch, learning rate, whole-epoch ticks, the tuned
F1's label) and ``runs compare --plot``; and reading ``metrics.csv`` back."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from hpatool import plots, run_plots
from hpatool.engine.runs.run_dir import best_row, read_metrics_csv, write_metrics_csv
from hpatool.errors import DataError

#: The real train.csv class counts (31,072 labelled samples) and a small set missing 3 classes.
TRAIN_COUNTS = [12885, 1254, 3621, 1561, 1858, 2513, 1008, 2822, 53, 45, 28, 1093, 688, 537,
                1066, 21, 530, 210, 902, 1482, 172, 3777, 802, 2965, 322, 8228, 328,
                11]  # fmt: skip
SMALL_COUNTS = [74, 11, 28, 9, 10, 13, 10, 16, 0, 1, 1, 8, 4, 2, 5, 0, 7, 4, 10, 7, 2, 28, 3, 18,
                1, 48, 1, 0]  # fmt: skip


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The figures the plot functions save (they are still written to their files)."""
    figures: list[Any] = []
    save = plots.save_figure

    def keep(fig: Any, path: Path, dpi: int = 110) -> Path:
        figures.append(fig)
        return save(fig, path, dpi=dpi)

    for module in (plots, run_plots):
        monkeypatch.setattr(module, "save_figure", keep)
    return figures


def _bar_heights(ax: Any, n_series: int) -> list[list[float]]:
    patches = ax.patches
    per = len(patches) // n_series
    return [[p.get_height() for p in patches[i * per : (i + 1) * per]] for i in range(n_series)]


def _hlines(ax: Any) -> list[float]:
    """The y of the axes' horizontal lines (``axhline``)."""
    return [
        float(line.get_ydata()[0])
        for line in ax.get_lines()
        if len(set(line.get_ydata())) == 1 and tuple(line.get_xdata()) == (0, 1)
    ]


def _vlines(ax: Any) -> list[float]:
    return [
        float(line.get_xdata()[0])
        for line in ax.get_lines()
        if len(set(line.get_xdata())) == 1 and tuple(line.get_ydata()) == (0, 1)
    ]


def _legend_clear_of_axes(fig: Any, legend: Any, axes: list[Any]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # lays the figure out as saving did
    renderer = canvas.get_renderer()
    box = legend.get_window_extent(renderer)
    for ax in axes:
        assert not box.overlaps(ax.get_window_extent(renderer)), "the legend covers a plot"


def test_share_plot_draws_shares_zero_marks_and_one_rare_line(
    drawn: list[Any], tmp_path: Path
) -> None:
    out = plots.plot_class_counts(
        [("train (31,072)", TRAIN_COUNTS, 31072), ("small (198)", SMALL_COUNTS, 198)],
        tmp_path / "share.png",
        share=True,
        rare_share=0.01,
    )
    with Image.open(out) as img:
        assert img.format == "PNG"
    (fig,) = drawn
    (ax,) = fig.axes
    train, small = _bar_heights(ax, 2)
    assert train[0] == pytest.approx(100 * 12885 / 31072) and train[27] == pytest.approx(
        100 * 11 / 31072
    )
    assert small[0] == pytest.approx(100 * 74 / 198)
    assert [i for i, h in enumerate(small) if math.isnan(h)] == [8, 15, 27]
    # a "0" at the foot of each missing bar, in the small set's colour
    zeros = [t for t in ax.texts if t.get_text() == "0"]
    assert sorted(round(t.get_position()[0]) for t in zeros) == [8, 15, 27]
    assert _hlines(ax) == [pytest.approx(1.0)]  # the 1% line, in percent
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "1%: rare below" in labels and "no sample" in labels
    _legend_clear_of_axes(fig, ax.get_legend(), [ax])


def test_count_plot_draws_each_datasets_rare_line(drawn: list[Any], tmp_path: Path) -> None:
    plots.plot_class_counts(
        [("a", TRAIN_COUNTS, 31072), ("b", SMALL_COUNTS, 198)],
        tmp_path / "counts.png",
        rare_share=0.01,
    )
    (ax,) = drawn[0].axes
    assert _bar_heights(ax, 2)[0][5] == 2513
    assert sorted(_hlines(ax)) == [pytest.approx(1.98), pytest.approx(310.72)]
    assert ax.get_yscale() == "log"
    _legend_clear_of_axes(drawn[0], ax.get_legend(), [ax])


def _row(epoch: int, f1: float, *, partial: int = 0, lr: float = 1e-3) -> dict[str, Any]:
    return {
        "epoch": epoch, "step": 10 * epoch, "partial": partial, "train_loss": 0.5 / epoch,
        "val_loss": 0.6 / epoch, "macro_f1": f1, "macro_f1_in_sample": f1 + 0.05,
        "macro_f1_at_0.5": f1 / 2, "lr": lr,
        "images_per_s": 100.0, "seconds": 5.0, "val_seconds": 1.0,
    }  # fmt: skip


def test_curves_mark_the_best_epoch_and_plot_the_learning_rate(
    drawn: list[Any], tmp_path: Path
) -> None:
    rows = [_row(1, 0.2, lr=3e-3), _row(2, 0.5, lr=2e-3), _row(3, 0.4, partial=1, lr=1e-4)]
    run_plots.plot_curves(rows, tmp_path / "curves.png", best_row(rows))
    (fig,) = drawn
    ax_loss, ax_f1, ax_lr = fig.axes
    for ax in (ax_loss, ax_f1, ax_lr):
        assert _vlines(ax) == [2.0]  # the best epoch, not the last one
        assert list(ax.get_xticks()) == [1, 2, 3]
    (lr_line, *_) = ax_lr.get_lines()
    assert list(lr_line.get_ydata()) == [3e-3, 2e-3, 1e-4]
    assert ax_lr.get_yscale() == "log"  # a factor 30 between them
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "macro F1, held out (tuned on half the fold, scored on the other)" in labels
    assert "macro F1, in sample (tuned and scored on the fold)" in labels
    assert "macro F1 at threshold 0.5" in labels
    assert "best epoch 2 (held-out macro F1 0.500)" in labels
    assert "epoch stopped part-way" in labels
    _legend_clear_of_axes(fig, fig.legends[0], [ax_loss, ax_f1, ax_lr])


def test_curves_of_one_partial_epoch_have_one_whole_epoch_tick(
    drawn: list[Any], tmp_path: Path
) -> None:
    run_plots.plot_curves([_row(1, 0.1, partial=1)], tmp_path / "curves.png")
    for ax in drawn[0].axes:
        assert list(ax.get_xticks()) == [1]
        assert ax.get_xlim() == (0.5, 1.5)


def test_run_comparison_draws_each_run_and_its_best(drawn: list[Any], tmp_path: Path) -> None:
    a = [_row(1, 0.2), _row(2, 0.6), _row(3, 0.5)]
    b = [_row(1, 0.3, partial=1)]
    run_plots.plot_run_comparison(
        [("a", a, best_row(a)), ("b", b, best_row(b))], tmp_path / "cmp.png"
    )
    ax_f1, ax_loss = drawn[0].axes
    stars = [(line.get_xdata()[0], line.get_ydata()[0]) for line in ax_f1.get_lines()
             if line.get_marker() == "*"]  # fmt: skip
    assert stars == [(2, 0.6), (1, 0.3)]
    assert list(ax_f1.get_xticks()) == [1, 2, 3]
    labels = [t.get_text() for t in drawn[0].legends[0].get_texts()]
    assert labels[:2] == ["a", "b"]
    _legend_clear_of_axes(drawn[0], drawn[0].legends[0], [ax_f1, ax_loss])


def test_metrics_csv_reads_back_as_written(tmp_path: Path) -> None:
    rows = [_row(1, 0.25), {**_row(2, 0.5, partial=1), "val_loss": ""}]
    path = tmp_path / "metrics.csv"
    write_metrics_csv(path, rows)
    back = read_metrics_csv(path)
    assert back[0] == _row(1, 0.25)
    assert back[1]["partial"] == 1 and back[1]["val_loss"] is None and back[1]["epoch"] == 2
    path.write_text(path.read_text().replace("0.25", "abc"))
    with pytest.raises(DataError, match=r"metrics\.csv, line 2: macro_f1 'abc' is not a number"):
        read_metrics_csv(path)
    path.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"not a metrics\.csv"):
        read_metrics_csv(path)


def test_best_row_is_the_first_highest_tuned_f1() -> None:
    rows = [_row(1, 0.4), {**_row(2, 0.0), "macro_f1": None}, _row(3, 0.6), _row(4, 0.6)]
    assert best_row(rows) == rows[2]
    assert best_row([{**_row(1, 0.0), "macro_f1": float("nan")}]) is None
