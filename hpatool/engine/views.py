"""The views of an image at scoring (its TTA), as ``predict``, ``evaluate`` and a run's
out-of-fold step use them: the random crop windows, the dihedral transforms, how many views
an image gets, their description in words (``windows_text``), and the view a run stored with
its thresholds (``View``, ``resolve_view``, ``stored_as_view``). See ``hpatool.engine.scoring``
for the modes; light to import (numpy only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hpatool.engine.config import AGGREGATIONS, TTA_MODES
from hpatool.errors import UsageError


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


#: The dihedral transforms there are (8: four rotations, each with or without a flip).
MAX_FLIPS = 8


def check_tta(tta: str) -> None:
    if tta not in TTA_MODES:
        raise UsageError(f"--tta {tta!r} is invalid; use {', '.join(TTA_MODES)}")


def view_windows(
    index: int, height: int, width: int, crop: int, crops: int, seed: int, tta: str = "crops"
) -> list[tuple[int, int, int]]:
    """The views of sample ``index`` as ``(top, left, k)``: a ``crop x crop`` window and the
    dihedral transform ``k`` (0 = as it is) to apply to it (see the module docstring)."""
    check_tta(tta)
    whole = crop >= height and crop >= width
    centre = ((height - crop) // 2, (width - crop) // 2) if not whole else (0, 0)
    if tta == "crops":
        if whole:
            return [(0, 0, 0)]
        if crops == 1:
            return [(*centre, 0)]
        return [(t, left, 0) for t, left in crop_windows(index, height, width, crop, crops, seed)]
    if tta == "flips" or whole or crops == 1:
        return [(*centre, k) for k in range(min(crops, MAX_FLIPS))]
    windows = crop_windows(index, height, width, crop, crops, seed)
    return [(t, left, i % MAX_FLIPS) for i, (t, left) in enumerate(windows)]


def n_views(crops: int, tta: str, whole_image: bool) -> int:
    """How many views each image gets (what ``view_windows`` returns)."""
    if tta == "crops":
        return 1 if whole_image else crops
    if tta == "flips" or whole_image or crops == 1:
        return min(crops, MAX_FLIPS)
    return crops


def windows_text(
    agg: str,
    crops: int,
    crop: int,
    windows: int,
    tta: str = "crops",
    whole_image: bool | None = None,
) -> str:
    """How images are scored, in words, as it really happens: ``max of 8 crops of 256px``,
    ``the centre crop of 256px``, ``1 window of 512px (the whole image)``, ``max of 8
    flips/rotations of the whole 512px image``, ``mean of 4 flipped/rotated crops of 256px``.
    ``windows`` is what ``n_views`` gave; ``whole_image`` None = ``windows == 1`` (the old
    meaning: one window is the whole image)."""
    whole = windows == 1 if whole_image is None else whole_image
    if windows == 1:
        return (
            f"1 window of {crop}px (the whole image)" if whole else f"the centre crop of {crop}px"
        )
    if tta == "crops":
        return f"{agg} of {windows} crops of {crop}px"
    if whole:
        return f"{agg} of {windows} flips/rotations of the whole {crop}px image"
    if tta == "flips" or crops == 1:
        return f"{agg} of {windows} flips/rotations of the centre crop of {crop}px"
    return f"{agg} of {windows} flipped/rotated crops of {crop}px"


@dataclass(frozen=True)
class View:
    """How a model scores an image: window size, how many views, aggregation, TTA mode."""

    crop: int
    crops: int
    agg: str
    tta: str

    def to_json(self) -> dict[str, Any]:
        return {"crop": self.crop, "crops": self.crops, "agg": self.agg, "tta": self.tta}

    def windows(self, whole_image: bool) -> int:
        return n_views(self.crops, self.tta, whole_image)

    def text(self, whole_image: bool) -> str:
        """``max of 8 crops of 256px``, ... (``windows_text``) for images the crop fills or
        not."""
        return windows_text(
            self.agg, self.crops, self.crop, self.windows(whole_image), self.tta, whole_image
        )


#: The view of a run that stores none (trained before views were stored): as ``predict`` was.
DEFAULT_VIEW = {"crops": 8, "agg": "max", "tta": "crops"}


def resolve_view(
    crop: int,
    crops: int | None,
    agg: str | None,
    tta: str | None,
    stored: dict[str, Any] | None,
) -> View:
    """A model's view: each of ``crops``/``agg``/``tta`` as given, else the model's ``stored``
    one, else ``DEFAULT_VIEW``; ``crop`` is ``--crop-size`` or the run's training crop."""
    saved = dict(DEFAULT_VIEW)
    if stored:
        for key in saved:
            if stored.get(key) is not None:
                saved[key] = stored[key]

    def pick(given: Any, key: str) -> Any:
        return given if given is not None else saved[key]

    view = View(int(crop), int(pick(crops, "crops")), str(pick(agg, "agg")), str(pick(tta, "tta")))
    check_tta(view.tta)
    if view.agg not in AGGREGATIONS:
        raise UsageError(f"--agg {view.agg!r} is invalid; use max or mean")
    return view


def stored_as_view(stored: dict[str, Any], crop: int) -> View | None:
    """A stored view (``thresholds.json``'s ``view``) as a ``View``; ``None`` if unusable."""
    try:
        return View(
            int(stored.get("crop", crop)),
            int(stored["crops"]),
            str(stored["agg"]),
            str(stored.get("tta", "crops")),
        )
    except (KeyError, TypeError, ValueError):
        return None
