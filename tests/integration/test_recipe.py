"""Issue 19 end to end: ``--ema`` (validated, checkpointed, resumed exactly, training itself
untouched), ``--keep-checkpoints`` and ``runs average`` (the mean of the kept weights, BatchNorm
recomputed on the training samples, a run like any other), ``--augment``, ``predict
--threshold prior``, and datasets of different stored sizes (1024 px from the real
full-resolution fields)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from hpatool.engine.models.checkpoint import load_checkpoint
from hpatool.registry import Registry
from tests.support import SIZE, TRAIN, Invoke, Workspace, one_line_error, register


@pytest.fixture(scope="module")
def synth_dir(synth_data: Callable[..., Path]) -> Path:
    return synth_data(40, SIZE, seed=3)


def _train(cli: Invoke, out: Path, name: str, *extra: str) -> None:
    result = cli(
        "train", "--dataset", "syn", *TRAIN, "--epochs", "2", "--workers", "0", "--out", out,
        "--name", name, *extra,
    )  # fmt: skip
    assert result.exit_code == 0, result.output


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ema_is_what_is_validated_and_saved_and_resumes_exactly(
    cli: Invoke, home: Path, synth_dir: Path, tmp_path: Path
) -> None:
    register(cli, synth_dir)
    out = tmp_path / "runs"
    _train(cli, out, "plain", "--augment", "light", "--ema", "0")
    _train(cli, out, "ema", "--augment", "light", "--ema", "0.9")
    plain = load_checkpoint(out / "plain" / "checkpoint-last.pt")
    ema = load_checkpoint(out / "ema" / "checkpoint-last.pt")
    # the average does not touch training: the raw weights are the plain run's, bit for bit
    assert _same(ema["raw_model"], plain["model"])
    assert not _same(ema["model"], ema["raw_model"])
    assert ema["ema"] == {"decay": 0.9, "updates": ema["step"]}
    assert "raw_model" not in plain
    # what is validated is the average: other validation losses than the plain run's
    assert [r["val_loss"] for r in ema["history"]] != [r["val_loss"] for r in plain["history"]]
    config = json.loads((out / "ema" / "config.json").read_text())
    assert config["options"]["ema"] == 0.9 and config["options"]["augment"] == "light"

    # stopped in the middle of epoch 1, resumed: the same average and raw weights
    stopped = cli(
        "train", "--dataset", "syn", *TRAIN, "--epochs", "2", "--workers", "0", "--out", out,
        "--name", "ema2", "--augment", "light", "--ema", "0.9", "--max-steps", "2",
    )  # fmt: skip
    assert stopped.exit_code == 0, stopped.output
    resumed = cli("train", "--resume", "--name", "ema2", "--workers", "0")
    assert resumed.exit_code == 0, resumed.output
    again = load_checkpoint(out / "ema2" / "checkpoint-last.pt")
    assert _same(again["model"], ema["model"]) and _same(again["raw_model"], ema["raw_model"])
    assert again["ema"] == ema["ema"]

    # the average is part of what a run is
    text = one_line_error(cli("train", "--resume", "--name", "plain", "--ema", "0.9"))
    assert "--ema 0.9 differs from the run's 0.0" in text


def test_a_run_from_before_ema_existed_resumes_without_one(
    cli: Invoke, home: Path, synth_dir: Path, tmp_path: Path
) -> None:
    """--ema is on by default now; a run whose stored options predate it had none, and a
    resume must not turn it on (nor a new fold of its experiment)."""
    from hpatool.engine.models.checkpoint import save_checkpoint

    register(cli, synth_dir)
    out = tmp_path / "runs"
    _train(cli, out, "old", "--ema", "0", "--max-steps", "2", "--experiment", "olds")
    last = out / "old" / "checkpoint-last.pt"
    doc = load_checkpoint(last)
    del doc["config"]["options"]["ema"], doc["config"]["options"]["augment"]
    save_checkpoint(last, {k: v for k, v in doc.items() if k not in ("format", "version")})
    with Registry.open(home) as reg:
        reg.conn.execute(
            "UPDATE experiments SET options = json_remove(options, '$.ema') WHERE name = 'olds'"
        )
        reg.conn.commit()
    resumed = cli("train", "--resume", "--name", "old", "--workers", "0")
    assert resumed.exit_code == 0, resumed.output
    assert "raw_model" not in load_checkpoint(last)
    assert json.loads((out / "old" / "config.json").read_text())["options"]["ema"] == 0.0
    text = one_line_error(
        cli(
            "train", "--dataset", "syn", *TRAIN, "--fold", "1", "--experiment", "olds", "--out", out
        )
    )
    assert "--ema 0.999 differs from the 0.0 of experiment 'olds'" in text


def test_kept_checkpoints_are_averaged_into_a_run_like_any_other(
    cli: Invoke, home: Path, synth_dir: Path, tmp_path: Path
) -> None:
    register(cli, synth_dir)
    out = tmp_path / "runs"
    _train(cli, out, "src", "--epochs", "3", "--keep-checkpoints", "2")
    kept = sorted(p.name for p in (out / "src").glob("checkpoint-epoch-*.pt"))
    assert kept == ["checkpoint-epoch-002.pt", "checkpoint-epoch-003.pt"]
    epoch3 = load_checkpoint(out / "src" / kept[1])
    assert "optimizer" not in epoch3 and epoch3["epoch"] == 3
    assert _same(epoch3["model"], load_checkpoint(out / "src" / "checkpoint-last.pt")["model"])

    text = one_line_error(cli("runs", "average", "src", "--last", "3", "--name", "x"))
    assert "kept 2 epoch checkpoints (epochs 2, 3)" in text and "--last 2 or fewer" in text
    result = cli(
        "runs", "average", "src", "--last", "2", "--name", "src-swa", "--workers", "0",
        "--device", "cpu", "--experiment", "swa", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["epochs"] == [2, 3] and doc["bn_layers"] > 0 and doc["experiment_created"]
    folder = out / "src-swa"
    assert Path(doc["folder"]) == folder
    assert {p.name for p in folder.iterdir()} == {
        "config.json", "checkpoint-best.pt", "metrics.csv", "thresholds.json", "oof.csv",
    }  # fmt: skip

    # the weights: the mean of the two kept epochs; BatchNorm's statistics recomputed
    averaged = load_checkpoint(folder / "checkpoint-best.pt")
    epoch2 = load_checkpoint(out / "src" / kept[0])
    for key, value in averaged["model"].items():
        if "running_" in key or "num_batches" in key:
            continue
        mean = (epoch2["model"][key].double() + epoch3["model"][key].double()) / 2
        assert torch.allclose(value.double(), mean, atol=1e-6), key
    means = [k for k in averaged["model"] if k.endswith("running_mean")]
    assert all(
        not torch.allclose(
            averaged["model"][k], (epoch2["model"][k] + epoch3["model"][k]) / 2, atol=1e-4
        )
        for k in means[:3]
    )
    _assert_batchnorm_recomputed(home, averaged, folder)

    # scored and registered like a run; used by predict and evaluate; not trained further
    ids = [row["Id"] for row in csv.DictReader((folder / "oof.csv").open())]
    assert ids == [row["Id"] for row in csv.DictReader((out / "src" / "oof.csv").open())]
    thresholds = json.loads((folder / "thresholds.json").read_text())
    assert thresholds["tuned_on"] == "oof" and len(thresholds["thresholds"]) == 28
    with Registry.open(home) as reg:
        record = reg.run("src-swa")
        assert record.status == "done" and record.experiment == "swa" and record.fold == 0
        assert record.config["averaged"]["from"] == "src"
    shown = cli("experiments", "show", "swa")
    assert shown.exit_code == 0 and "src-swa" in shown.stdout
    evaluated = cli("evaluate", "--run", "src-swa", "--dataset", "syn", "--fold", "0",
                    "--workers", "0", "--json")  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    predicted = cli("predict", "--run", "src-swa", "--dataset", "syn", "--workers", "0",
                    "--out", tmp_path / "sub.csv")  # fmt: skip
    assert predicted.exit_code == 0 and (tmp_path / "sub.csv").is_file()
    text = one_line_error(cli("train", "--resume", "--name", "src-swa"))
    assert "is the mean of epochs of run 'src'" in text
    text = one_line_error(cli("runs", "average", "src", "--last", "2", "--name", "src-swa"))
    assert "already exists" in text
    assert not any(p.name.startswith(".") for p in out.iterdir())  # no staging folder left
    removed = cli("runs", "remove", "src", "--files")
    assert removed.exit_code == 0, removed.output
    assert not (out / "src").exists()  # its kept epoch checkpoints went with it


def _assert_batchnorm_recomputed(home: Path, averaged: dict, folder: Path) -> None:
    """The first BatchNorm layer's running mean is the mean over the batches of its inputs
    when the training samples (with the run's augmentation draw) go through the averaged
    model: what ``update_bn`` computes (a cumulative average of batch means)."""
    from torch import nn
    from torch.utils.data import DataLoader

    from hpatool.data.samples import HpaDataset, train_val_items
    from hpatool.data.transforms import normalize
    from hpatool.engine.models.checkpoint import build_model_from_checkpoint

    options = averaged["config"]["options"]
    with Registry.open(home) as reg:
        parts = train_val_items(reg, options["datasets"], options["fold"])
    model, spec = build_model_from_checkpoint(averaged)
    bn = next(m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    seen: list[torch.Tensor] = []
    bn.register_forward_pre_hook(lambda _m, args: seen.append(args[0].mean(dim=(0, 2, 3))))
    dataset = HpaDataset(parts.train, options["crop"], augment=options["augment"])
    seeds = np.random.default_rng(options["seed"]).integers(0, 2**31, len(dataset))
    keys = [(i, int(s)) for i, s in enumerate(seeds)]
    with torch.no_grad():
        for x, _ in DataLoader(dataset, batch_size=options["batch_size"], sampler=keys):
            model(normalize(x, spec.mean, spec.std))
    expected = torch.stack(seen).mean(dim=0)
    assert torch.allclose(bn.running_mean, expected, atol=1e-5)


def test_prior_thresholds_match_the_training_shares_on_the_scored_images(
    cli: Invoke, trained_run: Workspace, tmp_path: Path
) -> None:
    out = trained_run.runs  # run r1 on the 24 samples of 'syn': shares 0.5 and 0.25 are whole
    sub = tmp_path / "sub.csv"
    result = cli("predict", "--run", "r1", "--dataset", "syn", "--workers", "0", "--out", sub,
                 "--threshold", "prior")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Thresholds matched to the class shares of the training data" in result.stdout
    frequency = np.array(json.loads((out / "r1" / "config.json").read_text())["class_frequency"])
    rows = list(csv.DictReader(sub.open()))
    counts = np.zeros(28)
    for row in rows:
        for c in row["Predicted"].split():
            counts[int(c)] += 1
    assert np.all(np.abs(counts - frequency * len(rows)) <= 1.0)
    assert any(not row["Predicted"] for row in rows) or counts.sum() > 0  # no top-up forced

    shares = tmp_path / "shares.csv"
    shares.write_text("class,share\nNucleoplasm,0.5\n25,0.25\n", encoding="utf-8")
    result = cli("predict", "--run", "r1", "--dataset", "syn", "--workers", "0", "--out", sub,
                 "--threshold", f"prior={shares}")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(sub.open()))
    assert len(rows) == 24
    assert sum("0" in row["Predicted"].split() for row in rows) == 12
    assert sum("25" in row["Predicted"].split() for row in rows) == 6

    text = one_line_error(cli("predict", "--run", "r1", "--dataset", "syn", "--out", sub,
                              "--threshold", "prior", "--min-labels", "1"))  # fmt: skip
    assert "--min-labels 1 would add labels beyond the class shares" in text
    text = one_line_error(
        cli("evaluate", "--run", "r1", "--dataset", "syn", "--threshold", "prior")
    )
    assert "evaluate scores with tuned thresholds" in text
    shares.write_text("class,share\n0,2\n", encoding="utf-8")
    text = one_line_error(cli("predict", "--run", "r1", "--dataset", "syn", "--workers", "0",
                              "--out", sub, "--threshold", f"prior={shares}"), code=1)  # fmt: skip
    assert f"{shares}, line 2: share '2' of class '0'" in text


def test_datasets_stored_at_different_sizes_are_never_mixed(
    cli: Invoke, home: Path, synth_data: Callable[..., Path], tmp_path: Path
) -> None:
    register(cli, synth_data(40, SIZE, seed=3))
    small = synth_data(12, 40, seed=4)
    assert cli("datasets", "add", "small", "--labels", small / "labels.csv", "--root",
               small).exit_code == 0  # fmt: skip
    text = one_line_error(
        cli(
            "train",
            "--dataset",
            "syn",
            "--dataset",
            "small",
            *TRAIN,
            "--workers",
            "0",
            "--out",
            tmp_path / "runs",
        )
    )
    assert "dataset 'syn' stores 48x48 images and dataset 'small' 40x40" in text
    assert "--size 48" in text


def test_a_1024px_dataset_from_the_real_full_resolution_fields_trains_at_crop_512(
    cli: Invoke, home: Path, real_samples: Path, tmp_path: Path
) -> None:
    """The documented high-resolution path: ``preprocess --size 1024`` of 2048 px originals,
    then ``train --crop 512``; the 512 px Kaggle images are refused beside it."""
    src = real_samples / "fullres_png"
    out = tmp_path / "hpa1024"
    result = cli("preprocess", src, "--out", out, "--size", "1024", "--workers", "1",
                 "--name", "full1024", "--labels", src / "labels.csv")  # fmt: skip
    assert result.exit_code == 0, result.output
    from PIL import Image

    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 12
    with Image.open(pngs[0]) as img:
        assert img.size == (1024, 1024) and img.mode == "L"
    assert cli("split", "full1024", "--folds", "3").exit_code == 0
    runs = tmp_path / "runs"
    trained = cli("train", "--dataset", "full1024", "--arch", "resnet10t", "--crop", "512",
                  "--batch-size", "1", "--epochs", "1", "--device", "cpu", "--workers", "0",
                  "--eval-crops", "1", "--out", runs, "--name", "hi")  # fmt: skip
    assert trained.exit_code == 0, trained.output
    config = json.loads((runs / "hi" / "config.json").read_text())
    assert config["image_sizes"] == {"full1024": [1024, 1024]}
    assert "4 windows of 512px covering the 1024x1024 image" in trained.stdout

    kaggle = real_samples / "kaggle_train_512"
    assert cli("datasets", "add", "k512", "--labels", kaggle / "labels.csv", "--root",
               kaggle).exit_code == 0  # fmt: skip
    text = one_line_error(cli("train", "--dataset", "full1024", "--dataset", "k512",
                              "--crop", "512", "--device", "cpu", "--out", runs))  # fmt: skip
    assert "stores 1024x1024 images and dataset 'k512' 512x512" in text
