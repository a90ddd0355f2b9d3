"""Oversampling rare classes through a sampler (never by duplicating rows).

Each class ``c`` gets a multiplier ``m_c``; a sample's weight is the largest multiplier among its
labels; every epoch the sampler draws ``num_samples`` training samples with replacement, with
probability proportional to the weights (``torch.multinomial``), from a generator seeded with
``(seed, epoch)``. So a class's expected share of the draws is ``sum of its samples' weights /
sum of all weights``, and the draw is redone each epoch. With all multipliers 1 (``--oversample
none``) the epoch is a plain seeded permutation: every sample exactly once.

``--oversample`` specs:

- ``auto``: from the class frequencies of the training part, like the seed solution's 1x..7x:
  ``m_c = clip(round(log2(0.1 / share_c)), 1, 7)`` where ``share_c`` is the fraction of
  training samples carrying class ``c``. A class on 10% or more of the samples gets 1x, one on
  about 3.5% or less at least 2x, one on 0.08% or less 7x. On the Kaggle train.csv: Nucleoplasm,
  Cytosol 1x; Mitotic spindle, Lipid droplets 4x; Peroxisomes, Endosomes 6x; Lysosomes,
  Microtubule ends, Rods & rings 7x. Classes absent from the training part get 1x.
- ``none``: every multiplier 1.
- ``CLASS=FACTOR,...``: explicit multipliers (other classes 1x); CLASS is an index 0..27 or a
  class name (``27=7,Lysosomes=5``), FACTOR any positive number (below 1 draws a class less).

Under DDP every rank makes the same draw (same seed, same epoch) and takes the positions
``rank, rank + world_size, ...`` of it; the draw is padded to a multiple of the world size so that
every rank gets the same number of samples. Each drawn position also gets an augmentation seed
from ``SeedSequence([seed, epoch, 1])``, so crops and flips depend only on ``(seed, epoch,
position)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Sampler

from hpatool.errors import UsageError
from hpatool.labels import CLASS_NAMES, NUM_CLASSES

AUTO_REFERENCE_SHARE = 0.1
MAX_MULTIPLIER = 7.0


def auto_multipliers(targets: np.ndarray) -> np.ndarray:
    """``--oversample auto``: ``clip(round(log2(0.1 / share_c)), 1, 7)`` per class."""
    y = np.asarray(targets, dtype=np.float64)
    n = max(y.shape[0], 1)
    counts = y.sum(axis=0)
    out = np.ones(NUM_CLASSES, dtype=np.float64)
    present = counts > 0
    share = counts[present] / n
    out[present] = np.clip(np.round(np.log2(AUTO_REFERENCE_SHARE / share)), 1.0, MAX_MULTIPLIER)
    return out


def _class_index(token: str, whole: str) -> int:
    key = token.strip()
    if key.isdigit():
        value = int(key)
        if 0 <= value < NUM_CLASSES:
            return value
        raise UsageError(
            f"--oversample {whole!r}: class {key!r} is out of range; use 0..{NUM_CLASSES - 1} "
            "or a class name"
        )
    lowered = {name.lower(): i for i, name in enumerate(CLASS_NAMES)}
    if key.lower() in lowered:
        return lowered[key.lower()]
    raise UsageError(
        f"--oversample {whole!r}: unknown class {key!r}; use an index 0..{NUM_CLASSES - 1} or a "
        "class name such as 'Lysosomes'"
    )


def parse_oversample(spec: str) -> str | dict[int, float]:
    """``"auto"``, ``"none"`` or ``{class: factor}`` from an ``--oversample`` value."""
    text = (spec or "").strip()
    if text.lower() in ("auto", "none"):
        return text.lower()
    if not text:
        raise UsageError("--oversample is empty; use auto, none or CLASS=FACTOR,...")
    factors: dict[int, float] = {}
    for token in text.split(","):
        if not token.strip():
            continue
        name, sep, value = token.partition("=")
        if not sep:
            raise UsageError(
                f"--oversample {text!r}: token {token.strip()!r} is not CLASS=FACTOR; use auto, "
                "none or a list such as 27=7,10=5"
            )
        index = _class_index(name, text)
        try:
            factor = float(value)
        except ValueError:
            factor = float("nan")
        if not math.isfinite(factor) or factor <= 0:
            raise UsageError(
                f"--oversample {text!r}: factor {value.strip()!r} of {name.strip()!r} is not a "
                "positive number"
            )
        if index in factors:
            raise UsageError(f"--oversample {text!r}: class {name.strip()!r} is given twice")
        factors[index] = factor
    if not factors:
        raise UsageError("--oversample is empty; use auto, none or CLASS=FACTOR,...")
    return factors


def class_multipliers(spec: str | dict[int, float], targets: np.ndarray) -> np.ndarray:
    """Multiplier per class (28 floats) for a parsed or raw ``--oversample`` spec."""
    parsed = parse_oversample(spec) if isinstance(spec, str) else spec
    if parsed == "auto":
        return auto_multipliers(targets)
    out = np.ones(NUM_CLASSES, dtype=np.float64)
    if parsed == "none":
        return out
    assert isinstance(parsed, dict)
    for index, factor in parsed.items():
        out[index] = factor
    return out


def sample_weights(targets: np.ndarray, multipliers: np.ndarray) -> np.ndarray:
    """Per-sample weight: the largest multiplier among the sample's labels (1 if unlabelled)."""
    y = np.asarray(targets).astype(bool)
    m = np.asarray(multipliers, dtype=np.float64)
    weighted = np.where(y, m[None, :], 0.0)
    w = weighted.max(axis=1) if y.shape[1] else np.zeros(y.shape[0])
    return np.where(y.any(axis=1), w, 1.0)


def expected_class_share(targets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Expected fraction of drawn samples that carry each class, for weights ``weights``."""
    y = np.asarray(targets, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    return (w[:, None] * y).sum(axis=0) / w.sum()


def _seed_int(*key: int) -> int:
    """A 63-bit seed from a key of non-negative ints (stable across runs and platforms)."""
    state = np.random.SeedSequence([int(k) for k in key]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class WeightedEpochSampler(Sampler[tuple[int, int]]):
    """A seeded weighted draw per epoch, sliced per DDP rank; yields ``(index, aug_seed)``.

    ``set_epoch(e, start)`` must be called before each epoch (``start`` skips the first ``start``
    of this rank's positions, to resume in the middle of an epoch).
    """

    def __init__(
        self,
        weights: Sequence[float] | np.ndarray,
        num_samples: int | None = None,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 1 or w.size == 0:
            raise ValueError("weights must be a non-empty 1-D sequence")
        if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
            raise ValueError("weights must be finite, non-negative and not all zero")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        self.weights = torch.as_tensor(w, dtype=torch.float64)
        self.uniform = bool(np.all(w == w[0]))
        self.num_samples = int(num_samples) if num_samples is not None else int(w.size)
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.per_rank = math.ceil(self.num_samples / world_size)
        self.total = self.per_rank * world_size
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = int(epoch)
        self.start = max(0, int(start))

    def draw(self, epoch: int) -> np.ndarray:
        """The full draw of ``epoch`` (all ranks), ``total`` dataset indices."""
        gen = torch.Generator()
        gen.manual_seed(_seed_int(self.seed, epoch, 0))
        n = self.weights.numel()
        if self.uniform:
            reps = math.ceil(self.total / n)
            idx = torch.cat([torch.randperm(n, generator=gen) for _ in range(reps)])[: self.total]
        else:
            idx = torch.multinomial(self.weights, self.total, replacement=True, generator=gen)
        return idx.numpy().astype(np.int64)

    def aug_seeds(self, epoch: int) -> np.ndarray:
        """One augmentation seed per drawn position of ``epoch``."""
        seeds = np.random.SeedSequence([self.seed, int(epoch), 1]).generate_state(
            self.total, dtype=np.uint64
        )
        return (seeds >> np.uint64(1)).astype(np.int64)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        idx = self.draw(self.epoch)[self.rank :: self.world_size]
        aug = self.aug_seeds(self.epoch)[self.rank :: self.world_size]
        for i, s in zip(idx[self.start :].tolist(), aug[self.start :].tolist(), strict=True):
            yield int(i), int(s)

    def __len__(self) -> int:
        return max(0, self.per_rank - self.start)

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "start": self.start,
            "seed": self.seed,
            "num_samples": self.num_samples,
            "world_size": self.world_size,
        }


class ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...`` of ``0..n-1`` in order (validation under DDP)."""

    def __init__(self, n: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, n, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
