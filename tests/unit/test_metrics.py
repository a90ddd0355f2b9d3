"""Macro F1, per-class thresholds, the constant baseline, and checkpoint files."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, precision_recall_fscore_support

from hpatool.engine.metrics import (
    SHRINK_POSITIVES,
    THRESHOLD_GRID,
    apply_thresholds,
    constant_baseline_macro_f1,
    f1_per_class,
    macro_f1,
    per_class_report,
    tune_thresholds,
)
from hpatool.engine.models.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from hpatool.errors import DataError, NotFound


def _data(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 28)) < np.geomspace(0.5, 0.005, 28)).astype(np.uint8)
    y[:, 20] = 0  # a class without positives
    probs = np.clip(0.35 * y + rng.random((n, 28)) * 0.7, 0, 1)
    return y, probs


def test_macro_f1_matches_sklearn() -> None:
    y, probs = _data()
    pred = apply_thresholds(probs, 0.5)
    expected = f1_score(y, pred, average="macro", zero_division=0)
    assert macro_f1(y, pred) == pytest.approx(expected)
    per_class = f1_score(y, pred, average=None, zero_division=0)
    assert np.allclose(f1_per_class(y, pred), per_class)


def test_per_class_report_matches_sklearn() -> None:
    y, probs = _data()
    pred = apply_thresholds(probs, 0.5)
    prec, rec, f1, support = precision_recall_fscore_support(y, pred, zero_division=0)
    report = per_class_report(y, pred)
    assert [c.index for c in report] == list(range(28)) and report[0].name == "Nucleoplasm"
    assert np.allclose([c.precision for c in report], prec)
    assert np.allclose([c.recall for c in report], rec)
    assert [c.f1 for c in report] == f1_per_class(y, pred).tolist()  # the one implementation
    assert np.allclose([c.f1 for c in report], f1)
    assert [c.support for c in report] == support.tolist()


def _closest_top(values: list[float]) -> float:
    """The grid threshold with the top value, the one closest to 0.5 among equals."""
    best = [t for t, v in zip(THRESHOLD_GRID, values, strict=True) if v >= max(values) - 1e-12]
    return float(min(best, key=lambda t: abs(t - 0.5)))


def test_tuned_thresholds_are_each_class_best_shrunk_to_the_pooled_one() -> None:
    y, probs = _data()
    thr = tune_thresholds(y, probs)
    # the pooled threshold: one threshold for every class, the best macro F1
    pooled = _closest_top([macro_f1(y, probs >= t) for t in THRESHOLD_GRID])
    assert thr.shape == (28,) and thr[20] == 0.5  # class 20: no positives, nothing to fit
    for c in range(28):
        n = int(y[:, c].sum())
        if not n:
            continue
        fitted = _closest_top(
            [f1_per_class(y[:, [c]], probs[:, [c]] >= t)[0] for t in THRESHOLD_GRID]
        )
        assert thr[c] == pytest.approx(pooled + (fitted - pooled) * n / (n + SHRINK_POSITIVES))
    assert macro_f1(y, apply_thresholds(probs, thr)) >= macro_f1(y, probs >= 0.5)
    # without shrinking, each class keeps its own F1-best threshold
    raw = tune_thresholds(y, probs, shrink=0)
    for c in np.flatnonzero(y.sum(axis=0)):
        f1s = [f1_per_class(y[:, [c]], probs[:, [c]] >= t)[0] for t in THRESHOLD_GRID]
        assert raw[c] == pytest.approx(_closest_top(f1s))


def test_a_class_with_one_positive_stays_near_the_pooled_threshold() -> None:
    """The case of issue 12: one validation positive with a low probability; the F1-best
    threshold is 0.02 (any low value separates it), which labelled 70% of test images."""
    rng = np.random.default_rng(3)
    y = (rng.random((600, 28)) < np.linspace(0.05, 0.3, 28)).astype(np.uint8)
    probs = np.clip(0.1 + 0.35 * y + rng.normal(0, 0.1, y.shape), 0, 1)
    y[:, 27] = 0
    y[7, 27] = 1
    probs[:, 27] = rng.random(600) * 0.02
    probs[7, 27] = 0.025
    thr = tune_thresholds(y, probs)
    pooled = _closest_top([macro_f1(y, probs >= t) for t in THRESHOLD_GRID])
    assert 0.2 < pooled < 0.45
    assert thr[27] == pytest.approx(pooled + (0.02 - pooled) / (1 + SHRINK_POSITIVES))
    assert thr[27] > 0.9 * pooled - 0.02  # not 0.02
    assert tune_thresholds(y, probs, shrink=0)[27] == pytest.approx(0.02)
    assert tune_thresholds(y, probs, anchor=0.5)[27] == pytest.approx(
        0.5 + (0.02 - 0.5) / (1 + SHRINK_POSITIVES)
    )


def test_a_class_with_many_positives_keeps_nearly_its_best_threshold() -> None:
    rng = np.random.default_rng(4)
    y = (rng.random((4000, 1)) < 0.25).astype(np.uint8)
    probs = np.clip(0.12 + 0.3 * y + rng.normal(0, 0.08, y.shape), 0, 1)
    n = int(y.sum())
    f1s = [f1_per_class(y, probs >= t)[0] for t in THRESHOLD_GRID]
    fitted = float(THRESHOLD_GRID[int(np.argmax(f1s))])
    assert fitted < 0.4  # the F1-best threshold is far from 0.5 ...
    thr = tune_thresholds(y, probs, anchor=0.5)[0]
    assert abs(thr - fitted) < 0.01  # ... and kept, even shrunk towards 0.5
    assert thr == pytest.approx(0.5 + (fitted - 0.5) * n / (n + SHRINK_POSITIVES))
    assert f1_per_class(y, probs >= thr)[0] == pytest.approx(max(f1s), abs=0.01)


def test_threshold_ties_prefer_half() -> None:
    y = np.array([[1], [0]])
    probs = np.array([[0.9], [0.1]])
    assert tune_thresholds(y, probs).tolist() == [0.5]


def test_constant_baseline_is_best_of_always_yes_or_no() -> None:
    y, _ = _data(200, 1)
    ones = np.ones_like(y)
    zeros = np.zeros_like(y)
    best = np.maximum(f1_per_class(y, ones), f1_per_class(y, zeros)).mean()
    assert constant_baseline_macro_f1(y) == pytest.approx(best)


def test_rng_state_round_trip() -> None:
    state = capture_rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_checkpoint_save_load_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "ck.pt"
    state = {"model": {"w": torch.ones(2)}, "rng": capture_rng_state(), "config": {"a": [1, None]}}
    save_checkpoint(path, state)
    raw = torch.load(path, weights_only=True)  # everything in it is weights_only-safe
    assert raw["format"] == "hpatool-checkpoint"
    doc = load_checkpoint(path)
    assert torch.equal(doc["model"]["w"], torch.ones(2)) and doc["config"] == {"a": [1, None]}
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary file left
    bad = tmp_path / "bad.pt"
    bad.write_text("nope")
    with pytest.raises(DataError, match="not a readable checkpoint"):
        load_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {}}, foreign)
    with pytest.raises(DataError, match="not an hpatool checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(NotFound):
        load_checkpoint(tmp_path / "missing.pt")
