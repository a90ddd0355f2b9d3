"""``hpatool predict`` / ``evaluate`` end to end on a small trained run."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from hpatool.cli import app
from hpatool.imaging import save_png
from hpatool.synth import generate_sample, sample_targets, synth_dataset
from tests.support import REPO

SIZE = 64
N_TEST = 20


def run_cli(home: Path, *args: object) -> object:
    return CliRunner().invoke(app, ["--home", str(home), *[str(a) for a in args]])


@pytest.fixture(scope="module")
def trained(submission_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A registry with a 1-epoch resnet18 run on synthetic data and a test set whose ids are the
    first rows of the real sample_submission.csv, in that file's order."""
    base = tmp_path_factory.mktemp("predict")
    home = base / "home"
    train_dir = base / "train"
    synth_dataset(train_dir, samples=48, size=SIZE, seed=3)
    test_dir = base / "test"
    test_dir.mkdir()
    lines = submission_csv.read_text().splitlines()[: N_TEST + 1]
    sub = base / "sample_submission_head.csv"
    sub.write_text("\n".join(lines) + "\n")
    rng = np.random.default_rng(0)
    for line, labels in zip(lines[1:], sample_targets(N_TEST, rng), strict=True):
        arr = generate_sample(labels, SIZE, rng)
        for ch, colour in zip(arr, ("red", "green", "blue", "yellow"), strict=True):
            save_png(ch, test_dir / f"{line.split(',')[0]}_{colour}.png")
    for args in (
        ("datasets", "add", "tr", "--labels", train_dir / "labels.csv", "--root", train_dir),
        ("datasets", "add", "te", "--labels", sub, "--root", test_dir),
        ("split", "tr", "--folds", "3"),
        (
            "train",
            "--dataset",
            "tr",
            "--arch",
            "resnet18",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--crop",
            "48",
            "--out",
            base / "runs",
            "--name",
            "r1",
            "--workers",
            "0",
        ),
    ):
        res = run_cli(home, *args)
        assert res.exit_code == 0, (args, res.output)  # type: ignore[attr-defined]
    return {"home": home, "base": base, "sub": sub, "test_dir": test_dir}


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as fh:
        return list(csv.reader(fh))


def test_submission_format_and_order(trained: dict[str, Path], tmp_path: Path) -> None:
    out, probs = tmp_path / "submission.csv", tmp_path / "probs.csv"
    res = run_cli(
        trained["home"],
        "predict",
        "--run-name",
        "r1",
        "--dataset",
        "te",
        "--out",
        out,
        "--probs",
        probs,
        "--crops",
        "4",
    )
    assert res.exit_code == 0, res.output  # type: ignore[attr-defined]
    rows = read_rows(out)
    assert rows[0] == ["Id", "Predicted"]
    expected_ids = [line.split(",")[0] for line in trained["sub"].read_text().splitlines()[1:]]
    assert [r[0] for r in rows[1:]] == expected_ids
    for _, predicted in rows[1:]:
        labels = [int(v) for v in predicted.split()]
        assert labels == sorted(set(labels)) and labels and all(0 <= v < 28 for v in labels)
    prow = read_rows(probs)
    assert prow[0] == ["Id", *[str(c) for c in range(28)]]
    assert [r[0] for r in prow[1:]] == expected_ids
    values = np.array([[float(v) for v in r[1:]] for r in prow[1:]])
    assert values.shape == (N_TEST, 28) and ((values >= 0) & (values <= 1)).all()


def test_max_is_at_least_mean_and_seeds_repeat(trained: dict[str, Path], tmp_path: Path) -> None:
    def probs(agg: str, seed: int, name: str) -> np.ndarray:
        p = tmp_path / name
        res = run_cli(
            trained["home"],
            "predict",
            "--run",
            "r1",
            "--dataset",
            "te",
            "--agg",
            agg,
            "--seed",
            seed,
            "--out",
            tmp_path / f"sub-{name}",
            "--probs",
            p,
            "--crops",
            "4",
            "--tta",
            "crops",
            "--crop-size",
            "32",
        )
        assert res.exit_code == 0, res.output  # type: ignore[attr-defined]
        return np.array([[float(v) for v in r[1:]] for r in read_rows(p)[1:]])

    p_max, p_mean = probs("max", 0, "max.csv"), probs("mean", 0, "mean.csv")
    assert (p_max >= p_mean - 1e-6).all()
    assert (p_max > p_mean + 1e-6).any()  # the crops really differ
    again = probs("max", 0, "max2.csv")
    assert (tmp_path / "max.csv").read_bytes() == (tmp_path / "max2.csv").read_bytes()
    assert (tmp_path / "sub-max.csv").read_bytes() == (tmp_path / "sub-max2.csv").read_bytes()
    assert np.array_equal(again, p_max)
    other = probs("max", 1, "max-seed1.csv")
    assert not np.array_equal(other, p_max)


def test_min_labels(trained: dict[str, Path], tmp_path: Path) -> None:
    def labels(*extra: object) -> list[list[int]]:
        out = tmp_path / "s.csv"
        res = run_cli(
            trained["home"],
            "predict",
            "--run",
            "r1",
            "--dataset",
            "te",
            "--out",
            out,
            "--crops",
            "2",
            *extra,
        )
        assert res.exit_code == 0, res.output  # type: ignore[attr-defined]
        return [[int(v) for v in r[1].split()] for r in read_rows(out)[1:]]

    assert all(len(lab) == 0 for lab in labels("--threshold", "0.999", "--min-labels", "0"))
    assert all(len(lab) == 3 for lab in labels("--threshold", "0.999", "--min-labels", "3"))
    assert all(len(lab) == 28 for lab in labels("--threshold", "0.001", "--min-labels", "1"))


def test_bad_input(submission_csv: Path, trained: dict[str, Path], tmp_path: Path) -> None:
    home = trained["home"]
    res = run_cli(home, "predict", "--run", "nope", "--dataset", "te")
    assert res.exit_code == 2
    assert "unknown run 'nope'" in res.stderr and "(known: r1)" in res.stderr  # type: ignore
    run_cli(home, "datasets", "add", "labels-only", "--labels", submission_csv)
    res = run_cli(home, "predict", "--run", "r1", "--dataset", "labels-only")
    assert res.exit_code == 2 and "has no image folder" in res.stderr  # type: ignore
    res = run_cli(
        home,
        "predict",
        "--run-name",
        "r1",
        "--dataset",
        "te",
        "--crop-size",
        "65",
        "--out",
        tmp_path / "x.csv",
    )
    assert res.exit_code == 2
    assert "--crop-size 65 is larger than the 64x64 images" in res.stderr  # type: ignore
    res = run_cli(home, "predict", "--dataset", "te")
    assert res.exit_code == 2 and "give --run RUN or --experiment EXP (repeat them" in res.stderr
    res = run_cli(home, "predict", "--run", "r1", "--dataset", "te", "--threshold", "abc")
    assert res.exit_code == 2 and "--threshold 'abc' is invalid" in res.stderr  # type: ignore
    res = run_cli(home, "predict", "--checkpoint", tmp_path / "none.pt", "--dataset", "te")
    assert res.exit_code == 2 and "no such checkpoint file" in res.stderr  # type: ignore
    assert not (tmp_path / "x.csv").exists()


def test_corrupt_image_gives_partial_file(trained: dict[str, Path], tmp_path: Path) -> None:
    home = trained["home"]
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in trained["test_dir"].iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    bad_id = trained["sub"].read_text().splitlines()[3].split(",")[0]
    green = broken / f"{bad_id}_green.png"
    green.write_bytes(green.read_bytes()[:-40])  # a good header, a cut body: fails while scored
    assert (
        run_cli(
            home, "datasets", "add", "broken", "--labels", trained["sub"], "--root", broken
        ).exit_code
        == 0
    )  # type: ignore[attr-defined]
    out = tmp_path / "submission.csv"
    res = run_cli(
        home, "predict", "--run", "r1", "--dataset", "broken", "--out", out, "--crops", "2"
    )
    assert res.exit_code == 1
    assert bad_id in res.stderr and "submission.partial.csv" in res.stderr  # type: ignore
    assert not out.exists()
    rows = read_rows(tmp_path / "submission.partial.csv")
    assert len(rows) == N_TEST and bad_id not in [r[0] for r in rows]
    (tmp_path / "submission.partial.csv").unlink()
    res = run_cli(home, "predict", "--run", "r1", "--dataset", "broken", "--out", out, "--strict")
    assert res.exit_code == 1 and bad_id in res.stderr  # type: ignore[attr-defined]
    assert not out.exists() and not (tmp_path / "submission.partial.csv").exists()


def test_evaluate_matches_sklearn(trained: dict[str, Path], tmp_path: Path) -> None:
    from sklearn.metrics import f1_score

    from hpatool.engine.config import PredictConfig
    from hpatool.engine.scoring.evaluate import evaluate_run
    from hpatool.registry import Registry

    with Registry.open(trained["home"]) as reg:
        for agg in ("max", "mean"):
            config = PredictConfig(dataset="tr", run=["r1"], crops=3, agg=agg)
            result = evaluate_run(reg, config)
            assert result.fold == 0  # the run's validation fold by default
            assert result.y_true is not None and result.y_pred is not None
            expected = f1_score(result.y_true, result.y_pred, average="macro", zero_division=0)
            assert result.macro_f1 == pytest.approx(expected, abs=1e-12)
    plot = tmp_path / "f1.png"
    res = run_cli(
        trained["home"],
        "evaluate",
        "--run",
        "r1",
        "--dataset",
        "tr",
        "--json",
        "--plot",
        plot,
        "--agg",
        "mean",
    )
    assert res.exit_code == 0, res.output  # type: ignore[attr-defined]
    doc = json.loads(res.stdout)  # type: ignore[attr-defined]
    assert doc["agg"] == "mean" and doc["fold"] == 0 and len(doc["classes"]) == 28
    assert set(doc["classes"][0]) == {"index", "name", "precision", "recall", "f1", "support"}
    assert doc["macro_f1"] == pytest.approx(np.mean([c["f1"] for c in doc["classes"]]))
    with Image.open(plot) as img:
        assert img.format == "PNG"


def test_config_file_and_flags_that_win(trained: dict[str, Path], tmp_path: Path) -> None:
    home = trained["home"]
    from_file, from_flag = tmp_path / "from-file.csv", tmp_path / "from-flag.csv"
    toml = tmp_path / "scoring.toml"
    toml.write_text(
        "[predict]\n"
        'run = "r1"\ndataset = "te"\ncrops = 2\nthreshold = 0.999\nmin-labels = 0\n'
        f"out = {json.dumps(str(from_file))}\n"
        '[evaluate]\nrun = "r1"\ndataset = "tr"\ncrops = 2\nagg = "mean"\n'
    )
    res = run_cli(home, "predict", "--config", toml)
    assert res.exit_code == 0, res.output  # type: ignore[attr-defined]
    rows = read_rows(from_file)
    assert len(rows) == N_TEST + 1 and all(r[1] == "" for r in rows[1:])  # 0.999, 0 labels
    from_file.unlink()
    res = run_cli(home, "predict", "--config", toml, "--out", from_flag, "--min-labels", "2")
    assert res.exit_code == 0, res.output  # type: ignore[attr-defined]
    assert not from_file.exists()
    assert all(len(r[1].split()) == 2 for r in read_rows(from_flag)[1:])
    res = run_cli(home, "evaluate", "--config", toml, "--json")
    assert res.exit_code == 0, res.output  # type: ignore[attr-defined]
    doc = json.loads(res.stdout)  # type: ignore[attr-defined]
    assert (doc["dataset"], doc["agg"], doc["crops"], doc["fold"]) == ("tr", "mean", 2, 0)
    res = run_cli(home, "evaluate", "--config", toml, "--json", "--agg", "max", "--fold", "1")
    assert res.exit_code == 0, res.output  # type: ignore[attr-defined]
    doc = json.loads(res.stdout)  # type: ignore[attr-defined]
    assert (doc["agg"], doc["fold"]) == ("max", 1)


@pytest.mark.slow
def test_torchrun_two_processes_give_the_same_file(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    home = trained["home"]
    single = tmp_path / "single.csv"
    res = run_cli(
        home,
        "predict",
        "--run-name",
        "r1",
        "--dataset",
        "te",
        "--out",
        single,
        "--probs",
        tmp_path / "single-probs.csv",
        "--crops",
        "3",
        "--batch-size",
        "4",
    )
    assert res.exit_code == 0, res.output  # type: ignore[attr-defined]
    env = {**os.environ, "HPATOOL_HOME": str(home), "OMP_NUM_THREADS": "1"}
    double = tmp_path / "double.csv"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "hpatool",
        "predict",
        "--run-name",
        "r1",
        "--dataset",
        "te",
        "--out",
        str(double),
        "--probs",
        str(tmp_path / "double-probs.csv"),
        "--crops",
        "3",
        "--batch-size",
        "4",
        "--device",
        "cpu",
    ]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert double.read_bytes() == single.read_bytes()
    assert (tmp_path / "double-probs.csv").read_bytes() == (
        tmp_path / "single-probs.csv"
    ).read_bytes()
