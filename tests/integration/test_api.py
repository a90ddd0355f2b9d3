"""The Python API (``hpatool.api``, ``docs/api.md``) gives what the commands give: a loaded
run's probabilities and labels equal ``predict``'s, ``score_folder`` equals ``predict
--probs``, and ``oof_table`` holds the experiment's ``oof.csv`` predictions."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from hpatool import api
from hpatool.engine.runs.oof import read_oof
from hpatool.engine.scoring.blend import read_probability_file
from tests.support import SIZE, TRAIN, Invoke, register


def test_the_api_scores_as_predict_does(
    cli: Invoke, home: Path, synth_data: Callable[..., Path], tmp_path: Path
) -> None:
    data = synth_data(24, SIZE, seed=8)
    register(cli, data, folds=2)
    out = tmp_path / "runs"
    for fold in (0, 1):
        trained = cli("train", "--dataset", "syn", *TRAIN, "--epochs", "1", "--workers", "0",
                      "--out", out, "--fold", str(fold), "--experiment", "x",
                      "--name", f"x-f{fold}")  # fmt: skip
        assert trained.exit_code == 0, trained.output
    sub, probs = tmp_path / "sub.csv", tmp_path / "probs.csv"
    predicted = cli("predict", "--run", "x-f0", "--dataset", "syn", "--workers", "0",
                    "--out", sub, "--probs", probs)  # fmt: skip
    assert predicted.exit_code == 0, predicted.output
    ids, expected = read_probability_file(probs)
    labels = {r["Id"]: r["Predicted"] for r in csv.DictReader(sub.open())}

    model = api.load_run("x-f0", home=home)
    assert model.view.tta == "grid" and model.thresholds.shape == (28,)
    images = [api.read_sample(data, sid) for sid in ids]
    got = model.predict_proba(images)
    assert np.allclose(got, expected, rtol=0, atol=1e-6)
    assert np.allclose(model.predict_proba(images[3]), expected[3], rtol=0, atol=1e-6)
    decided = model.predict(images)
    assert [" ".join(map(str, d)) for d in decided] == [labels[sid] for sid in ids]

    table = api.score_folder(model, data, ids)
    assert list(table["Id"]) == ids
    assert np.allclose(table[[str(c) for c in range(28)]].to_numpy(), expected, atol=1e-6)
    everything = api.score_folder(model, data)
    assert sorted(everything["Id"]) == sorted(ids)

    oof = api.oof_table("x", home=home)
    assert set(oof["fold"]) == {0, 1} and len(oof) == 24
    fold0_ids, fold0 = read_oof(out / "x-f0" / "oof.csv")
    rows = oof.set_index("Id").loc[fold0_ids]
    assert np.array_equal(rows[[str(c) for c in range(28)]].to_numpy(), fold0)
    assert (rows["fold"] == 0).all()

    with pytest.raises(ValueError, match=r"expected a \(4, H, W\) uint8 array"):
        model.predict_proba(np.zeros((3, SIZE, SIZE), np.uint8))
