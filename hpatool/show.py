"""``show``: one sample's four stains side by side plus the usual colour composite."""

from __future__ import annotations

from pathlib import Path

from hpatool.imaging import composite, read_sample
from hpatool.labels import label_names
from hpatool.outputs import check_figure
from hpatool.plots import plot_sample
from hpatool.registry import Registry


def show_sample(reg: Registry, name: str, sample_id: str, out: Path) -> Path:
    """Draw red, green, blue, yellow and the composite of ``sample_id`` into ``out`` (PNG)."""
    out = check_figure(out, "--out", reg)
    record = reg.dataset(name)
    sample = reg.sample(name, sample_id)
    arr = read_sample(record.image_root(), sample.id)

    if sample.target is None:
        labels = "unlabelled"
    else:
        labels = ", ".join(
            f"{i} {n}" for i, n in zip(sample.target, label_names(sample.target), strict=True)
        )
    return plot_sample(arr, composite(arr), f"{name} / {sample.id}: {labels}", out)
