"""Synthetic HPA-like samples with a learnable class signal: for demos, tests and benchmarks.

A sample is a field of cells drawn on the four stains like a real HPA image: blue nuclei
(soft-edged ellipses with chromatin texture), red microtubules (filaments radiating from the
nucleus to the cell edge), yellow endoplasmic reticulum (a reticular haze fading away from the
nucleus), and green, the protein of interest. The green channel carries the labels: every class
has its own pattern placed relative to each cell (a location such as nucleus, nuclear rim,
perinuclear zone, cytoplasm or cell edge, combined with a texture such as smooth, fine or coarse
dots, stripes of a class-specific period, filaments or rings), and a sample's green is the sum
of the patterns of its labels. Cells tile the whole field at random positions and orientations,
so any crop, rotation or flip of the image shows the signal.

Label sets follow the real Kaggle ``train.csv``: the number of labels per sample and the share
of samples carrying each class match its counts (embedded below, not read at run time).

Everything is deterministic for a seed, whatever the number of worker processes: ids and label
sets come from ``default_rng(seed)``, and sample ``i`` is drawn from its own generator
``SeedSequence(seed, spawn_key=(i,))``.
"""

from __future__ import annotations

import functools
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from hpatool._io import ProgressFn, write_text_atomic
from hpatool.convert.pool import bounded_map, worker_pool
from hpatool.errors import AlreadyExists, UsageError
from hpatool.ids import COLOURS, channel_path
from hpatool.imaging import save_png
from hpatool.labels import NUM_CLASSES, format_target
from hpatool.options import SynthConfig
from hpatool.outputs import check_output_dir
from hpatool.registry import Registry

#: Samples carrying each class 0..27 in the Kaggle 2018 ``train.csv`` (31,072 samples).
TRAIN_CLASS_COUNTS: tuple[int, ...] = (
    12885, 1254, 3621, 1561, 1858, 2513, 1008, 2822, 53, 45, 28, 1093, 688, 537,
    1066, 21, 530, 210, 902, 1482, 172, 3777, 802, 2965, 322, 8228, 328, 11,
)  # fmt: skip
#: Samples in that ``train.csv`` with 1, 2, 3, 4 and 5 labels.
TRAIN_LABELS_PER_SAMPLE: tuple[int, ...] = (15126, 12485, 3160, 299, 2)
TRAIN_SAMPLES = 31072

MIN_SIZE = 32
MAX_SIZE = 4096

_REF_SIZE = 512
_REF_NUCLEUS = 22.0  # mean nucleus semi-major axis in px at 512 x 512
_PITCH = 100.0 / 22.0  # distance between neighbouring cells, in nucleus radii


# --------------------------------------------------------------------------- label sets


def _inclusion(weights: np.ndarray, k_probs: np.ndarray, grid: int = 300) -> np.ndarray:
    """Share of samples that carry each class when ``k`` (drawn from ``k_probs``) distinct
    classes are drawn one by one with probabilities proportional to ``weights``.

    Drawing without replacement in proportion to ``w`` is taking the ``k`` smallest of
    independent ``E_j ~ Exp(w_j)``, so ``P(c drawn) = ∫ w_c e^(-w_c t) P(fewer than k of the
    others have E_j < t) dt``; the count of others below ``t`` is Poisson-binomial, tracked by a
    small dynamic programme, and the integral is taken on a log grid.
    """
    n = len(weights)
    kmax = len(k_probs)
    t = np.logspace(-5, 4, grid)
    below = -np.expm1(-weights[:, None] * t[None, :])  # P(E_j < t), shape (n, grid)
    counts = np.zeros((kmax, n, grid))
    counts[0] = 1.0
    for j in range(n):
        qj = np.broadcast_to(below[j], (n, grid)).copy()
        qj[j] = 0.0  # class c does not count against itself
        nxt = counts * (1.0 - qj)
        nxt[1:] += counts[:-1] * qj
        counts = nxt
    at_most = np.cumsum(counts, axis=0)  # P(at most m others below t), m = 0..kmax-1
    density = weights[:, None] * np.exp(-weights[:, None] * t[None, :]) * t[None, :]
    f = density[None] * at_most
    per_k = ((f[..., 1:] + f[..., :-1]) * 0.5 * np.diff(np.log(t))).sum(-1)
    per_k += -np.expm1(-weights * t[0])[None, :]  # the sliver below the grid
    result: np.ndarray = k_probs @ per_k
    return result


@functools.cache
def _class_weights() -> np.ndarray:
    """Draw weights whose without-replacement marginals match the real class shares (~70 ms)."""
    target = np.asarray(TRAIN_CLASS_COUNTS, dtype=np.float64) / TRAIN_SAMPLES
    k_probs = np.asarray(TRAIN_LABELS_PER_SAMPLE, dtype=np.float64)
    k_probs /= k_probs.sum()
    weights = target / target.sum()
    for _ in range(30):
        achieved = _inclusion(weights, k_probs)
        if np.max(np.abs(achieved / target - 1.0)) < 1e-4:
            break
        weights = weights * target / achieved
        weights /= weights.sum()
    weights.setflags(write=False)
    return weights


def sample_targets(n: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """``n`` label sets as skewed as the real ``train.csv``.

    The number of labels comes from the real labels-per-sample distribution; the classes are
    then drawn without replacement, weighted so that each class's share of samples matches
    its real share (Nucleoplasm ~41%, Cytosol ~26%, ..., Rods & rings ~0.04%).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    k_probs = np.asarray(TRAIN_LABELS_PER_SAMPLE, dtype=np.float64)
    ks = rng.choice(len(k_probs), size=n, p=k_probs / k_probs.sum()) + 1
    keys = np.log(_class_weights())[None, :] + rng.gumbel(size=(n, NUM_CLASSES))
    order = np.argsort(-keys, axis=1)  # Gumbel top-k == weighted draws without replacement
    return [tuple(sorted(int(c) for c in order[i, : ks[i]])) for i in range(n)]


# --------------------------------------------------------------------------- drawing helpers


def _smooth_noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Stationary smooth noise, roughly N(0, 1), with features about ``scale`` px across.

    White noise on a coarse grid, upsampled (bicubic) and cropped at a random offset.
    """
    if scale < 1.5:
        white: np.ndarray = rng.standard_normal((size, size), dtype=np.float32)
        return white
    step = math.ceil(scale)
    knots = size // step + 3
    coarse = rng.standard_normal((knots, knots), dtype=np.float32)
    big = Image.fromarray(coarse, mode="F").resize((knots * step, knots * step), Image.BICUBIC)
    oy, ox = (int(v) for v in rng.integers(0, step, size=2))
    field = np.asarray(big, dtype=np.float32)[
        step + oy : step + oy + size, step + ox : step + ox + size
    ]
    spread = float(field[::3, ::3].std())  # a subsample is plenty, and 9x cheaper
    out: np.ndarray = field * np.float32(1.0 / max(spread, 1e-6))
    return out


@functools.cache
def _kernel(sigma: float) -> tuple[int, np.ndarray]:
    """Radius and 1-D Gaussian (peak 1) for ``sigma`` px."""
    radius = max(1, math.ceil(3.0 * sigma))
    k = np.arange(-radius, radius + 1, dtype=np.float64)
    return radius, np.exp(-(k * k) / (2.0 * sigma * sigma))


def _splat(size: int, xs: np.ndarray, ys: np.ndarray, amp: np.ndarray, sigma: float) -> np.ndarray:
    """Sum of Gaussian spots (peak ``amp``, width ``sigma`` px) centred at ``(xs, ys)``.

    Spots sit on whole pixels. Few spots are stamped one by one (``bincount`` over their
    footprints); many are dropped as impulses and blurred with a separable Gaussian: the same
    sum, computed whichever way is cheaper.
    """
    sigma = max(0.6, round(float(sigma), 2))
    radius, g = _kernel(sigma)
    xi = np.rint(np.ravel(xs)).astype(np.int64)
    yi = np.rint(np.ravel(ys)).astype(np.int64)
    a = np.broadcast_to(amp, np.shape(xs)).ravel()
    keep = (xi >= -radius) & (xi < size + radius) & (yi >= -radius) & (yi < size + radius)
    xi, yi, a = xi[keep], yi[keep], a[keep]
    taps = 2 * radius + 1
    if len(xi) * taps <= size * size // 8:
        pad = 2 * radius
        width = size + 2 * pad
        offsets = (
            np.arange(-radius, radius + 1)[:, None] * width
            + np.arange(-radius, radius + 1)[None, :]
        ).ravel()
        ker = np.outer(g, g).ravel()
        centre = (yi + pad) * width + (xi + pad)
        flat = np.bincount(
            (centre[:, None] + offsets[None, :]).ravel(),
            weights=(a[:, None] * ker[None, :]).ravel(),
            minlength=width * width,
        )
        return flat.reshape(width, width)[pad : pad + size, pad : pad + size].astype(np.float32)
    width = size + 2 * radius
    flat = np.bincount((yi + radius) * width + (xi + radius), weights=a, minlength=width * width)
    canvas = flat.reshape(width, width).astype(np.float32)
    gf = g.astype(np.float32)
    rows = canvas[:, :size] * gf[0]
    for k in range(1, taps):
        rows += canvas[:, k : k + size] * gf[k]
    out = rows[:size] * gf[0]
    for k in range(1, taps):
        out += rows[k : k + size] * gf[k]
    return out


def _stroke(
    size: int, xs: np.ndarray, ys: np.ndarray, amp: np.ndarray | float, sigma: float
) -> np.ndarray:
    """Lines of width ``sigma`` through the points ``(paths, points)``, peak about ``amp``."""
    sigma = max(0.6, float(sigma))
    seg = np.hypot(np.diff(xs, axis=1), np.diff(ys, axis=1)).mean(axis=1)  # spacing per path
    per_point = np.minimum(1.0, seg / (sigma * math.sqrt(2.0 * math.pi)))
    weights = (np.broadcast_to(amp, (xs.shape[0],)) * per_point)[:, None]
    return _splat(size, xs, ys, np.broadcast_to(weights, xs.shape), sigma)


def _ramp(x: np.ndarray, width: float) -> np.ndarray:
    """0 below ``-width``, 1 above ``width``, linear between: a soft step."""
    out: np.ndarray = np.clip(0.5 + x * (0.5 / width), 0.0, 1.0)
    return out


# --------------------------------------------------------------------------- the cell field


class _Scene:
    """Cell layout and the per-pixel fields every stain is drawn from.

    Per pixel, for the cell it belongs to: ``rn`` (distance from the nucleus centre in nucleus
    radii, 1 on the nuclear edge), ``q`` (the same in cell radii, 1 on the cell edge), ``q2``
    (``q`` of the runner-up cell, for the boundaries between cells) and ``idx`` (the cell);
    from them ``nuc``, ``cell`` and ``cyto`` (soft masks) and ``depth`` (distance inside the
    cell from its edge, in cell radii).
    """

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size = size
        self.rng = rng
        self.unit = max(4.0, size / _REF_SIZE * _REF_NUCLEUS)  # mean nucleus radius, px
        self._layout()
        self._fields()

    # Cells: a jittered grid at a random angle and offset, nuclei of random shape.
    def _layout(self) -> None:
        rng, size, unit = self.rng, self.size, self.unit
        pitch = _PITCH * unit
        half = 0.75 * size + 2 * pitch
        steps = np.arange(-half, half + pitch, pitch)
        gx, gy = np.meshgrid(steps, steps)
        gx = gx + rng.uniform(-0.25, 0.25, gx.shape) * pitch
        gy = gy + rng.uniform(-0.25, 0.25, gy.shape) * pitch
        angle = rng.uniform(0.0, math.pi / 2)
        ca, sa = math.cos(angle), math.sin(angle)
        cx = size / 2 + gx.ravel() * ca - gy.ravel() * sa + rng.uniform(0, pitch)
        cy = size / 2 + gx.ravel() * sa + gy.ravel() * ca + rng.uniform(0, pitch)
        reach = 3.8 * unit  # beyond the largest cell radius
        inside = (cx > -reach) & (cx < size + reach) & (cy > -reach) & (cy < size + reach)
        cx, cy = cx[inside], cy[inside]
        n = len(cx)
        self.n = n
        self.cx, self.cy = cx, cy
        self.a = unit * rng.uniform(0.85, 1.2, n)  # nucleus semi-axes, px
        self.b = self.a * rng.uniform(0.68, 0.95, n)
        theta = rng.uniform(0.0, math.pi, n)
        self.ct, self.st = np.cos(theta), np.sin(theta)
        self.cf = rng.uniform(2.2, 2.7, n)  # cell radius in nucleus radii
        self.bright = rng.uniform(0.55, 1.0, (n, 3))  # per-cell stain strength: blue, red, yellow

    def to_px(
        self, cell: np.ndarray, u: np.ndarray, v: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Nucleus-frame coordinates (in nucleus radii) of ``cell`` to pixel ``(x, y)``."""
        if u.ndim == 2:
            cell = cell[:, None]
        dt = u.dtype
        ct, st = self.ct[cell].astype(dt), self.st[cell].astype(dt)
        au, bv = self.a[cell].astype(dt) * u, self.b[cell].astype(dt) * v
        x = self.cx[cell].astype(dt) + au * ct - bv * st
        y = self.cy[cell].astype(dt) + au * st + bv * ct
        return x, y

    def _fields(self) -> None:
        size = self.size
        big = np.float32(81.0)  # squared distances until the end
        q1 = np.full((size, size), big, dtype=np.float32)
        q2 = np.full((size, size), big, dtype=np.float32)
        idx = self.idx = np.zeros((size, size), dtype=np.int32)
        grid = np.arange(size, dtype=np.float32)
        # Ragged cell outlines: the cell radius varies by +-15% with smooth noise.
        jag = (1.0 / (1.0 + 0.15 * np.tanh(_smooth_noise(self.rng, size, 1.5 * self.unit)))) ** 2
        for i in range(self.n):
            reach = self.cf[i] * 1.22 * self.a[i]  # beyond the largest outline bulge
            x0, x1 = max(0, int(self.cx[i] - reach)), min(size, int(self.cx[i] + reach) + 1)
            y0, y1 = max(0, int(self.cy[i] - reach)), min(size, int(self.cy[i] + reach) + 1)
            if x0 >= x1 or y0 >= y1:
                continue
            dx = grid[x0:x1] - np.float32(self.cx[i])
            dy = grid[y0:y1] - np.float32(self.cy[i])
            ka, kb = np.float32(1.0 / self.a[i]), np.float32(1.0 / self.b[i])
            ct, st = np.float32(self.ct[i]), np.float32(self.st[i])
            u = (dx * (ct * ka))[None, :] + (dy * (st * ka))[:, None]
            v = (dy * (ct * kb))[:, None] - (dx * (st * kb))[None, :]
            win = (slice(y0, y1), slice(x0, x1))
            q = u * u
            q += v * v
            q *= jag[win]
            q *= np.float32(1.0 / self.cf[i] ** 2)  # squared cell-relative radius
            old = q1[win]
            np.copyto(idx[win], np.int32(i), where=q < old)
            np.minimum(q2[win], np.maximum(old, q), out=q2[win])
            np.minimum(old, q, out=old)
        q1, q2 = np.sqrt(q1), np.sqrt(q2)
        rn = q1 * np.sqrt(self.gather(self.cf**2) / jag)  # in nucleus radii
        self.q, self.q2, self.rn = q1, q2, rn
        unit = self.unit
        edge = max(0.025, 0.7 / (2.25 * unit))  # softness of the cell edge, in cell radii
        # Depth inside the cell: distance to its own outline or to the boundary with a neighbour.
        self.depth = np.minimum(1.0 - q1, 0.5 * (q2 - q1))
        self.nuc = _ramp(1.0 - rn, max(0.06, 0.8 / unit))
        self.cell = _ramp(self.depth, edge)
        self.cyto = self.cell * (1.0 - self.nuc)
        self.edge_width = max(0.035, 0.9 / (2.25 * unit))

    # Per-sample textures, shared by the stains that need them.
    @functools.cached_property
    def chromatin(self) -> np.ndarray:
        return _smooth_noise(self.rng, self.size, 0.25 * self.unit)

    @functools.cached_property
    def mesh(self) -> np.ndarray:
        """A reticular network: the zero-crossings of smooth noise."""
        n = _smooth_noise(self.rng, self.size, 0.3 * self.unit)
        out: np.ndarray = np.exp(-((n / 0.45) ** 2))
        return out

    @functools.cached_property
    def coords(self) -> tuple[np.ndarray, np.ndarray]:
        """Per pixel: offset from its cell's nucleus centre, px."""
        grid = np.arange(self.size, dtype=np.float32)
        dx = grid[None, :] - self.cx[self.idx].astype(np.float32)
        dy = grid[:, None] - self.cy[self.idx].astype(np.float32)
        return dx, dy

    def gather(self, per_cell: np.ndarray) -> np.ndarray:
        """A per-cell value at every pixel of that cell."""
        out: np.ndarray = np.take(per_cell.astype(np.float32), self.idx)
        return out

    def points(
        self, per_cell: int | tuple[int, int], r_lo: float | np.ndarray, r_hi: float | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Random points, area-uniform, in an annulus around each nucleus (radii in nucleus
        radii; scalars or one per cell). Returns ``(cell, x, y)``."""
        if isinstance(per_cell, tuple):
            counts = self.rng.integers(per_cell[0], per_cell[1] + 1, self.n)
        else:
            counts = np.full(self.n, per_cell)
        cell = np.repeat(np.arange(self.n), counts)
        lo = np.broadcast_to(r_lo, (self.n,))[cell]
        hi = np.broadcast_to(r_hi, (self.n,))[cell]
        r = np.sqrt(self.rng.uniform(lo * lo, hi * hi))
        phi = self.rng.uniform(0.0, 2 * math.pi, len(cell))
        x, y = self.to_px(cell, r * np.cos(phi), r * np.sin(phi))
        return cell, x, y

    def spots(
        self,
        per_cell: int | tuple[int, int],
        r_lo: float | np.ndarray,
        r_hi: float | np.ndarray,
        sigma: float,
        amp: tuple[float, float] = (1.0, 1.0),
    ) -> np.ndarray:
        cell, x, y = self.points(per_cell, r_lo, r_hi)
        a = self.rng.uniform(amp[0], amp[1], len(cell))
        return _splat(self.size, x, y, a, sigma * self.unit)

    def radial_paths(
        self,
        per_cell: int,
        r_lo: float | np.ndarray,
        r_hi: float | np.ndarray,
        bend: float,
        sigma: float,
        points: int,
        amp: tuple[float, float] = (0.6, 1.0),
    ) -> np.ndarray:
        """Filaments running outward from ``r_lo`` to ``r_hi`` (nucleus radii), gently bent."""
        cell = np.repeat(np.arange(self.n), per_cell)
        m = len(cell)
        t = np.linspace(0.0, 1.0, points, dtype=np.float32)[None, :]
        lo = np.broadcast_to(r_lo, (self.n,))[cell][:, None]
        hi = np.broadcast_to(r_hi, (self.n,))[cell][:, None]
        hi = hi * self.rng.uniform(0.8, 1.0, (m, 1))
        start = self.rng.uniform(0, 2 * math.pi, (m, 1)).astype(np.float32)
        phi = start + self.rng.normal(0, bend, (m, 1)).astype(np.float32) * t
        r = lo.astype(np.float32) + (hi - lo).astype(np.float32) * t
        x, y = self.to_px(cell, r * np.cos(phi), r * np.sin(phi))
        return _stroke(self.size, x, y, self.rng.uniform(amp[0], amp[1], m), sigma * self.unit)

    def segments(
        self,
        cell: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        length: float,
        sigma: float,
        direction: np.ndarray | None = None,
        bend: float = 0.0,
        points: int = 6,
    ) -> np.ndarray:
        """Short strokes centred at ``(x, y)``, ``length`` nucleus radii long."""
        m = len(cell)
        if direction is None:
            direction = self.rng.uniform(0, 2 * math.pi, m)
        t = np.linspace(-0.5, 0.5, points)[None, :]
        ang = direction[:, None] + self.rng.normal(0, bend, (m, 1)) * t
        step = length * self.unit
        xs = x[:, None] + step * t * np.cos(ang)
        ys = y[:, None] + step * t * np.sin(ang)
        return _stroke(self.size, xs, ys, self.rng.uniform(0.7, 1.0, m), sigma * self.unit)

    def rings(
        self,
        cell: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        radius: tuple[float, float],
        sigma: float,
        points: int = 16,
    ) -> np.ndarray:
        m = len(cell)
        rad = self.rng.uniform(radius[0], radius[1], (m, 1)) * self.unit
        ang = np.linspace(0, 2 * math.pi, points, endpoint=False)[None, :]
        xs = x[:, None] + rad * np.cos(ang)
        ys = y[:, None] + rad * np.sin(ang)
        return _stroke(self.size, xs, ys, 1.0, sigma * self.unit)

    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        """Per pixel: offset from its nucleus centre along and across a random axis per cell."""
        dx, dy = self.coords
        phi = self.rng.uniform(0, math.pi, self.n)
        c, s = self.gather(np.cos(phi)), self.gather(np.sin(phi))
        return dx * c + dy * s, dy * c - dx * s

    def stripes(self, across: np.ndarray, period: float, sharpness: float) -> np.ndarray:
        """Parallel lines ``period`` nucleus radii apart, running along the axis of ``axes()``."""
        phase = self.gather(self.rng.uniform(0, 2 * math.pi, self.n))
        wave = 0.5 + 0.5 * np.cos(across * np.float32(2 * math.pi / (period * self.unit)) + phase)
        out: np.ndarray = wave**sharpness
        return out

    def steps_for(self, length_radii: float, sigma: float) -> int:
        """Points for a path ``length_radii`` nucleus radii long, about a line width apart."""
        px = length_radii * self.unit * 1.2
        return max(4, math.ceil(px / max(1.0, sigma * self.unit)) + 1)


# --------------------------------------------------------------------------- the class patterns


def _nucleoplasm(s: _Scene) -> np.ndarray:
    return s.nuc * (0.8 + 0.12 * s.chromatin)


def _nuclear_membrane(s: _Scene) -> np.ndarray:
    width = max(0.07, 0.8 / s.unit)
    ring: np.ndarray = np.exp(-(((s.rn - 0.97) / width) ** 2))
    return ring


def _nucleoli(s: _Scene) -> np.ndarray:
    return s.spots((2, 4), 0.0, 0.5, 0.15) * s.nuc


def _fibrillar_centre(s: _Scene) -> np.ndarray:
    cell, x, y = s.points((2, 3), 0.0, 0.5)
    k = 5
    jitter = s.rng.normal(0.0, 0.1 * s.unit, (2, len(cell), k))
    xs, ys = x[:, None] + jitter[0], y[:, None] + jitter[1]
    return _splat(s.size, xs, ys, np.ones_like(xs), 0.045 * s.unit) * s.nuc


def _speckles(s: _Scene) -> np.ndarray:
    return (s.spots((14, 24), 0.0, 0.85, 0.075, (0.5, 1.0)) + 0.12) * s.nuc


def _nuclear_bodies(s: _Scene) -> np.ndarray:
    return s.spots((1, 5), 0.0, 0.8, 0.06) * s.nuc


def _er(s: _Scene) -> np.ndarray:
    fade = np.exp(-np.maximum(s.rn - 1.0, 0.0) / 0.9)
    return s.cyto * (0.3 + 0.7 * fade) * (0.25 + 0.75 * s.mesh)


def _golgi(s: _Scene) -> np.ndarray:
    per = 16
    cell = np.repeat(np.arange(s.n), per)
    centre = s.rng.uniform(0, 2 * math.pi, s.n)[cell]
    phi = centre + s.rng.normal(0.0, 0.45, len(cell))
    r = 1.15 + np.abs(s.rng.normal(0.0, 0.18, len(cell)))
    x, y = s.to_px(cell, r * np.cos(phi), r * np.sin(phi))
    return _splat(s.size, x, y, s.rng.uniform(0.5, 1.0, len(cell)), 0.08 * s.unit) * s.cyto


def _peroxisomes(s: _Scene) -> np.ndarray:
    return s.spots(50, 1.1, 0.92 * s.cf, 0.045) * s.cyto


def _endosomes(s: _Scene) -> np.ndarray:
    return s.spots(22, 1.1, 0.9 * s.cf, 0.085, (0.4, 1.0)) * s.cyto


def _lysosomes(s: _Scene) -> np.ndarray:
    return s.spots(12, 1.1, 1.7, 0.12, (0.6, 1.0)) * s.cyto


def _intermediate_filaments(s: _Scene) -> np.ndarray:
    """Wavy filaments running around the nucleus (tangential, a cage)."""
    per = 10
    cell = np.repeat(np.arange(s.n), per)
    m = len(cell)
    pts = s.steps_for(2.5 * 2.5, 0.045)
    t = np.linspace(0.0, 1.0, pts)[None, :]
    r0 = s.rng.uniform(1.25, 0.85 * s.cf[cell])[:, None]
    r = r0 + 0.12 * np.sin(
        2 * math.pi * s.rng.uniform(1.5, 3.0, (m, 1)) * t + s.rng.uniform(0, 2 * math.pi, (m, 1))
    )
    phi = s.rng.uniform(0, 2 * math.pi, (m, 1)) + s.rng.uniform(1.2, 2.5, (m, 1)) * t
    x, y = s.to_px(cell, r * np.cos(phi), r * np.sin(phi))
    return _stroke(s.size, x, y, 1.0, 0.045 * s.unit) * s.cyto


def _actin(s: _Scene) -> np.ndarray:
    """Parallel stress fibres across the cell."""
    _, across = s.axes()
    return s.cyto * (s.stripes(across, 0.42, 6.0) * 0.85 + 0.15)


def _focal_adhesions(s: _Scene) -> np.ndarray:
    cell, x, y = s.points(9, 0.72 * s.cf, 0.95 * s.cf)
    direction = np.arctan2(y - s.cy[cell], x - s.cx[cell])
    pts = s.steps_for(0.5, 0.07)
    return s.segments(cell, x, y, 0.5, 0.07, direction, points=pts) * s.cell


def _microtubules(s: _Scene) -> np.ndarray:
    pts = s.steps_for(2.6, 0.04)
    return s.radial_paths(22, 1.05, s.cf, 0.25, 0.04, pts) * s.cyto


def _microtubule_ends(s: _Scene) -> np.ndarray:
    cell, x, y = s.points(28, 0.8 * s.cf, 0.98 * s.cf)
    direction = np.arctan2(y - s.cy[cell], x - s.cx[cell])
    return s.segments(cell, x, y, 0.14, 0.05, direction, points=4) * s.cell


def _cytokinetic_bridge(s: _Scene) -> np.ndarray:
    """A bar from each cell towards its nearest neighbour, with a bright midbody."""
    dx = s.cx[None, :] - s.cx[:, None]
    dy = s.cy[None, :] - s.cy[:, None]
    dist = np.hypot(dx, dy)
    np.fill_diagonal(dist, np.inf)
    j = np.argmin(dist, axis=1)
    d = dist[np.arange(s.n), j]
    ux, uy = dx[np.arange(s.n), j] / d, dy[np.arange(s.n), j] / d
    start = 1.1 * s.a
    pts = s.steps_for(_PITCH * 0.5, 0.1)
    t = np.linspace(0.0, 1.0, pts)[None, :]
    along = start[:, None] + (0.5 * d - start)[:, None].clip(0) * t
    xs, ys = s.cx[:, None] + ux[:, None] * along, s.cy[:, None] + uy[:, None] * along
    bar = _stroke(s.size, xs, ys, 0.7, 0.1 * s.unit)
    mid = _splat(s.size, s.cx + ux * 0.5 * d, s.cy + uy * 0.5 * d, np.ones(s.n), 0.16 * s.unit)
    return bar + mid


def _spindle(s: _Scene) -> np.ndarray:
    """Fine fibres along an axis through the nucleus, in a spindle-shaped envelope."""
    along, across = s.axes()
    length = np.float32(0.75 * s.unit)
    taper = np.clip(1.0 - (along / length) ** 2, 0.0, 1.0)
    envelope = _ramp(np.float32(0.4 * s.unit) * taper - np.abs(across), 1.0)
    return s.nuc * envelope * (s.stripes(across, 0.22, 2.0) * 0.8 + 0.2)


def _mtoc(s: _Scene) -> np.ndarray:
    cell, x, y = s.points(1, 1.15, 1.35)
    core = _splat(s.size, x, y, np.ones(len(cell)), 0.12 * s.unit)
    halo = _splat(s.size, x, y, np.full(len(cell), 0.25), 0.45 * s.unit)
    return (core + halo) * s.cell


def _centrosome(s: _Scene) -> np.ndarray:
    cell, x, y = s.points(1, 1.15, 1.3)
    ang = s.rng.uniform(0, 2 * math.pi, len(cell))
    off = 0.14 * s.unit
    xs = np.stack([x + off * np.cos(ang), x - off * np.cos(ang)], axis=1)
    ys = np.stack([y + off * np.sin(ang), y - off * np.sin(ang)], axis=1)
    return _splat(s.size, xs, ys, np.ones_like(xs), 0.05 * s.unit) * s.cell


def _lipid_droplets(s: _Scene) -> np.ndarray:
    cell, x, y = s.points(7, 1.3, 0.85 * s.cf)
    return s.rings(cell, x, y, (0.1, 0.17), 0.045) * s.cyto


def _plasma_membrane(s: _Scene) -> np.ndarray:
    line: np.ndarray = np.exp(-((s.depth / s.edge_width) ** 2)) * (0.85 + 0.1 * s.chromatin)
    return line


def _cell_junctions(s: _Scene) -> np.ndarray:
    """Only where two cells touch, thicker and punctate."""
    contact = _ramp(1.0 - s.q2, 0.05)
    line = np.exp(-(((s.q2 - s.q) / (3.0 * s.edge_width)) ** 2))
    dots = _ramp(s.chromatin, 0.6)
    out: np.ndarray = contact * line * (0.25 + 0.75 * dots)
    return out


def _mitochondria(s: _Scene) -> np.ndarray:
    cell, x, y = s.points(30, 1.2, 0.9 * s.cf)
    pts = s.steps_for(0.4, 0.065)
    return s.segments(cell, x, y, 0.4, 0.065, bend=1.0, points=pts) * s.cyto


def _aggresome(s: _Scene) -> np.ndarray:
    per = 7
    cell = np.repeat(np.arange(s.n), per)
    phi = s.rng.uniform(0, 2 * math.pi, s.n)[cell] + s.rng.normal(0.0, 0.3, len(cell))
    r = 1.35 + s.rng.normal(0.0, 0.08, len(cell))
    x, y = s.to_px(cell, r * np.cos(phi), r * np.sin(phi))
    return np.minimum(_splat(s.size, x, y, np.full(len(cell), 0.6), 0.15 * s.unit), 1.0) * s.cell


def _cytosol(s: _Scene) -> np.ndarray:
    return s.cyto * (0.8 + 0.1 * s.chromatin)


def _cytoplasmic_bodies(s: _Scene) -> np.ndarray:
    return s.spots((1, 3), 1.6, 0.85 * s.cf, 0.15) * s.cyto


def _rods_and_rings(s: _Scene) -> np.ndarray:
    cell, x, y = s.points(1, 1.4, 0.8 * s.cf)
    ring = s.rng.random(len(cell)) < 0.5
    rods = s.segments(cell[~ring], x[~ring], y[~ring], 0.9, 0.06, points=s.steps_for(0.9, 0.06))
    rings = s.rings(cell[ring], x[ring], y[ring], (0.2, 0.26), 0.06, points=24)
    return (rods + rings) * s.cell


_PATTERNS: tuple[Callable[[_Scene], np.ndarray], ...] = (
    _nucleoplasm, _nuclear_membrane, _nucleoli, _fibrillar_centre, _speckles, _nuclear_bodies,
    _er, _golgi, _peroxisomes, _endosomes, _lysosomes, _intermediate_filaments, _actin,
    _focal_adhesions, _microtubules, _microtubule_ends, _cytokinetic_bridge, _spindle, _mtoc,
    _centrosome, _lipid_droplets, _plasma_membrane, _cell_junctions, _mitochondria, _aggresome,
    _cytosol, _cytoplasmic_bodies, _rods_and_rings,
)  # fmt: skip
assert len(_PATTERNS) == NUM_CLASSES


def _finish(img: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Add shot and read noise (``noise`` has unit variance), round and clip to uint8."""
    img = img + noise * (1.0 + 0.06 * img)
    out: np.ndarray = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out


def generate_sample(labels: Sequence[int], size: int, rng: np.random.Generator) -> np.ndarray:
    """One synthetic sample: a ``(4, size, size)`` uint8 array, channel order R, G, B, Y.

    ``labels`` are class indices 0..27 (an empty sequence gives a green of background only).
    """
    size = int(size)
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be {MIN_SIZE}..{MAX_SIZE}, not {size}")
    classes = sorted(set(int(c) for c in labels))
    for c in classes:
        if not 0 <= c < NUM_CLASSES:
            raise ValueError(f"class index {c} is out of range 0..27")
    s = _Scene(size, rng)
    blue = 6.0 + 205.0 * s.gather(s.bright[:, 0]) * s.nuc * (0.82 + 0.12 * s.chromatin)

    red_lines = s.radial_paths(24, 1.0, s.cf, 0.3, 0.045, s.steps_for(2.6, 0.045), (0.35, 0.8))
    red = 5.0 + 150.0 * s.gather(s.bright[:, 1]) * s.cell * (0.2 + np.minimum(red_lines, 1.0) * 0.8)

    fade = np.exp(-np.maximum(s.rn - 1.0, 0.0) / 1.1)
    er = s.cell * (1.0 - 0.7 * s.nuc) * (0.25 + 0.75 * fade) * (0.7 + 0.3 * s.mesh)
    yellow = 5.0 + 140.0 * s.gather(s.bright[:, 2]) * er

    signal = np.zeros((size, size), dtype=np.float32)
    for c in classes:
        pattern = np.minimum(_PATTERNS[c](s), 1.2)
        signal += np.float32(rng.uniform(140.0, 220.0)) * pattern
    # Overlapping labels add up but saturate softly, so each stays visible on top of the others.
    green = 3.0 + 245.0 * np.tanh(signal * np.float32(1.0 / 245.0))

    # Triangular noise of unit variance from bytes: as good as Gaussian here, 4x cheaper.
    pairs = rng.integers(0, 256, (2, 4, size, size), dtype=np.uint8)
    noise = (pairs[0].astype(np.float32) - pairs[1]) * np.float32(1.0 / 104.5)
    channels = [_finish(ch, noise[i]) for i, ch in enumerate((red, green, blue, yellow))]
    return np.stack(channels)


# --------------------------------------------------------------------------- the dataset


@dataclass(frozen=True)
class SynthResult:
    out_dir: Path
    labels_csv: Path  # out_dir / "labels.csv"
    ids: list[str]
    targets: list[tuple[int, ...]]


def _sample_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def _write_sample(task: tuple[Path, str, tuple[int, ...], int, int, int]) -> None:
    out_dir, sample_id, labels, size, seed, index = task
    sample = generate_sample(labels, size, _sample_rng(seed, index))
    for channel, colour in zip(sample, COLOURS, strict=True):
        save_png(channel, channel_path(out_dir, sample_id, colour), compress_level=1)


def synth_dataset(
    out_dir: Path,
    samples: int = SynthConfig.samples,
    size: int = SynthConfig.size,
    seed: int = SynthConfig.seed,
    progress: ProgressFn | None = None,
    workers: int = SynthConfig.workers,
    *,
    registry: Registry | None = None,
) -> SynthResult:
    """Write ``samples`` synthetic samples (four PNGs each) and a ``labels.csv`` to ``out_dir``.

    Same ``(samples, size, seed)``, byte-identical files, for any ``workers``. ``labels.csv``
    (``Id,Target``) is written last, so its presence means the dataset is complete. With a
    ``registry``, a folder whose files it must keep (its home, a registered dataset's images
    or label CSV) is refused first (``outputs.check_output_dir``).
    """
    if samples < 1:
        raise UsageError(f"--samples must be at least 1, not {samples}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise UsageError(f"--size must be between {MIN_SIZE} and {MAX_SIZE} pixels, not {size}")
    if seed < 0:
        raise UsageError(f"--seed must be a non-negative integer, not {seed}")
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, not {workers}")
    out_dir = Path(out_dir)
    labels_csv = out_dir / "labels.csv"
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir} is a file, not a folder; choose an empty folder for the data")
    check_output_dir(out_dir, "OUT_DIR", registry, writes=("labels.csv",))
    if labels_csv.exists():
        raise AlreadyExists(
            f"{out_dir} already holds a dataset ({labels_csv.name}); choose an empty folder "
            "so that it is not overwritten"
        )
    out_dir.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(seed)
    ids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(samples)]
    targets = sample_targets(samples, rng)
    tasks = [(out_dir, ids[i], targets[i], size, seed, i) for i in range(samples)]

    done = 0
    # Spawned, not forked: safe whatever threads the parent runs (torch, a DataLoader).
    died = "a synth process died (out of memory?); rerun, perhaps with fewer --workers"
    with worker_pool(workers, samples, start_method="spawn", died=died) as pool:
        jobs = ((i, (task,)) for i, task in enumerate(tasks))
        for _ in bounded_map(pool, _write_sample, jobs, max_in_flight=4 * workers):
            done += 1
            if progress is not None:
                progress(done, samples)

    lines = ["Id,Target", *(f"{i},{format_target(t)}" for i, t in zip(ids, targets, strict=True))]
    write_text_atomic(labels_csv, "\n".join(lines) + "\n")
    return SynthResult(out_dir=out_dir, labels_csv=labels_csv, ids=ids, targets=targets)
