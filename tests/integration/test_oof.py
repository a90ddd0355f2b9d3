"""The end of every run: ``oof.csv`` (the best checkpoint on the validation fold, with the run's
view), ``thresholds.json`` tuned on it, ``summarize_oof`` over folds, the BCE validation loss,
and a run stopped while scoring its fold."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score
from typer.testing import Result

from hpatool.data.samples import HpaDataset, dataset_items, targets_array
from hpatool.data.transforms import normalize
from hpatool.engine.metrics import tune_thresholds
from hpatool.engine.models.checkpoint import build_model_from_checkpoint, load_checkpoint
from hpatool.engine.runs.oof import OOF_FILE, read_oof, summarize_oof, write_oof
from hpatool.errors import DataError, NotFound, UsageError
from hpatool.registry import Registry
from tests.support import TRAIN, Invoke, one_line_error, register, run_cli

VIEW = {"crop": 32, "crops": 3, "agg": "max", "tta": "crops"}
EVAL = ("--eval-crops", "3", "--eval-agg", "max", "--tta", "crops", "--workers", "0")


@pytest.fixture(scope="module")
def runs(
    synth_data: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Two one-epoch runs of one dataset: ``f0`` (fold 0, focal loss) and ``f1`` (fold 1)."""
    base = tmp_path_factory.mktemp("oof")
    home = base / "home"

    def cli(*args: object) -> Result:
        return run_cli(home, *args)

    data = synth_data(40)
    res = cli("datasets", "add", "syn", "--labels", data / "labels.csv", "--root", data)
    assert res.exit_code == 0, res.output
    assert cli("split", "syn", "--folds", "4").exit_code == 0
    out = base / "runs"
    lines = {}
    for fold, loss in ((0, "focal"), (1, "bce")):
        res = cli(
            "train", "--dataset", "syn", *TRAIN, *EVAL, "--epochs", "1", "--fold", str(fold),
            "--loss", loss, "--out", out, "--name", f"f{fold}",
        )  # fmt: skip
        assert res.exit_code == 0, res.output
        lines[fold] = res.stdout
    return {"home": home, "out": out, "data": data, "stdout0": lines[0]}


def _fold_ids(home: Path, fold: int) -> list[str]:
    with Registry.open(home) as reg:
        folds = reg.folds("syn")
        return [s.id for s in reg.samples("syn") if folds.get(s.id) == fold]


def test_oof_csv_is_the_validation_fold_at_full_precision(runs: dict[str, Any]) -> None:
    run = runs["out"] / "f0"
    with (run / OOF_FILE).open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["Id", *map(str, range(28))]
    assert all(len(r) == 29 for r in rows)
    assert [r[0] for r in rows[1:]] == _fold_ids(runs["home"], 0)  # exactly, in dataset order
    # full precision: every cell is the repr of its float, so reading gives the same floats
    assert all(repr(float(v)) == v for r in rows[1:] for v in r[1:])
    ids, probs = read_oof(run / OOF_FILE)
    assert ids == [r[0] for r in rows[1:]] and probs.shape == (len(ids), 28)
    assert probs.tolist() == [[float(v) for v in r[1:]] for r in rows[1:]]
    assert "out-of-fold macro F1" in runs["stdout0"]
    assert "max of 3 crops of 32px" in runs["stdout0"]


def test_thresholds_json_is_tuned_on_the_oof_view(runs: dict[str, Any]) -> None:
    run = runs["out"] / "f0"
    doc = json.loads((run / "thresholds.json").read_text())
    assert doc["view"] == VIEW and doc["tuned_on"] == "oof"
    ids, probs = read_oof(run / OOF_FILE)
    with Registry.open(runs["home"]) as reg:
        targets = {s.id: s.target for s in reg.samples("syn")}
        record = reg.run("f0")
    y = np.zeros((len(ids), 28), np.uint8)
    for i, sid in enumerate(ids):
        y[i, list(targets[sid] or ())] = 1
    assert doc["thresholds"] == tune_thresholds(y, probs).tolist()
    expected = f1_score(y, probs >= np.array(doc["thresholds"]), average="macro", zero_division=0)
    assert doc["oof_macro_f1"] == pytest.approx(expected, abs=1e-12)
    # the best epoch's centre-crop thresholds are kept beside them
    best = load_checkpoint(run / "checkpoint-best.pt")
    assert doc["validation_thresholds"] == best["thresholds"]
    assert doc["macro_f1"] == pytest.approx(best["metrics"]["macro_f1"])
    assert record.status == "done"
    config = json.loads((run / "config.json").read_text())
    assert len(config["class_frequency"]) == 28
    with Registry.open(runs["home"]) as reg:
        items = dataset_items(reg, "syn")
    train = [it for it in items if it.id not in set(ids)]
    assert config["class_frequency"] == pytest.approx(targets_array(train).mean(axis=0).tolist())


def test_predict_with_the_runs_view_reproduces_oof(runs: dict[str, Any], tmp_path: Path) -> None:
    probs_file = tmp_path / "probs.csv"
    res = run_cli(
        runs["home"],
        "predict",
        "--run",
        "f0",
        "--dataset",
        "syn",
        "--crops",
        "3",
        "--agg",
        "max",
        "--tta",
        "crops",
        "--seed",
        "0",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "sub.csv"),
        "--probs",
        str(probs_file),
    )
    assert res.exit_code == 0, res.output
    ids, oof = read_oof(runs["out"] / "f0" / OOF_FILE)
    with probs_file.open(newline="") as fh:
        predicted = {r["Id"]: [float(r[str(c)]) for c in range(28)] for r in csv.DictReader(fh)}
    again = np.array([predicted[sid] for sid in ids])
    assert np.abs(again - oof).max() < 1e-6
    # evaluate on the run's fold, with its stored view and thresholds, gives the OOF macro F1
    res = run_cli(
        runs["home"],
        "evaluate",
        "--run",
        "f0",
        "--dataset",
        "syn",
        "--min-labels",
        "0",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--json",
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    stored = json.loads((runs["out"] / "f0" / "thresholds.json").read_text())
    assert doc["macro_f1"] == pytest.approx(stored["oof_macro_f1"], abs=1e-9)


def test_summarize_oof_covers_both_folds_once(runs: dict[str, Any], tmp_path: Path) -> None:
    with Registry.open(runs["home"]) as reg:
        records = [reg.run("f0"), reg.run("f1")]
        summary = summarize_oof(reg, records)
        order = [s.id for s in reg.samples("syn")]
    expected_ids = _fold_ids(runs["home"], 0) + _fold_ids(runs["home"], 1)
    assert sorted(summary.ids) == sorted(expected_ids) and len(set(summary.ids)) == len(summary.ids)
    assert summary.ids == sorted(summary.ids, key=order.index)  # dataset order
    assert summary.dataset == "syn" and summary.dataset_samples == 40
    assert {k: v.to_json() for k, v in summary.views.items()} == {"f0": VIEW, "f1": VIEW}
    assert summary.without_oof == []
    pred = summary.probs >= summary.thresholds
    expected = f1_score(summary.y_true, pred, average="macro", zero_division=0)
    assert summary.macro_f1 == pytest.approx(expected, abs=1e-12)
    assert [c.f1 for c in summary.classes] == pytest.approx(
        f1_score(summary.y_true, pred, average=None, zero_division=0).tolist()
    )
    # each row is its run's oof.csv row
    ids0, probs0 = read_oof(runs["out"] / "f0" / OOF_FILE)
    assert np.array_equal(summary.probs[summary.ids.index(ids0[0])], probs0[0])


def test_summarize_oof_means_repeats_and_refuses_mixed_input(
    runs: dict[str, Any], tmp_path: Path
) -> None:
    import dataclasses

    ids0, probs0 = read_oof(runs["out"] / "f0" / OOF_FILE)
    twin = tmp_path / "twin"
    twin.mkdir()
    write_oof(twin / OOF_FILE, ids0[:2], np.zeros((2, 28)))
    empty = tmp_path / "empty"
    empty.mkdir()
    with Registry.open(runs["home"]) as reg:
        f0 = reg.run("f0")
        copy = dataclasses.replace(f0, name="twin", out_dir=twin)
        none = dataclasses.replace(f0, name="none", out_dir=empty)
        summary = summarize_oof(reg, [f0, copy, none])
        assert summary.without_oof == ["none"] and sorted(summary.ids) == sorted(ids0)
        assert np.array_equal(summary.probs[summary.ids.index(ids0[0])], probs0[0] / 2)
        with pytest.raises(NotFound, match=r"has an oof\.csv"):
            summarize_oof(reg, [none])
        other = dataclasses.replace(f0, name="other", datasets=["elsewhere"])
        with pytest.raises(UsageError, match="one dataset"):
            summarize_oof(reg, [f0, other])
    bad = tmp_path / "bad.csv"
    bad.write_text("Id," + ",".join(map(str, range(28))) + "\nx," + ",".join(["0.5"] * 27) + ",2\n")
    with pytest.raises(DataError, match=r"line 2, column 27: '2' is not a probability"):
        read_oof(bad)


def test_val_loss_is_bce_for_a_focal_run(runs: dict[str, Any]) -> None:
    """The focal run's metrics.csv val_loss is the BCE of the model on its validation fold."""
    run = runs["out"] / "f0"
    with (run / "metrics.csv").open() as fh:
        (row,) = list(csv.DictReader(fh))
    model, _ = build_model_from_checkpoint(run / "checkpoint-last.pt")
    with Registry.open(runs["home"]) as reg:
        items = dataset_items(reg, "syn")
    val = set(_fold_ids(runs["home"], 0))
    ds = HpaDataset([it for it in items if it.id in val], 32)
    x = normalize(torch.stack([ds[i][0] for i in range(len(ds))]))
    y = torch.stack([ds[i][1] for i in range(len(ds))])
    with torch.no_grad():
        logits = model(x)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y).item()
    focal = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
    p_t = torch.exp(-focal)
    focal_loss = ((1 - p_t) ** 2 * focal).mean().item()
    assert float(row["val_loss"]) == pytest.approx(bce, rel=1e-4)
    assert abs(bce - focal_loss) > 0.05 * bce  # the focal loss would be far off


def test_stopped_while_scoring_then_resume_writes_oof(
    cli: Invoke, home: Path, synth_data: Callable[..., Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    import hpatool.engine.scoring.score as scoring

    register(cli, synth_data(40))
    out = tmp_path / "runs"
    real_score = scoring.score

    def interrupted(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(scoring, "score", interrupted)
    args = ("train", "--dataset", "syn", *TRAIN, *EVAL, "--epochs", "1", "--out", out)
    res = cli(*args, "--name", "r")
    text = one_line_error(res, 130)
    assert "interrupted" in text and "train --resume --name r" in text
    run = out / "r"
    assert not (run / OOF_FILE).exists() and not list(run.glob(".tmp*"))
    assert json.loads((run / "thresholds.json").read_text())["tuned_on"] == "validation"
    with Registry.open(home) as reg:
        assert reg.run("r").status == "interrupted"
    metrics = (run / "metrics.csv").read_text()

    monkeypatch.setattr(scoring, "score", real_score)
    res = cli("train", "--resume", "--name", "r")
    assert res.exit_code == 0, res.output
    assert (run / OOF_FILE).is_file() and (run / "metrics.csv").read_text() == metrics
    assert json.loads((run / "thresholds.json").read_text())["tuned_on"] == "oof"
    assert "out-of-fold macro F1" in res.stdout
    with Registry.open(home) as reg:
        assert reg.run("r").status == "done"
    # once written, a resume with nothing to train keeps it
    before = (run / OOF_FILE).stat().st_mtime_ns
    res = cli("train", "--resume", "--name", "r")
    assert res.exit_code == 0, res.output
    assert (run / OOF_FILE).stat().st_mtime_ns == before


TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside python")
def test_two_processes_write_the_same_oof(runs: dict[str, Any], tmp_path: Path) -> None:
    """A finished run whose oof.csv is missing, resumed under a 2-process torchrun: each rank
    scores its share, rank 0 gathers and writes the same file as one process did."""
    import shutil

    home = tmp_path / "home"
    shutil.copytree(runs["home"], home)
    run = runs["out"] / "f1"
    copy = tmp_path / "runs" / "f1"
    shutil.copytree(run, copy)
    with Registry.open(home) as reg:
        reg.delete_run("f1")  # registered again by the resume, from its folder
    (copy / OOF_FILE).unlink()
    env = {**os.environ, "HPATOOL_HOME": str(home), "OMP_NUM_THREADS": "1"}
    env.pop("HPATOOL_DEBUG", None)
    cmd = [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "hpatool", "train"]
    done = subprocess.run(
        [*cmd, "--resume", "--name", "f1", "--out", str(tmp_path / "runs"), "--device", "cpu"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("out-of-fold macro F1") == 1  # rank 0 only
    ids, probs = read_oof(copy / OOF_FILE)
    ids1, probs1 = read_oof(run / OOF_FILE)
    assert ids == ids1 and np.abs(probs - probs1).max() < 1e-6
    with Registry.open(home) as reg:
        assert reg.run("f1").status == "done"


def test_val_view_eval_validates_with_the_runs_evaluation_view(
    cli: Invoke, home: Path, synth_data: Callable[..., Path], tmp_path: Path
) -> None:
    """--val-view eval: each epoch's validation scores the fold with the run's view (the grid
    here), so the one epoch's figures and thresholds are those of the run's oof.csv."""
    from hpatool.engine.metrics import heldout_macro_f1
    from hpatool.labels import to_multihot

    data = synth_data(24)
    register(cli, data, folds=3)
    res = cli(
        "train", "--dataset", "syn", *TRAIN, "--epochs", "1", "--workers", "0", "--out",
        tmp_path / "runs", "--name", "v", "--val-view", "eval", "--tta", "grid",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    run_dir = tmp_path / "runs" / "v"
    doc = json.loads((run_dir / "thresholds.json").read_text())
    assert doc["view"] == {"crop": 32, "crops": 8, "agg": "mean", "tta": "grid"}
    assert doc["validation_thresholds"] == doc["thresholds"]  # the same predictions
    with (run_dir / "metrics.csv").open(newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    ids, probs = read_oof(run_dir / OOF_FILE)
    with Registry.open(home) as reg:
        targets = {s.id: s.target for s in reg.samples("syn")}
    held = heldout_macro_f1(to_multihot([targets[i] for i in ids]), probs)
    assert float(row["macro_f1"]) == pytest.approx(held, rel=1e-5)
    assert doc["oof_macro_f1_heldout"] == pytest.approx(held, abs=1e-12)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["options"]["val_view"] == "eval"
    bad = cli("train", "--dataset", "syn", *TRAIN, "--val-view", "all", "--out", tmp_path / "x")
    assert "--val-view all is invalid; use one of centre, eval" in one_line_error(bad)
