"""``PredictConfig``: the one carrier of predict/evaluate options, its checks, and
``--config FILE`` under the command line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hpatool.engine.config import PredictConfig, parse_threshold, predict_config
from hpatool.errors import NotFound, UsageError
from tests.support import Invoke, one_line_error


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_file_under_flags_over_defaults(tmp_path: Path) -> None:
    toml = write(tmp_path / "p.toml", 'run = "r1"\ndataset = "te"\ncrops = 3\nbatch-size = 4\n')
    config = predict_config({"crops": 5, "agg": None, "out": tmp_path / "s.csv"}, toml)
    assert (config.run, config.dataset, config.crops, config.batch_size) == (["r1"], "te", 5, 4)
    # a view option not given is None: each model's stored view (views.resolve_view)
    assert config.agg is None and config.tta is None
    assert config.out == str(tmp_path / "s.csv")


def test_sections(tmp_path: Path) -> None:
    toml = write(
        tmp_path / "p.toml",
        '[predict]\nrun = "r1"\ndataset = "te"\nagg = "mean"\n'
        '[evaluate]\nrun = "r1"\ndataset = "tr"\nfold = 2\nthreshold = 0.3\n',
    )
    predict = predict_config({}, toml, "predict")
    evaluate = predict_config({}, toml, "evaluate")
    assert (predict.dataset, predict.agg) == ("te", "mean")
    assert (evaluate.dataset, evaluate.fold, evaluate.threshold) == ("tr", 2, "0.3")
    only_predict = write(tmp_path / "q.toml", '[predict]\ncheckpoint = "m.pt"\ndataset = "te"\n')
    assert predict_config({}, only_predict, "evaluate").checkpoint == "m.pt"


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"unknown option 'crop'; did you mean 'crops'\?"):
        predict_config({}, write(tmp_path / "a.toml", "crop = 2\n"))
    with pytest.raises(UsageError, match="crops = 'many' is not a valid int"):
        predict_config({}, write(tmp_path / "b.toml", 'crops = "many"\n'))
    with pytest.raises(NotFound, match="no such file"):
        predict_config({}, tmp_path / "missing.toml")


SOURCES = (
    "give --run RUN or --experiment EXP (repeat them, mixed, for an ensemble; RUN:WEIGHT to "
    "weigh one), or --checkpoint PATH"
)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dataset": None}, "give the dataset to score with --dataset NAME"),
        ({"run": []}, SOURCES),
        ({"checkpoint": "m.pt"}, SOURCES),
        ({"experiment": "cv1", "run": [], "checkpoint": "m.pt"}, SOURCES),
        (
            {"weight": [1.0], "run": [], "checkpoint": "m.pt"},
            "--weight is for ensembles of --run / --experiment models",
        ),
        ({"crops": 0}, "--crops 0 is invalid; use 1 (the centre crop) or more"),
        (
            {"tta": "rotate"},
            "--tta rotate is invalid; use one of grid, grid+flips, crops, crops+flips, flips",
        ),
        ({"crop_size": 4}, "--crop-size 4 is too small; use --crop-size 8 or more"),
        ({"agg": "median"}, "--agg 'median' is invalid; use max or mean"),
        (
            {"threshold": "abc"},
            "--threshold 'abc' is invalid; use 'auto', 'prior', 'prior=FILE.csv', a number in "
            "(0, 1) or a CSV file of per-class thresholds (class,threshold)",
        ),
        ({"threshold": "1.5"}, "--threshold 1.5 is out of range; use a number in (0, 1)"),
        ({"min_labels": 29}, "--min-labels 29 is invalid; use 0..28"),
        ({"batch_size": 0}, "--batch-size 0 is invalid; use 1 or more"),
        ({"device": "tpu"}, "--device tpu is invalid; use one of auto, cpu, cuda"),
        ({"seed": -1}, "--seed -1 is invalid; use a non-negative integer"),
    ],
)
def test_validate_messages(options: dict[str, object], message: str) -> None:
    config = PredictConfig(**{"dataset": "te", "run": "r1", **options})  # type: ignore[arg-type]
    with pytest.raises(UsageError) as info:
        config.validate()
    assert str(info.value) == message


def test_parse_threshold() -> None:
    assert parse_threshold("auto") is None and parse_threshold(" AUTO ") is None
    assert parse_threshold("0.3") == 0.3 and parse_threshold(0.25) == 0.25


# ------------------------------------------------------------------ the command line, no model


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_unknown_config_key_is_one_line(cli: Invoke, tmp_path: Path, command: str) -> None:
    toml = write(tmp_path / "p.toml", 'run = "r1"\ndataset = "te"\ncrop_sise = 32\n')
    line = one_line_error(cli(command, "--config", toml), 2)
    assert f"--config {toml}: unknown option 'crop_sise'; did you mean 'crop-size'?" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.toml"]


def test_config_values_are_checked_like_flags(cli: Invoke, tmp_path: Path) -> None:
    toml = write(tmp_path / "p.toml", 'run = "r1"\ndataset = "te"\ncrops = 0\n')
    assert "--crops 0 is invalid; use 1 (the centre crop) or more" in one_line_error(
        cli("predict", "--config", toml), 2
    )
    # a flag wins over the file, so the bad value in it no longer matters
    line = one_line_error(cli("predict", "--config", toml, "--crops", "2"), 2)
    assert "unknown dataset 'te'" in line, line


def test_flips_have_eight_views() -> None:
    """``--tta flips`` / ``grid+flips`` put each window under the 8 flips and rotations: a
    ninth is refused, for prediction and for a run's out-of-fold view, rather than silently
    dropped."""
    from hpatool.engine.config import TrainConfig

    PredictConfig(dataset="d", run=["r"], tta="flips", crops=8).validate()
    for tta in ("flips", "grid+flips"):
        with pytest.raises(
            UsageError,
            match=f"--crops 9 is more than the 8 flips/rotations of --tta {re.escape(tta)}",
        ):
            PredictConfig(dataset="d", run=["r"], tta=tta, crops=9).validate()
    PredictConfig(dataset="d", run=["r"], tta="crops+flips", crops=9).validate()
    PredictConfig(dataset="d", run=["r"], tta="grid", crops=9).validate()  # not used by grid
    with pytest.raises(UsageError, match="--eval-crops 12 is more than the 8 flips/rotations"):
        TrainConfig(datasets=["d"], arch="resnet10t", tta="flips", eval_crops=12).validate()
