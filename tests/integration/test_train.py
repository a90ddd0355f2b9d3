"""``hpatool split`` + ``train`` + ``runs`` end to end on synthetic data: files, registry, exact
resume, clear errors on bad input, and a learning test."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from hpatool.data.samples import HpaDataset, dataset_items
from hpatool.data.transforms import normalize
from hpatool.engine.metrics import constant_baseline_macro_f1, macro_f1
from hpatool.engine.models.checkpoint import build_model_from_checkpoint, load_checkpoint
from hpatool.registry import Registry
from hpatool.synth import synth_dataset
from tests.support import ARCH, SIZE, TRAIN, Invoke, Workspace, one_line_error, register


@pytest.fixture(scope="module")
def synth_dir(synth_data: Callable[..., Path]) -> Path:
    return synth_data(40, SIZE, seed=0)


def test_train_writes_run_files_and_registers_the_run(
    cli: Invoke, home: Path, synth_dir: Path, tmp_path: Path
) -> None:
    register(cli, synth_dir)
    out = tmp_path / "runs"
    result = cli(
        "train",
        "--dataset",
        "syn",
        *TRAIN,
        "--epochs",
        "2",
        "--workers",
        "0",
        "--loss",
        "focal",
        "--oversample",
        "27=7,Lysosomes=5",
        "--fold",
        "1",
        "--out",
        out,
        "--name",
        "r1",
    )
    assert result.exit_code == 0, result.output
    assert "Run r1 done: 2 epochs" in result.stdout and "epoch 2/2" in result.stdout
    run = out / "r1"
    names = {p.name for p in run.iterdir()}
    assert names == {
        "config.json",
        "metrics.csv",
        "checkpoint-last.pt",
        "checkpoint-best.pt",
        "thresholds.json",
        "curves.png",
        "oof.csv",
    }
    with (run / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[-1]["step"] == "6"
    thresholds = json.loads((run / "thresholds.json").read_text())
    assert len(thresholds["thresholds"]) == 28
    assert all(0 < t < 1 for t in thresholds["thresholds"])
    assert {"macro_f1", "macro_f1_at_0.5", "epoch"} <= set(thresholds)
    config = json.loads((run / "config.json").read_text())
    assert config["options"]["loss"] == "focal" and config["options"]["fold"] == 1
    assert config["class_multipliers"][27] == 7 and config["class_multipliers"][10] == 5
    assert config["train_samples"] + config["val_samples"] == 40
    assert config["model_spec"]["crop"] == 32 and config["model_spec"]["in_chans"] == 4

    raw = torch.load(run / "checkpoint-last.pt", weights_only=True)
    for key in (
        "model",
        "optimizer",
        "scheduler",
        "scaler",
        "epoch",
        "step",
        "rng",
        "sampler",
        "config",
        "arch",
        "best_f1",
        "model_spec",
        "thresholds",
    ):
        assert key in raw, key
    assert raw["epoch"] == 2 and raw["step"] == 6 and raw["arch"] == ARCH
    best = load_checkpoint(run / "checkpoint-best.pt")
    assert best["best_f1"] == pytest.approx(thresholds["macro_f1"])

    model, spec = build_model_from_checkpoint(run / "checkpoint-best.pt")
    assert (spec.arch, spec.crop, spec.datasets, spec.image_size) == (ARCH, 32, ("syn",), (48, 48))
    with torch.no_grad():
        assert model(torch.zeros(2, spec.in_chans, spec.crop, spec.crop)).shape == (2, 28)

    listed = cli("runs", "list", "--json")
    assert listed.exit_code == 0, listed.output
    (record,) = json.loads(listed.stdout)
    assert (record["name"], record["arch"], record["datasets"], record["fold"]) == (
        "r1",
        ARCH,
        ["syn"],
        1,
    )
    assert record["status"] == "done" and record["epochs_done"] == 2
    assert record["best_f1"] == pytest.approx(thresholds["macro_f1"])
    shown = cli("runs", "show", "r1", "--json")
    doc = json.loads(shown.stdout)
    assert doc["out_dir"] == str(run) and "checkpoint-best.pt" in doc["files"]
    assert "r1" in cli("runs", "list").stdout
    assert "option: crop" in cli("runs", "show", "r1").stdout
    missing = one_line_error(cli("runs", "show", "nope"))
    assert "unknown run 'nope'" in missing and "r1" in missing


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoint-last.pt")["model"]


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_ends_with_the_same_weights(cli: Invoke, full_run: Workspace) -> None:
    # "full": the same two epochs never stopped, trained once for the session (``full_run``)
    home, out = full_run.home, full_run.runs
    common = ("--dataset", "syn", *TRAIN, "--epochs", "2", "--out", out)

    # stopped after epoch 1 (3 steps), with worker processes; resumed in the main process
    first = cli("train", *common, "--workers", "2", "--max-steps", "3", "--name", "split")
    assert first.exit_code == 0, first.output
    assert load_checkpoint(out / "split" / "checkpoint-last.pt")["epoch"] == 1
    with Registry.open(home) as reg:
        assert reg.run("split").status == "stopped" and reg.run("split").epochs_done == 1
    resumed = cli("train", "--resume", "--name", "split", "--workers", "0")
    assert resumed.exit_code == 0, resumed.output
    assert "(resumed)" in resumed.stdout
    _assert_same_state(_weights(out / "full"), _weights(out / "split"))

    # stopped in the middle of epoch 1, resumed twice
    mid = cli("train", *common, "--workers", "0", "--max-steps", "2", "--name", "mid")
    assert mid.exit_code == 0, mid.output
    assert load_checkpoint(out / "mid" / "checkpoint-last.pt")["step_in_epoch"] == 2
    again = cli("train", "--resume", "--name", "mid", "--max-steps", "4")
    assert again.exit_code == 0, again.output
    done = cli("train", "--resume", "--name", "mid", "--workers", "0")
    assert done.exit_code == 0, done.output
    a = load_checkpoint(out / "full" / "checkpoint-last.pt")
    b = load_checkpoint(out / "mid" / "checkpoint-last.pt")
    _assert_same_state(a["model"], b["model"])
    assert a["step"] == b["step"] == 6
    for sa, sb in zip(
        a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True
    ):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"])
    keep = ("epoch", "step", "train_loss", "val_loss", "macro_f1", "macro_f1_at_0.5", "lr")
    assert [{k: r[k] for k in keep} for r in a["history"]] == [
        {k: r[k] for k in keep} for r in b["history"]
    ]
    with Registry.open(home) as reg:
        assert reg.run("mid").status == "done" and reg.run("mid").epochs_done == 2


def test_bad_input_gives_clear_errors(
    cli: Invoke, home: Path, synth_dir: Path, tmp_path: Path
) -> None:
    register(cli, synth_dir)
    register(cli, synth_dir, name="unsplit", folds=None)
    out = tmp_path / "runs"
    base = ("--dataset", "syn", "--device", "cpu", "--workers", "0", "--out", out)

    text = one_line_error(cli("train", *base, "--arch", "resnet5O"))
    assert "unknown --arch 'resnet5O'" in text and "resnet50" in text
    assert "inceptionresnetv2" in text
    text = one_line_error(cli("train", *base, "--arch", ARCH, "--fold", "7"))
    assert "fold 7 does not exist" in text and "4 folds" in text
    text = one_line_error(cli("train", "--dataset", "unsplit", "--arch", ARCH, "--out", out))
    assert "hpatool split unsplit" in text
    text = one_line_error(cli("train", *base, "--arch", ARCH, "--crop", "64"))
    assert "--crop 64 is larger than the 48x48 images" in text
    text = one_line_error(
        cli("train", *base, "--arch", ARCH, "--crop", "32", "--oversample", "27=7,Nucleus=2")
    )
    assert "'Nucleus'" in text
    text = one_line_error(
        cli("train", *base, "--arch", ARCH, "--crop", "32", "--batch-size", "500")
    )
    assert "--batch-size 500" in text
    text = one_line_error(cli("train", "--dataset", "nope", "--arch", ARCH))
    assert "unknown dataset 'nope'" in text
    text = one_line_error(cli("train", "--arch", ARCH))
    assert "--dataset" in text
    if not torch.cuda.is_available():
        text = one_line_error(cli("train", *base, "--arch", ARCH, "--device", "cuda"))
        assert "no CUDA device" in text
    text = one_line_error(cli("train", "--resume", "--name", "ghost", "--out", out))
    assert "no checkpoint-last.pt" in text
    assert not out.exists()  # nothing was written by the failed commands
    with Registry.open(home) as reg:
        assert reg.runs() == []

    ok = cli(
        "train",
        *base,
        "--arch",
        ARCH,
        "--crop",
        "32",
        "--batch-size",
        "8",
        "--max-steps",
        "1",
        "--name",
        "r1",
    )
    assert ok.exit_code == 0, ok.output
    text = one_line_error(cli("train", *base, "--arch", ARCH, "--crop", "32", "--name", "r1"))
    assert "run 'r1' already exists" in text and "--resume" in text
    text = one_line_error(cli("train", "--resume", "--name", "r1", "--arch", "resnet50"))
    assert f"is of --arch {ARCH}, not resnet50" in text
    text = one_line_error(cli("train", "--resume", "--name", "r1", "--crop", "24"))
    assert "--crop 24 differs from the run's 32" in text


@pytest.mark.slow
def test_short_cpu_training_learns(cli: Invoke, home: Path, tmp_path: Path) -> None:
    """On synthetic data a small CNN beats the best constant predictor by a clear margin, on the
    validation fold and on a separate held-out set scored with the saved thresholds."""
    train_dir, test_dir = tmp_path / "train", tmp_path / "test"
    synth_dataset(train_dir, samples=320, size=64, seed=3, workers=2)
    synth_dataset(test_dir, samples=120, size=64, seed=4, workers=2)
    register(cli, train_dir, name="learn", folds=5)
    result = cli(
        "train",
        "--dataset",
        "learn",
        "--arch",
        ARCH,
        "--crop",
        "48",
        "--epochs",
        "6",
        "--batch-size",
        "16",
        "--lr",
        "3e-3",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--out",
        tmp_path / "runs",
        "--name",
        "learn",
    )
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "learn"
    thresholds = json.loads((run / "thresholds.json").read_text())

    with Registry.open(home) as reg:
        folds = reg.folds("learn")
        val = [it for it in dataset_items(reg, "learn") if folds[it.id] == 0]
        val_baseline = constant_baseline_macro_f1(HpaDataset(val, 48).targets)
        result = cli(
            "datasets", "add", "heldout", "--labels", test_dir / "labels.csv", "--root", test_dir
        )
        test_items = dataset_items(reg, "heldout")
    # The thresholds of classes with few validation positives are shrunk towards the pooled
    # threshold (metrics.SHRINK_POSITIVES): the tuned F1 flatters itself less than it did.
    assert thresholds["macro_f1"] > val_baseline + 0.02, (thresholds, val_baseline)
    assert thresholds["tuned_on"] == "oof" and thresholds["oof_macro_f1"] > val_baseline

    from sklearn.metrics import roc_auc_score

    model, spec = build_model_from_checkpoint(run / "checkpoint-best.pt")
    ds = HpaDataset(test_items, spec.crop, spec.mean, spec.std)
    with torch.no_grad():
        x = normalize(torch.stack([ds[i][0] for i in range(len(ds))]), spec.mean, spec.std)
        probs = torch.sigmoid(model(x)).numpy()
    y = ds.targets
    # learning, whatever the thresholds: the held-out images of each class rank above the rest
    present = [c for c in range(28) if 0 < y[:, c].sum() < len(y)]
    auc = float(np.mean([roc_auc_score(y[:, c], probs[:, c]) for c in present]))
    assert auc > 0.7, auc
    # the centre crop with the thresholds tuned on the centre crop (the same view)
    test_f1 = macro_f1(y, probs >= np.array(thresholds["validation_thresholds"]))
    test_baseline = constant_baseline_macro_f1(y)
    assert test_f1 > test_baseline + 0.05, (test_f1, test_baseline, auc)
