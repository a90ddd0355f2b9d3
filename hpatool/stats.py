"""Label statistics of registered datasets: class counts, labels per sample, label pairs, plots.

Plain Python counting over the registry's targets (a 75k-sample dataset takes milliseconds, and
no pandas import is paid on the way).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

from hpatool._io import save_figure
from hpatool.labels import CLASS_NAMES, NUM_CLASSES
from hpatool.registry import Registry

#: A class is highlighted as rare when it labels fewer than this share of the labelled samples.
RARE_SHARE = 0.01


@dataclass
class DatasetStats:
    name: str
    samples: int
    labelled: int
    class_counts: list[int]
    labels_per_sample: dict[str, int]
    pairs: Counter[tuple[int, int]] = field(default_factory=Counter)

    def share(self, cls: int) -> float:
        return self.class_counts[cls] / self.labelled if self.labelled else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "samples": self.samples,
            "labelled": self.labelled,
            "class_counts": list(self.class_counts),
            "labels_per_sample": dict(self.labels_per_sample),
        }


def dataset_stats(reg: Registry, name: str) -> DatasetStats:
    samples = reg.samples(name)
    counts = [0] * NUM_CLASSES
    per_sample: Counter[int] = Counter()
    pairs: Counter[tuple[int, int]] = Counter()
    labelled = 0
    for s in samples:
        if s.target is None:
            continue
        labelled += 1
        per_sample[len(s.target)] += 1
        for c in s.target:
            counts[c] += 1
        pairs.update(combinations(s.target, 2))  # targets are stored sorted
    return DatasetStats(
        name=name,
        samples=len(samples),
        labelled=labelled,
        class_counts=counts,
        labels_per_sample={str(k): per_sample[k] for k in sorted(per_sample)},
        pairs=pairs,
    )


def stats_json(stats: list[DatasetStats]) -> dict[str, Any]:
    """The ``stats --json`` document: ``{"classes": [...], "datasets": [...]}``."""
    return {"classes": list(CLASS_NAMES), "datasets": [s.to_json() for s in stats]}


def plot_class_counts(stats: list[DatasetStats], path: Path) -> Path:
    """Grouped bar chart of class counts, log axis, class names on the axis; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    n = len(stats)
    fig, ax = plt.subplots(figsize=(14, 6), constrained_layout=True)
    x = np.arange(NUM_CLASSES)
    width = 0.8 / max(n, 1)
    for i, s in enumerate(stats):
        # Log axis: plot zero counts as missing bars rather than failing on log(0).
        values = [c if c > 0 else np.nan for c in s.class_counts]
        ax.bar(x + (i - (n - 1) / 2) * width, values, width, label=f"{s.name} ({s.labelled:,})")
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels(
        [f"{i} {name}" for i, name in enumerate(CLASS_NAMES)], rotation=60, ha="right", fontsize=8
    )
    ax.set_ylabel("samples with the class (log scale)")
    ax.set_title("Class counts")
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path
