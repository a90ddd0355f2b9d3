"""Scoring images with test-time augmentation (TTA): a dataset of each image's views
(``hpatool.engine.views`` says which windows and transforms), the batched scoring loop,
aggregation over the views, and thresholds -> labels.

How an image is scored is its *view* (``hpatool.engine.views.View``: the window size, the
number of views, ``max`` or ``mean`` aggregation of the sigmoid probabilities and the TTA mode;
the modes are described there). All of an image's views go through the model in one batched
forward pass, in the dtype the model was trained and validated in (``scoring_dtype``: bf16
where the run used bf16, float32 with ``--no-amp`` or on the CPU); a probability that is not
finite is an error naming the model and the sample, never a silent "no label". The random
windows of sample ``i`` depend only on the seed and the sample's position in the dataset: the
same command gives the same file, and a ``torchrun`` run gives the same file as one process.
Under ``torchrun`` the images are cut into batches of ``batch_size`` in dataset order and rank
``r`` scores batches ``r, r + world, ...``, so every batch has the same composition whatever
the number of processes (and so the same floating-point results).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hpatool._io import ProgressFn
from hpatool.engine.metrics import apply_thresholds
from hpatool.engine.views import AGGREGATIONS, View
from hpatool.errors import DataError, UsageError, WorkFailed

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass(frozen=True)
class ScoreItem:
    """One image to score: its position in the dataset, folder and id."""

    index: int
    root: Path
    id: str
    cache: Path | None = None  # its decoded array (``hpatool.data.cache``), when one is used


#: Why a sample whose four files are there is left out before scoring: a header that cannot be
#: read (not an image, a truncated header, over the pixel limit, channels of different sizes).
UNREADABLE = "with an unreadable image file"


def too_small(crop: int) -> str:
    """Why a sample smaller than the crop is left out before scoring."""
    return f"smaller than the {crop}px crop"


def sample_size(root: Path, sample_id: str) -> tuple[int, int]:
    """``(height, width)`` of a sample, from the headers of its four channel files (nothing is
    decoded: about 0.2 ms a file); a ``DataError`` naming the file that cannot be opened, or
    the channels' sizes when they differ."""
    from hpatool.ids import COLOURS, channel_path
    from hpatool.imaging import open_image

    sizes: list[tuple[int, int]] = []
    for colour in COLOURS:
        path = channel_path(root, sample_id, colour)
        try:
            with open_image(path) as img:
                width, height = img.size
        except DataError:
            raise
        except FileNotFoundError:
            raise DataError(f"{path}: missing channel file") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise DataError(f"{path}: cannot decode image ({exc})") from None
        sizes.append((height, width))
    if len(set(sizes)) > 1:
        shown = ", ".join(f"{c} {w}x{h}" for c, (h, w) in zip(COLOURS, sizes, strict=True))
        raise DataError(f"sample {sample_id!r}: its channels differ in size ({shown})")
    return sizes[0]


@dataclass
class CheckedImages:
    """The images that can be scored, after reading every header, and the crop to score them
    with; the others by reason, and each one's error (by dataset position)."""

    items: list[ScoreItem]
    crop: int
    whole_image: bool  # the crop fills the first image: each image is scored once
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> count
    errors: dict[int, str] = field(default_factory=dict)  # position -> why it was left out
    first_size: tuple[int, int] | None = None  # (height, width) of the first readable image

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the first readable image (the crop's, if unknown)."""
        return self.first_size if self.first_size is not None else (self.crop, self.crop)

    def fills(self, crop: int) -> bool:
        """Whether a ``crop`` window is the whole (first) image."""
        if self.first_size is None:
            return self.whole_image
        return crop >= self.first_size[0] and crop >= self.first_size[1]


def check_images(
    items: Sequence[ScoreItem],
    crop_size: int | None,
    trained_crop: int,
    dataset: str,
    sizes: dict[str, tuple[int, int]] | None = None,
) -> CheckedImages:
    """Read the headers of every image before any scoring: the crop (``--crop-size``, else the
    run's training crop) must fit the first readable image (a ``UsageError`` otherwise, and
    then whether it is the whole image); an image whose header cannot be read, or that is
    smaller than the crop, is left out with its reason (``UNREADABLE``, ``too_small``). None
    readable is a ``DataError``. ``sizes`` (a decoded cache's, by id) spare reading headers."""
    crop = crop_size if crop_size is not None else trained_crop
    what = f"--crop-size {crop}" if crop_size is not None else f"the run's training crop {crop}"
    if crop < 8:
        raise UsageError(f"{what} is too small; use --crop-size 8 or more")
    kept: list[ScoreItem] = []
    errors: dict[int, str] = {}
    left: dict[str, int] = {}
    first: tuple[int, int] | None = None
    for t in items:
        try:
            h, w = sizes[t.id] if sizes and t.id in sizes else sample_size(t.root, t.id)
        except DataError as exc:
            errors[t.index] = str(exc)
            left[UNREADABLE] = left.get(UNREADABLE, 0) + 1
            continue
        if first is None:
            first = (h, w)
            if crop > min(h, w):
                raise UsageError(
                    f"{what} is larger than the {w}x{h} images of dataset {dataset!r} (sample "
                    f"{t.id!r}); use --crop-size {min(h, w)} or less (equal to the image size "
                    "means the whole image)"
                )
        if crop > min(h, w):
            errors[t.index] = f"sample {t.id!r} is {w}x{h}, {too_small(crop)}"
            left[too_small(crop)] = left.get(too_small(crop), 0) + 1
            continue
        kept.append(t)
    if first is None:
        example = next(iter(errors.values()), "no images")
        raise DataError(
            f"none of the {len(items)} images of dataset {dataset!r} can be read "
            f"(first: {example}); run 'hpatool datasets verify {dataset}'"
        )
    whole = crop >= first[0] and crop >= first[1]
    return CheckedImages(kept, crop, whole, left, errors, first)


class CropDataset:
    """``(4, H, W)`` samples cut into their TTA views: item ``i`` is ``(views, 4, c, c)``
    uint8 (normalised on the device by ``score``'s forward pass).

    A sample that cannot be read comes back as ``None`` plus the error text, so one bad file
    doesn't stop the others (the caller decides whether to stop).
    """

    def __init__(self, items: Sequence[ScoreItem], view: View, seed: int) -> None:
        self.items = list(items)
        self.view = view.check()
        self.crop = view.crop
        self.seed = seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        import torch

        from hpatool.imaging import read_sample

        t = self.items[i]
        try:
            if t.cache is not None:
                from hpatool.data.cache import read_cached

                img = read_cached(t.cache, t.id)  # a memory map: each view reads its window
            else:
                img = read_sample(t.root, t.id)
        except DataError as exc:
            return t.index, None, str(exc)
        _, h, w = img.shape
        if self.crop > min(h, w):
            return t.index, None, f"image is {w}x{h}, smaller than the {self.crop} crop"
        return t.index, torch.from_numpy(cut_views(img, self.view, t.index, self.seed)), None


def cut_views(img: np.ndarray, view: View, index: int, seed: int) -> np.ndarray:
    """Sample ``index``'s ``(4, H, W)`` uint8 image cut into ``view``'s windows (each under
    its flip/rotation): ``(views, 4, crop, crop)`` uint8, what ``score`` feeds the model."""
    from hpatool.data.transforms import dihedral

    _, h, w = img.shape
    c = view.crop
    views = [
        dihedral(img[:, top : top + c, left : left + c], k)
        if k
        else img[:, top : top + c, left : left + c]
        for top, left, k in view.windows_of(index, (h, w), seed)
    ]
    return np.stack([np.ascontiguousarray(x) for x in views])


def _collate(
    batch: list[tuple[int, torch.Tensor | None, str | None]],
) -> list[tuple[int, torch.Tensor | None, str | None]]:
    return batch


@dataclass
class Scores:
    """Aggregated probabilities by dataset position, and the samples that failed; with
    ``score(..., both=True)`` also the same crops aggregated the other way (``other``)."""

    probs: dict[int, np.ndarray] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)
    other: dict[int, np.ndarray] = field(default_factory=dict)

    def update(self, other: Scores) -> None:
        self.probs.update(other.probs)
        self.failures.update(other.failures)
        self.other.update(other.other)


def other_agg(agg: str) -> str:
    """The aggregation that is not ``agg``: ``max`` <-> ``mean``."""
    return "mean" if agg == "max" else "max"


def aggregate(crop_probs: torch.Tensor, agg: str) -> np.ndarray:
    """One image's probabilities from its crops' ``(n_crops, C)``: their ``max`` or ``mean``."""
    if agg not in AGGREGATIONS:
        raise UsageError(f"--agg {agg!r} is invalid; use max or mean")
    combined = crop_probs.max(dim=0).values if agg == "max" else crop_probs.mean(dim=0)
    return combined.numpy().astype(np.float64)


def rank_share(n: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """The positions rank ``rank`` scores: batches ``rank, rank + world_size, ...`` of the
    ``n`` images cut into batches of ``batch_size`` in order."""
    batches = [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]
    return [i for b in batches[rank::world_size] for i in b]


def score(
    model: nn.Module,
    items: Sequence[ScoreItem],
    view: View,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int,
    workers: int,
    device: torch.device,
    seed: int,
    strict: bool = False,
    rank: int = 0,
    world_size: int = 1,
    progress: ProgressFn | None = None,
    both: bool = False,
    amp_dtype: torch.dtype | None = None,
    model_name: str = "the model",
) -> Scores:
    """Score this rank's share of ``items`` with ``view`` (see the module docstring); returns
    local scores. An unreadable image is a failure in the result, or, with ``strict``, a
    ``DataError``. With ``both``, the views' probabilities are aggregated the other way too
    (free: the same forward pass). ``amp_dtype``: the autocast dtype (``scoring_dtype``; None
    = float32). A non-finite probability is a ``WorkFailed`` naming ``model_name`` and the
    sample."""
    import torch
    from torch.utils.data import DataLoader, Subset

    from hpatool.data.samples import loader_workers

    view.check()
    mine = rank_share(len(items), batch_size, rank, world_size)
    loader: DataLoader[Any] = DataLoader(
        Subset(CropDataset(items, view, seed), mine),  # type: ignore[arg-type]
        batch_size=batch_size,
        shuffle=False,
        num_workers=loader_workers(workers),
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    by_index = {t.index: t for t in items}
    out = Scores()
    done = 0
    if progress:
        progress(0, len(mine))  # the bar shows the total from the start
    with torch.inference_mode():
        for batch in loader:
            for idx, x, error in batch:
                if x is None:
                    if strict:
                        raise DataError(error or "unreadable image")
                    out.failures[idx] = error or "unreadable"
            good = [(idx, x) for idx, x, _ in batch if x is not None]
            if good:
                probs = _forward(model, [x for _, x in good], device, amp_dtype, mean, std)
                for (idx, _), part in zip(good, probs, strict=True):
                    check_finite(part, model_name, by_index[idx])
                    out.probs[idx] = aggregate(part, view.agg)
                    if both:
                        out.other[idx] = aggregate(part, other_agg(view.agg))
            done += len(batch)
            if progress:
                progress(done, len(mine))
    return out


def scoring_dtype(amp: Any, device: torch.device) -> torch.dtype | None:
    """The autocast dtype to score with on ``device``: the dtype the run trained and validated
    in. ``amp`` is what its ``config.json`` says (``"amp_dtype"``: ``"bfloat16"``,
    ``"float16"``, or ``None`` for float32; a run that records none: float16 on CUDA, as
    autocast's default was). float16 is not used on the CPU (autocast there is bf16 only):
    float32 instead. ``None``: no autocast (float32)."""
    import torch

    names = {"bfloat16": torch.bfloat16, "float16": torch.float16}
    dtype = names.get(str(amp)) if amp is not None else None
    if device.type == "cuda":
        if dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
            return torch.float16
        return dtype
    return dtype if dtype is torch.bfloat16 else None


def check_finite(probs: torch.Tensor, model_name: str, item: ScoreItem) -> None:
    """A ``WorkFailed`` naming the model and the sample when a probability is not finite."""
    import torch

    if bool(torch.isfinite(probs).all()):
        return
    raise WorkFailed(
        f"{model_name} gave non-finite probabilities (NaN or inf) for sample {item.id!r}; the "
        "model's weights or this image are broken (a run that diverged: train it again, "
        "with a lower --lr or --no-amp)"
    )


def _forward(
    model: nn.Module,
    stacks: list[torch.Tensor],
    device: torch.device,
    amp_dtype: Any,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Any:
    """Sigmoid probabilities of each image's crop stack, from one forward pass of them all;
    uint8 stacks are normalised on the device (``transforms.normalize``)."""
    import torch

    from hpatool.data.transforms import HPA_MEAN, HPA_STD, normalize

    inputs = torch.cat(stacks).to(device, non_blocking=True)
    inputs = normalize(inputs, mean or HPA_MEAN, std or HPA_STD)
    inputs = inputs.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = model(inputs)
    probs = torch.sigmoid(logits.float()).cpu()
    return torch.split(probs, [x.shape[0] for x in stacks])


def decide_labels(probs: np.ndarray, thresholds: np.ndarray, min_labels: int) -> list[int]:
    """Classes at or above their threshold; topped up with the most probable to ``min_labels``."""
    chosen = set(np.flatnonzero(apply_thresholds(probs, thresholds)).tolist())
    if len(chosen) < min_labels:
        for c in np.argsort(-probs, kind="stable"):
            if len(chosen) >= min_labels:
                break
            chosen.add(int(c))
    return sorted(chosen)
