"""Held-out figures (issue 17): thresholds of each fold tuned on the other folds only
(``metrics.crossfit``), and the split-half figure of one set of predictions
(``metrics.split_half``)."""

from __future__ import annotations

import numpy as np
import pytest

from hpatool.engine.metrics import (
    class_scores,
    crossfit,
    heldout_macro_f1,
    macro_f1,
    split_half,
    tune_thresholds,
)


def _predictions(n: int = 300, classes: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels with rare and common classes, and probabilities that carry some signal."""
    rng = np.random.default_rng(seed)
    prevalence = np.array([0.4, 0.2, 0.1, 0.05, 0.03, 0.02])[:classes]
    y = rng.random((n, classes)) < prevalence
    probs = np.clip(0.3 * y + rng.random((n, classes)) * 0.7, 0, 1)
    return y.astype(np.int64), probs


def test_fold_thresholds_ignore_that_folds_predictions_and_follow_the_others() -> None:
    y, probs = _predictions()
    folds = np.arange(len(y)) % 3
    _, before = crossfit(y, probs, folds)
    assert sorted(before) == [0, 1, 2]
    # fold 1's predictions change: fold 1's thresholds do not, the others' do
    changed = probs.copy()
    changed[folds == 1] = np.random.default_rng(9).random(changed[folds == 1].shape)
    _, after = crossfit(y, changed, folds)
    assert np.array_equal(after[1], before[1])
    assert not np.array_equal(after[0], before[0])
    assert not np.array_equal(after[2], before[2])
    # each fold's thresholds are exactly those tuned on the other folds' rows
    for k in range(3):
        others = folds != k
        assert np.array_equal(before[k], tune_thresholds(y[others], probs[others]))


def test_crossfit_predictions_apply_each_folds_thresholds_to_it() -> None:
    y, probs = _predictions(seed=1)
    folds = np.repeat([4, 7], len(y) // 2)  # fold numbers need not start at 0
    pred, by_fold = crossfit(y, probs, folds)
    for k, thresholds in by_fold.items():
        assert np.array_equal(pred[folds == k], probs[folds == k] >= thresholds)
    with pytest.raises(ValueError, match="at least two groups"):
        crossfit(y, probs, np.zeros(len(y), dtype=int))


def test_in_sample_tuning_flatters_and_held_out_does_not() -> None:
    # probabilities with no signal at all: tuned in sample, the F1 looks better than chance;
    # held out it is lower
    rng = np.random.default_rng(3)
    y = (rng.random((200, 6)) < 0.05).astype(np.int64)
    probs = rng.random((200, 6))
    in_sample = macro_f1(y, probs >= tune_thresholds(y, probs))
    held = heldout_macro_f1(y, probs)
    assert held < in_sample


def test_split_half_is_the_mean_of_seeded_two_way_crossfits() -> None:
    y, probs = _predictions(n=101, seed=2)  # an odd count: halves of 50 and 51
    scores = split_half(y, probs, seeds=3)
    assert scores is not None
    expected = []
    for seed in range(3):
        groups = np.zeros(len(y), dtype=np.int64)
        groups[np.random.default_rng(seed).permutation(len(y))[len(y) // 2 :]] = 1
        pred, _ = crossfit(y, probs, groups)
        expected.append(class_scores(y, pred).f1)
    assert np.allclose(scores.f1, np.mean(expected, axis=0), atol=1e-12)
    assert heldout_macro_f1(y, probs, seeds=3) == pytest.approx(float(scores.f1.mean()), abs=1e-12)
    assert split_half(y[:1], probs[:1]) is None
    assert np.isnan(heldout_macro_f1(y[:1], probs[:1]))
    # the same inputs give the same figure (seeded)
    assert heldout_macro_f1(y, probs) == heldout_macro_f1(y, probs)
