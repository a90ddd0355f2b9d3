"""The view of an image at scoring (its TTA): the one ``View`` type, from the options to
``thresholds.json``, a run's ``oof.csv`` and every scoring function, and its defaults, stated
here once (``DEFAULT_CROPS``, ``DEFAULT_AGG``, ``DEFAULT_TTA``; ``TrainConfig`` and the help
text read them from here).

A view is a ``crop x crop`` window size, ``crops`` (N), the aggregation of the views'
sigmoid probabilities (``max`` or ``mean``) and the TTA mode:

- ``crops``: N random windows; N = 1 is the centre crop;
- ``grid``: evenly spaced windows that together cover every pixel of the image:
  ``ceil(H / crop) x ceil(W / crop)`` of them (4 for 256 px windows of a 512 px image, 9 for
  224 px ones); N is not used;
- ``grid+flips`` (and ``flips``, the same): every grid window under the first N (at most 8)
  dihedral transforms (``hpatool.data.transforms.dihedral``: rotations by 90 degrees, each
  with or without a flip): ``windows x min(N, 8)`` views;
- ``crops+flips``: N random windows, window i under dihedral transform ``i mod 8`` (N = 1: the
  centre crop).

When the crop fills the image there is one window: ``crops`` and ``grid`` score it once, the
flip modes score the whole image under N (at most 8) transforms. The random windows of sample
``i`` come from ``numpy.random.default_rng([seed, i])``: they depend only on the seed and the
sample's position in its dataset. Light to import (numpy only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpatool.errors import UsageError

AGGREGATIONS = ("max", "mean")
#: The TTA modes (see the module docstring).
TTA_MODES = ("grid", "grid+flips", "crops", "crops+flips", "flips")
#: The dihedral transforms there are (8: four rotations, each with or without a flip).
MAX_FLIPS = 8

# The default view, stated once: measured with ``benchmarks/views.py`` (held-out out-of-fold
# macro F1 on 5 folds, 5 seeds; docs/benchmarks.md): the mean over the grid 0.2952, tied with
# the grid under 2 or 8 flips (0.2954, 0.2957) at a half or an eighth of their views, ahead of
# 8 random crops (mean 0.2924), the centre crop (0.2863) and every max (0.279-0.286).
DEFAULT_CROPS = 8
DEFAULT_AGG = "mean"
DEFAULT_TTA = "grid"

#: (height, width) of an image
Size = tuple[int, int]


def check_tta(tta: str) -> None:
    if tta not in TTA_MODES:
        raise UsageError(f"--tta {tta!r} is invalid; use {', '.join(TTA_MODES)}")


def crop_windows(
    index: int, height: int, width: int, crop: int, crops: int, seed: int
) -> list[tuple[int, int]]:
    """``crops`` random (top, left) corners for sample ``index``; one window if the crop fills
    the image."""
    if crop >= height and crop >= width:
        return [(0, 0)]
    rng = np.random.default_rng([seed, index])
    tops = rng.integers(0, height - crop + 1, size=crops)
    lefts = rng.integers(0, width - crop + 1, size=crops)
    return [(int(t), int(left)) for t, left in zip(tops, lefts, strict=True)]


def grid_starts(size: int, crop: int) -> list[int]:
    """Evenly spaced starts of ``crop`` windows along a side of ``size`` pixels that together
    cover it: ``ceil(size / crop)`` of them, the first at 0 and the last at ``size - crop``
    (one, at 0, when the crop is not smaller than the side)."""
    if crop >= size:
        return [0]
    n = math.ceil(size / crop)
    return [round(i * (size - crop) / (n - 1)) for i in range(n)]


def grid_windows(height: int, width: int, crop: int) -> list[tuple[int, int]]:
    """The (top, left) corners of the grid of ``crop`` windows covering the image, row by
    row."""
    return [(t, left) for t in grid_starts(height, crop) for left in grid_starts(width, crop)]


def view_windows(
    index: int, height: int, width: int, crop: int, crops: int, seed: int, tta: str = "crops"
) -> list[tuple[int, int, int]]:
    """The views of sample ``index`` as ``(top, left, k)``: a ``crop x crop`` window and the
    dihedral transform ``k`` (0 = as it is) to apply to it (see the module docstring)."""
    check_tta(tta)
    whole = crop >= height and crop >= width
    centre = ((height - crop) // 2, (width - crop) // 2) if not whole else (0, 0)
    flips = min(crops, MAX_FLIPS)
    if tta == "grid":
        return [(t, left, 0) for t, left in grid_windows(height, width, crop)]
    if tta in ("flips", "grid+flips"):
        return [(t, left, k) for t, left in grid_windows(height, width, crop) for k in range(flips)]
    if whole:
        return [(0, 0, 0)] if tta == "crops" else [(0, 0, k) for k in range(flips)]
    if crops == 1:
        return [(*centre, 0)]
    windows = crop_windows(index, height, width, crop, crops, seed)
    if tta == "crops":
        return [(t, left, 0) for t, left in windows]
    return [(t, left, i % MAX_FLIPS) for i, (t, left) in enumerate(windows)]


@dataclass(frozen=True)
class View:
    """How a model scores an image: window size, how many views, aggregation, TTA mode.

    The one view type: built from the options (``resolve_view``), stored in ``thresholds.json``
    (``to_json``), read back from a run folder (``from_json``) and given to every scoring
    function."""

    crop: int
    crops: int = DEFAULT_CROPS
    agg: str = DEFAULT_AGG
    tta: str = DEFAULT_TTA

    def check(self) -> View:
        """``self``, or a ``UsageError`` for a value no option allows."""
        check_tta(self.tta)
        if self.agg not in AGGREGATIONS:
            raise UsageError(f"--agg {self.agg!r} is invalid; use max or mean")
        if self.crops < 1:
            raise UsageError(f"--crops {self.crops} is invalid; use 1 (the centre crop) or more")
        return self

    def to_json(self) -> dict[str, Any]:
        return {"crop": self.crop, "crops": self.crops, "agg": self.agg, "tta": self.tta}

    @classmethod
    def from_json(cls, doc: Any, crop: int | None = None) -> View | None:
        """A stored view (``thresholds.json``'s ``view``) as a ``View``, its ``crop`` else
        ``crop``; ``None`` if it is not one."""
        if not isinstance(doc, dict):
            return None
        try:
            view = cls(
                int(doc["crop"] if doc.get("crop") is not None else crop),  # type: ignore[arg-type]
                int(doc["crops"]),
                str(doc["agg"]),
                str(doc.get("tta", "crops")),  # stored before the TTA modes: random crops
            )
            return view.check()
        except (KeyError, TypeError, ValueError, UsageError):
            return None

    def with_agg(self, agg: str) -> View:
        return View(self.crop, self.crops, agg, self.tta)

    def windows_of(self, index: int, size: Size, seed: int) -> list[tuple[int, int, int]]:
        """The ``(top, left, k)`` views of sample ``index`` of ``size`` (``view_windows``)."""
        return view_windows(index, size[0], size[1], self.crop, self.crops, seed, self.tta)

    def fills(self, size: Size) -> bool:
        """Whether one window is the whole image of ``size``."""
        return self.crop >= size[0] and self.crop >= size[1]

    def windows(self, size: Size) -> int:
        """How many views each image of ``size`` gets (what ``windows_of`` returns)."""
        h, w = size
        flips = min(self.crops, MAX_FLIPS)
        if self.tta == "grid":
            return len(grid_windows(h, w, self.crop))
        if self.tta in ("flips", "grid+flips"):
            return len(grid_windows(h, w, self.crop)) * flips
        if self.fills(size):
            return 1 if self.tta == "crops" else flips
        return 1 if self.crops == 1 else self.crops

    def text(self, size: Size) -> str:
        """How an image of ``size`` is scored, in words, as it really happens: ``max of 8
        crops of 256px``, ``the centre crop of 256px``, ``1 window of 512px (the whole
        image)``, ``max of 4 windows of 256px covering the 512x512 image``, ``max of 8
        flips/rotations of the whole 512px image``, ``mean of 4 flipped/rotated crops of
        256px``."""
        n, agg, crop = self.windows(size), self.agg, self.crop
        whole = self.fills(size)
        if n == 1:
            if whole:
                return f"1 window of {crop}px (the whole image)"
            return f"the centre crop of {crop}px"
        if whole and self.tta != "crops":
            return f"{agg} of {n} flips/rotations of the whole {crop}px image"
        image = f"the {size[1]}x{size[0]} image"
        if self.tta == "grid":
            return f"{agg} of {n} windows of {crop}px covering {image}"
        if self.tta in ("flips", "grid+flips"):
            grid = len(grid_windows(size[0], size[1], crop))
            return (
                f"{agg} of {grid} windows of {crop}px covering {image}, each under "
                f"{n // grid} flips/rotations ({n} views)"
            )
        if self.tta == "crops":
            return f"{agg} of {n} crops of {crop}px"
        return f"{agg} of {n} flipped/rotated crops of {crop}px"


def default_view(crop: int) -> View:
    """The default view for windows of ``crop``: what ``predict`` uses for a model that stores
    none (trained before views were stored) and a run's evaluation view by default."""
    return View(crop)


#: The view of a run that stores none: random crops, as ``predict`` was before views were stored.
LEGACY_VIEW = View(0, 8, "max", "crops")


def resolve_view(
    crop: int,
    crops: int | None,
    agg: str | None,
    tta: str | None,
    stored: View | None,
) -> View:
    """A model's view: each of ``crops``/``agg``/``tta`` as given, else the model's ``stored``
    one, else ``LEGACY_VIEW``'s (a run that stores no view was tuned on random crops); ``crop``
    is ``--crop-size`` or the run's training crop."""
    saved = stored if stored is not None else LEGACY_VIEW
    view = View(
        int(crop),
        int(crops if crops is not None else saved.crops),
        str(agg if agg is not None else saved.agg),
        str(tta if tta is not None else saved.tta),
    )
    return view.check()


def centre_view(crop: int, agg: str = DEFAULT_AGG) -> View:
    """The view of validation during training by default: one centre crop."""
    return View(crop, 1, agg, "crops")
