"""``hpatool train --config FILE``: options from a TOML file or a run's ``config.json``, flags
winning over the file, the file taking part in the ``--resume`` rules, and one-line errors for
a bad file; ``--weight-decay``; the defaults the help shows and ``fit()`` from Python uses."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from hpatool.engine.config import TrainConfig, default_workers
from hpatool.engine.training.fit import fit
from tests.support import ARCH, SIZE, Invoke, one_line_error, register


@pytest.fixture(scope="module")
def synth_dir(synth_data: Callable[..., Path]) -> Path:
    return synth_data(24, SIZE, seed=2)


def _options(run: Path) -> dict[str, object]:
    return json.loads((run / "config.json").read_text())["options"]


def test_options_from_a_toml_file_and_flags_win(
    cli: Invoke, home: Path, synth_dir: Path, tmp_path: Path
) -> None:
    register(cli, synth_dir)
    out = tmp_path / "runs"
    toml = tmp_path / "train.toml"
    toml.write_text(
        f"""
[train]
dataset = ["syn"]
arch = "{ARCH}"
crop = 32
batch-size = 8
device = "cpu"
lr = 3e-3
weight_decay = 0.05
epochs = 3
workers = 0
max-steps = 1
loss = "focal"
oversample = "none"
out = "{out}"
"""
    )
    res = cli("train", "--config", toml, "--epochs", "2", "--weight-decay", "0.02", "--name", "a")
    assert res.exit_code == 0, res.output
    options = _options(out / "a")
    assert options["datasets"] == ["syn"] and options["arch"] == ARCH
    assert (options["crop"], options["batch_size"], options["lr"]) == (32, 8, 3e-3)
    assert (options["loss"], options["oversample"], options["max_steps"]) == ("focal", "none", 1)
    assert options["epochs"] == 2 and options["weight_decay"] == 0.02  # the flags win

    # a run's config.json given back: the same options, but for the flags given
    res = cli("train", "--config", out / "a" / "config.json", "--name", "b")
    assert res.exit_code == 0, res.output
    assert _options(out / "b") == {**options, "name": "b"}

    # a top-level table, `datasets` spelled as the field is
    plain = tmp_path / "plain.toml"
    plain.write_text(
        f'datasets = ["syn"]\narch = "{ARCH}"\ncrop = 32\nbatch_size = 8\ndevice = "cpu"\n'
        f'workers = 0\nmax_steps = 1\nout = "{out}"\nname = "c"\n'
    )
    res = cli("train", "--config", plain)
    assert res.exit_code == 0, res.output
    assert _options(out / "c")["datasets"] == ["syn"] and _options(out / "c")["name"] == "c"

    # the file's values take part in the --resume rules as flags do
    other = tmp_path / "other.toml"
    other.write_text("crop = 24\n")
    text = one_line_error(cli("train", "--resume", "--name", "a", "--config", other))
    assert "--crop 24 differs from the run's 32" in text
    same = tmp_path / "same.toml"
    same.write_text("crop = 32\nepochs = 2\nmax-steps = 2\n")
    res = cli("train", "--resume", "--name", "a", "--config", same)
    assert res.exit_code == 0, res.output
    assert "(resumed)" in res.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('dataset = ["syn"]\nbatch_sise = 8\n', "unknown option 'batch_sise'; did you mean"),
        ('dataset = ["syn"]\nepochs = "ten"\n', "epochs = 'ten' is not a valid int"),
        ('dataset = ["syn"]\namp = 1\n', "amp = 1 is not a valid bool"),
        ("dataset = [", "not valid TOML"),
    ],
)
def test_a_bad_config_file_is_a_one_line_usage_error(
    cli: Invoke, tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "train.toml"
    path.write_text(text)
    line = one_line_error(cli("train", "--config", path, "--out", tmp_path / "runs"), 2)
    assert line.startswith(f"error: --config {path}") and expected in line
    assert not (tmp_path / "runs").exists()


def test_a_missing_config_file(cli: Invoke, tmp_path: Path) -> None:
    line = one_line_error(cli("train", "--config", tmp_path / "nope.toml"), 2)
    assert "no such file" in line


def test_help_shows_the_defaults_of_train_config(cli: Invoke) -> None:
    res = cli("train", "--help")
    assert res.exit_code == 0
    text = " ".join(res.stdout.split())
    for phrase in (
        "spans them all (default: 10)",
        "per process (default: 32)",
        "(default: resnet50)",
        "AdamW weight decay (default: 0.01)",
        "worker processes (default: min(4, CPUs))",
        "Mixed precision on CUDA (default: on)",
        "--config",
    ):
        assert phrase in text, phrase


def test_fit_from_python_takes_the_defaults_the_cli_takes(
    cli: Invoke, home: Path, synth_dir: Path, tmp_path: Path
) -> None:
    register(cli, synth_dir)
    out = tmp_path / "runs"
    result = fit(
        {"datasets": ["syn"], "arch": ARCH, "crop": 32, "batch_size": 8, "device": "cpu",
         "max_steps": 1, "out": out, "name": "py"},
        home=home,
    )  # fmt: skip
    assert result.status == "stopped" and result.steps == 1
    options = _options(out / "py")
    assert options["workers"] == default_workers() and options["epochs"] == 10
    assert TrainConfig(datasets=["syn"]).workers == default_workers()
