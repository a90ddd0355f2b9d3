"""Macro F1, per-class thresholds, the constant baseline, and checkpoint files."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, precision_recall_fscore_support

from hpatool.engine.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from hpatool.engine.metrics import (
    THRESHOLD_GRID,
    apply_thresholds,
    constant_baseline_macro_f1,
    f1_per_class,
    macro_f1,
    per_class_report,
    tune_thresholds,
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


def test_tuned_thresholds_maximise_each_class() -> None:
    y, probs = _data()
    thr = tune_thresholds(y, probs)
    assert thr.shape == (28,) and thr[20] == 0.5
    tuned = f1_per_class(y, apply_thresholds(probs, thr))
    for c in range(28):
        best = max(f1_per_class(y[:, [c]], probs[:, [c]] >= t)[0] for t in THRESHOLD_GRID)
        assert tuned[c] == pytest.approx(best)
    assert macro_f1(y, apply_thresholds(probs, thr)) >= macro_f1(y, probs >= 0.5)


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
