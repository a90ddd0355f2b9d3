"""The pieces of crop-TTA scoring: windows, rank shares, aggregation, labels, and the exact
bytes of the submission, probabilities and failures files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hpatool.engine.predict import (
    failures_path_for,
    partial_path,
    write_failures,
    write_probabilities,
    write_submission,
)
from hpatool.engine.scoring import aggregate, crop_windows, decide_labels, rank_share
from hpatool.errors import UsageError


def test_crop_windows_depend_only_on_seed_and_position() -> None:
    a = crop_windows(3, 64, 64, 32, 5, seed=0)
    assert a == crop_windows(3, 64, 64, 32, 5, seed=0)
    assert a != crop_windows(4, 64, 64, 32, 5, seed=0)
    assert a != crop_windows(3, 64, 64, 32, 5, seed=1)
    assert len(a) == 5 and all(0 <= t <= 32 and 0 <= left <= 32 for t, left in a)
    assert crop_windows(0, 48, 48, 48, 8, seed=0) == [(0, 0)]  # the crop is the whole image


@pytest.mark.parametrize(("n", "batch", "world"), [(10, 4, 1), (10, 4, 2), (9, 2, 3), (3, 4, 2)])
def test_rank_shares_cover_every_image_once(n: int, batch: int, world: int) -> None:
    shares = [rank_share(n, batch, r, world) for r in range(world)]
    assert sorted(i for s in shares for i in s) == list(range(n))
    # Whole batches, in dataset order: the same batches whatever the number of processes.
    batches = {tuple(s[k : k + batch]) for s in shares for k in range(0, len(s), batch)}
    assert batches == {tuple(range(s, min(s + batch, n))) for s in range(0, n, batch)}


def test_aggregate_max_and_mean() -> None:
    crops = torch.tensor([[0.1, 0.9], [0.3, 0.5]])
    assert aggregate(crops, "max") == pytest.approx([0.3, 0.9])
    assert aggregate(crops, "mean") == pytest.approx([0.2, 0.7])
    assert aggregate(crops, "max").dtype == np.float64
    with pytest.raises(UsageError, match="--agg 'median' is invalid"):
        aggregate(crops, "median")


def test_decide_labels_tops_up_to_min_labels() -> None:
    probs = np.array([0.2, 0.7, 0.4, 0.9])
    thr = np.full(4, 0.5)
    assert decide_labels(probs, thr, 0) == [1, 3]
    assert decide_labels(probs, thr, 3) == [1, 2, 3]
    assert decide_labels(probs, np.full(4, 0.95), 1) == [3]
    assert decide_labels(probs, np.full(4, 0.95), 0) == []


def test_file_names_and_bytes(tmp_path: Path) -> None:
    out = tmp_path / "submission.csv"
    assert partial_path(out).name == "submission.partial.csv"
    assert failures_path_for(out).name == "submission.failures.csv"
    assert partial_path(tmp_path / "sub").name == "sub.partial.csv"
    write_submission(out, ["a", "b"], [[0, 16], []])
    assert out.read_bytes() == b"Id,Predicted\na,0 16\nb,\n"
    probs = tmp_path / "probs.csv"
    write_probabilities(probs, ["a"], [np.linspace(0, 1, 28)])
    lines = probs.read_text().splitlines()
    assert lines[0] == "Id," + ",".join(str(c) for c in range(28))
    assert lines[1].startswith("a,0.000000,0.037037,") and lines[1].endswith(",1.000000")
    fails = tmp_path / "submission.failures.csv"
    write_failures(fails, {"a": "no such file", "b": "bad, truncated"})
    assert fails.read_bytes() == b'Id,error\na,no such file\nb,"bad, truncated"\n'
