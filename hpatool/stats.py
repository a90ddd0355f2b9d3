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

from hpatool.errors import DataError, UsageError
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
    #: samples registered; ``samples`` counts those described (the usable ones, by default)
    registered: int = 0
    #: samples left out because their images cannot be used, by reason (``availability``)
    left_out: dict[str, int] = field(default_factory=dict)
    #: the line that says how many were left out and why; ``""`` when none was
    left_out_note: str = ""
    #: labelled samples registered (``labelled`` counts those described)
    registered_labelled: int = 0

    @property
    def has_labels(self) -> bool:
        return self.labelled > 0

    def share(self, cls: int) -> float:
        return self.class_counts[cls] / self.labelled if self.labelled else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "samples": self.samples,
            "labelled": self.labelled,
            "class_counts": list(self.class_counts),
            "labels_per_sample": dict(self.labels_per_sample),
            "registered": self.registered,
            "left_out": dict(sorted(self.left_out.items())),
        }


def dataset_stats(reg: Registry, name: str, *, all_samples: bool = False) -> DatasetStats:
    """The label statistics of the samples of ``name`` that can be used (see
    ``hpatool.availability``), or, with ``all_samples``, of every registered sample.

    Only a dataset with an image folder or download statuses is filtered: a dataset registered
    from a label CSV alone has no images to be missing, and all its rows are counted."""
    record = reg.dataset(name)
    registered = reg.samples(name)
    samples, left_out, note = registered, {}, ""
    if not all_samples:
        from hpatool.availability import usable_samples

        usable = usable_samples(reg, name, registered, labels_only=True)
        samples, left_out, note = usable.samples, usable.left_out, usable.summary()
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
        registered=len(registered),
        left_out=left_out,
        left_out_note=note,
        registered_labelled=record.labelled,
    )


def stats_report(
    reg: Registry,
    names: list[str],
    *,
    plot: Path | None = None,
    share: bool = False,
    all_samples: bool = False,
) -> list[DatasetStats]:
    """The statistics of datasets ``names``, in that order (of their usable samples unless
    ``all_samples``); with ``plot``, also the class counts (``share``: shares) of those with
    labels drawn into that picture (its name is checked before anything is counted; if none has
    labels, nothing is drawn and ``DataError`` says so)."""
    from hpatool.outputs import check_figure

    if share and plot is None:
        raise UsageError("--share changes the --plot picture; add --plot FILE")
    target = check_figure(plot, "--plot", reg) if plot is not None else None
    all_stats = [dataset_stats(reg, name, all_samples=all_samples) for name in names]
    if target is not None:
        labelled = [s for s in all_stats if s.has_labels]
        if not labelled:
            raise DataError(nothing_to_count(all_stats[0]))
        plot_class_counts(labelled, target, share=share)
    return all_stats


def nothing_to_count(stats: DatasetStats) -> str:
    """What ``stats`` says about a dataset without labels (a test set), or whose labelled
    samples were all left out (no image is there)."""
    if stats.registered_labelled and not stats.labelled:
        return (
            f"dataset {stats.name!r}: none of its {stats.registered_labelled:,} labelled samples "
            "has its images; pass --all-samples to count all registered labels"
        )
    return f"dataset {stats.name!r} has no labels (a test set): nothing to count"


def stats_json(stats: list[DatasetStats]) -> dict[str, Any]:
    """The ``stats --json`` document: ``{"classes": [...], "datasets": [...]}``."""
    return {"classes": list(CLASS_NAMES), "datasets": [s.to_json() for s in stats]}


def plot_class_counts(stats: list[DatasetStats], path: Path, *, share: bool = False) -> Path:
    """Grouped bar chart of the datasets' class counts or shares, with the rare line (see
    ``hpatool.plots``)."""
    from hpatool.plots import plot_class_counts as draw

    return draw(
        [(f"{s.name} ({s.labelled:,})", s.class_counts, s.labelled) for s in stats],
        path,
        share=share,
        rare_share=RARE_SHARE,
    )
