"""``evaluate --plot``'s figure: F1, precision and recall for both aggregations, support under
each class, and a class with no positives marked as such rather than drawn as F1 = 0."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from hpatool import run_plots
from hpatool.labels import NUM_CLASSES


def test_no_positives_is_marked_not_drawn_as_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    support = [0 if c in (3, 27) else 5 + c for c in range(NUM_CLASSES)]
    scores_max = [(0.5, 0.4, 0.7)] * NUM_CLASSES
    scores_mean = [(0.0, 0.0, 0.0)] * NUM_CLASSES  # a real 0: drawn, as a bar of height 0
    figures: list[Any] = []
    save = run_plots.save_figure

    def keep(fig: Any, path: Path, **kwargs: Any) -> Path:
        figures.append(fig)
        return save(fig, path, **kwargs)

    monkeypatch.setattr(run_plots, "save_figure", keep)
    path = run_plots.plot_evaluation(
        [("max: macro F1 0.464", scores_max), ("mean: macro F1 0.000", scores_mean)],
        support,
        "syn fold 0",
        tmp_path / "eval.png",
    )
    with Image.open(path) as img:
        assert img.format == "PNG"
    (fig,) = figures
    f1, precision, recall = fig.axes
    assert [ax.get_ylabel() for ax in fig.axes] == ["F1", "precision", "recall"]
    marks = [t for t in f1.texts if t.get_text() == "no positives"]
    assert sorted(round(t.get_position()[0]) for t in marks) == [3, 27]
    assert not [t for t in precision.texts + recall.texts if t.get_text() == "no positives"]
    for ax, k in ((f1, 0), (precision, 1), (recall, 2)):
        bars = ax.patches[: 2 * NUM_CLASSES]  # the bars; the shaded spans come after them
        heights = [b.get_height() for b in bars]
        for c in range(NUM_CLASSES):
            if support[c] == 0:
                assert math.isnan(heights[c]) and math.isnan(heights[NUM_CLASSES + c])
            else:
                assert heights[c] == scores_max[c][k] and heights[NUM_CLASSES + c] == 0.0
    legend = [t.get_text() for t in f1.get_legend().get_texts()]
    assert legend == ["max: macro F1 0.464", "mean: macro F1 0.000"]
    ticks = [t.get_text() for t in recall.get_xticklabels()]
    assert ticks[0] == "0 Nucleoplasm (5)" and ticks[3] == "3 Nucleoli fibrillar center (0)"
