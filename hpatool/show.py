"""``show``: one sample's four stains side by side plus the usual colour composite."""

from __future__ import annotations

from pathlib import Path

from hpatool._io import figure_file, save_figure
from hpatool.imaging import composite, read_sample
from hpatool.labels import label_names
from hpatool.registry import Registry


def show_sample(reg: Registry, name: str, sample_id: str, out: Path) -> Path:
    """Draw red, green, blue, yellow and the composite of ``sample_id`` into ``out`` (PNG)."""
    out = figure_file(out, "--out")
    record = reg.dataset(name)
    sample = reg.sample(name, sample_id)
    arr = read_sample(record.image_root(), sample.id)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LinearSegmentedColormap

    def black_to(name: str, rgb: tuple[float, float, float]) -> LinearSegmentedColormap:
        return LinearSegmentedColormap.from_list(name, [(0.0, 0.0, 0.0), rgb])

    panels = [
        ("red: microtubules", arr[0], black_to("red", (1.0, 0.0, 0.0))),
        ("green: protein", arr[1], black_to("green", (0.0, 1.0, 0.0))),
        ("blue: nucleus", arr[2], black_to("blue", (0.2, 0.4, 1.0))),
        ("yellow: ER", arr[3], black_to("yellow", (1.0, 1.0, 0.0))),
    ]
    fig, axes = plt.subplots(1, 5, figsize=(20, 4.6), constrained_layout=True)
    for ax, (title, img, cmap) in zip(axes, panels, strict=False):
        ax.imshow(img, cmap=cmap, vmin=0, vmax=255)
        ax.set_title(title)
    axes[4].imshow(composite(arr))
    axes[4].set_title("composite (yellow = red + green)")
    for ax in axes:
        ax.set_axis_off()
    if sample.target is None:
        labels = "unlabelled"
    else:
        labels = ", ".join(
            f"{i} {n}" for i, n in zip(sample.target, label_names(sample.target), strict=True)
        )
    fig.suptitle(f"{name} / {sample.id}: {labels}")
    save_figure(fig, out, dpi=100)
    plt.close(fig)
    return out
