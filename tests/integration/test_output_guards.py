"""No command writes over the registry, a registered dataset's label CSV or images, or one of its
own inputs, and an output in a folder that takes no new files is refused: each is one line,
exit 2, before any work (issue 9)."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import Result

from hpatool import outputs
from hpatool.engine.scoring import ensemble as ensemble_mod
from hpatool.registry import REGISTRY_FILE
from tests.support import RUN_CROPS, TRAIN, Workspace, one_line_error, run_cli

FAST = ("--crops", str(RUN_CROPS), "--device", "cpu", "--workers", "0")  # the run's view
ONE_STEP = ("--epochs", "1", "--max-steps", "1", "--workers", "0")


@dataclass(frozen=True)
class Setup:
    home: Path
    data: Path  # the images and labels.csv of dataset 'syn'
    runs: Path  # holds run 'r1'

    @property
    def registry(self) -> Path:
        return self.home / REGISTRY_FILE

    @property
    def labels(self) -> Path:
        return self.data / "labels.csv"

    def first_id(self) -> str:
        return self.labels.read_text().splitlines()[1].split(",")[0]


@pytest.fixture
def setup(trained_run: Workspace) -> Setup:
    """A private copy of the session's dataset 'syn' (its images too: a refusal that failed
    would write over this copy only) and its run 'r1' (see ``trained_run``)."""
    return Setup(trained_run.home, trained_run.data, trained_run.runs)


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any scoring fails loudly: a refusal must come before it."""

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("scoring started")

    monkeypatch.setattr(ensemble_mod, "_score_dataset", boom)


def digests(*paths: Path) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def predict(setup: Setup, *extra: object) -> Result:
    return run_cli(setup.home, "predict", "--run", "r1", "--dataset", "syn", *FAST, *extra)


# --------------------------------------------------------------------------- the registry


@pytest.mark.parametrize("suffix", ["", "-wal", "-shm"])
def test_predict_out_refuses_the_registry(setup: Setup, no_work: None, suffix: str) -> None:
    reg = setup.registry
    target = Path(f"{reg}{suffix}")
    before = digests(reg)
    line = one_line_error(predict(setup, "--out", target), 2)
    assert line == (
        f"error: --out {target} is hpatool's registry ({reg}); write the output to another file"
    )
    assert digests(reg) == before
    assert run_cli(setup.home, "datasets", "list").exit_code == 0


def test_probs_refuses_the_registry_through_a_relative_path(
    setup: Setup, no_work: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(setup.home)
    before = digests(setup.registry)
    line = one_line_error(
        predict(setup, "--out", setup.home / "s.csv", "--probs", "x/../" + REGISTRY_FILE), 2
    )
    assert line == (
        f"error: --probs x/../{REGISTRY_FILE} is hpatool's registry ({setup.registry}); write "
        "the output to another file"
    )
    assert digests(setup.registry) == before and not (setup.home / "s.csv").exists()


# --------------------------------------------------------------- a dataset's labels and images


def test_verify_failures_refuses_the_label_csv(setup: Setup) -> None:
    before = digests(setup.labels)
    res = run_cli(setup.home, "datasets", "verify", "syn", "--failures", setup.labels)
    assert one_line_error(res, 2) == (
        f"error: --failures {setup.labels} is the label CSV of dataset 'syn'; write the output "
        "to another file"
    )
    assert digests(setup.labels) == before


def test_predict_refuses_the_label_csv_and_images(setup: Setup, no_work: None) -> None:
    red = setup.data / f"{setup.first_id()}_red.png"
    before = digests(setup.labels, red)
    line = one_line_error(predict(setup, "--probs", setup.labels), 2)
    assert line == (
        f"error: --probs {setup.labels} is the label CSV of dataset 'syn'; write the output to "
        "another file"
    )
    line = one_line_error(predict(setup, "--out", red), 2)
    assert line == (
        f"error: --out {red} is an image of dataset 'syn' (a channel file in its folder "
        f"{setup.data}); write the output to another file"
    )
    assert digests(setup.labels, red) == before


def test_predict_refuses_a_name_its_partial_file_would_take(setup: Setup, no_work: None) -> None:
    """``--out X`` may write ``X.partial.csv`` and ``X.failures.csv`` too: they are checked."""
    labels = setup.data / "s.failures.csv"
    shutil.copy(setup.labels, labels)
    res = run_cli(setup.home, "datasets", "add", "side", "--labels", labels)
    assert res.exit_code == 0, res.output
    try:
        line = one_line_error(predict(setup, "--out", setup.data / "s.csv"), 2)
        assert line == (
            f"error: --out {labels} is the label CSV of dataset 'side'; write the output to "
            "another file"
        )
    finally:
        assert run_cli(setup.home, "datasets", "remove", "side").exit_code == 0


@pytest.mark.parametrize("command", ["show", "stats"])
def test_pictures_refuse_a_dataset_image(setup: Setup, command: str) -> None:
    green = setup.data / f"{setup.first_id()}_green.png"
    before = digests(green)
    if command == "show":
        res = run_cli(setup.home, "show", "syn", setup.first_id(), "--out", green)
        option = "--out"
    else:
        res = run_cli(setup.home, "stats", "syn", "--plot", green)
        option = "--plot"
    assert one_line_error(res, 2) == (
        f"error: {option} {green} is an image of dataset 'syn' (a channel file in its folder "
        f"{setup.data}); write the output to another file"
    )
    assert digests(green) == before


# --------------------------------------------------------------------- the command's own inputs


def test_predict_refuses_its_config_and_checkpoint(
    setup: Setup, no_work: None, tmp_path: Path
) -> None:
    config = tmp_path / "predict.toml"
    config.write_text("[predict]\ncrops = 1\n")
    res = run_cli(
        setup.home, "predict", "--run", "r1", "--dataset", "syn", "--config", config,
        "--out", config,
    )  # fmt: skip
    assert one_line_error(res, 2) == (
        f"error: --out {config} is the --config file; write the output to another file"
    )
    assert config.read_text() == "[predict]\ncrops = 1\n"
    checkpoint = setup.runs / "r1" / "checkpoint-last.pt"
    before = digests(checkpoint)
    res = run_cli(
        setup.home, "predict", "--checkpoint", checkpoint, "--dataset", "syn", "--out", checkpoint
    )
    assert one_line_error(res, 2) == (
        f"error: --out {checkpoint} is the --checkpoint file; write the output to another file"
    )
    assert digests(checkpoint) == before


def test_evaluate_plot_refuses_a_file_of_its_run(setup: Setup, no_work: None) -> None:
    curves = setup.runs / "r1" / "curves.png"
    before = digests(curves)
    res = run_cli(setup.home, "evaluate", "--run", "r1", "--dataset", "syn", "--plot", curves)
    assert one_line_error(res, 2) == (
        f"error: --plot {curves} is a file of run 'r1'; write the output to another file"
    )
    assert digests(curves) == before


def test_train_refuses_a_run_folder_holding_a_label_csv(setup: Setup, tmp_path: Path) -> None:
    folder = tmp_path / "runs" / "clash"
    folder.mkdir(parents=True)
    labels = folder / "metrics.csv"
    shutil.copy(setup.labels, labels)
    assert run_cli(setup.home, "datasets", "add", "m", "--labels", labels).exit_code == 0
    try:
        before = digests(labels)
        res = run_cli(
            setup.home, "train", "--dataset", "syn", *TRAIN, *ONE_STEP, "--out", tmp_path / "runs",
            "--name", "clash",
        )  # fmt: skip
        assert one_line_error(res, 2) == (
            f"error: --out {labels} is the label CSV of dataset 'm'; write the output to "
            "another file"
        )
        assert digests(labels) == before
        assert sorted(p.name for p in folder.iterdir()) == ["metrics.csv"]
        assert "clash" not in run_cli(setup.home, "runs", "list").stdout
    finally:
        assert run_cli(setup.home, "datasets", "remove", "m").exit_code == 0


# ---------------------------------------------------------------------- folders that take no files


def test_read_only_out_folder_is_refused_before_scoring(
    setup: Setup, no_work: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only mount (root is not stopped by ``chmod``, so the probe is made to fail as a
    read-only file system does)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    real_probe = outputs._probe

    def read_only(where: Path) -> None:
        if where == folder:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        real_probe(where)

    monkeypatch.setattr(outputs, "_probe", read_only)
    line = one_line_error(predict(setup, "--out", folder / "new" / "submission.csv"), 2)
    assert line == (
        f"error: --out {folder}/new/submission.csv: cannot write in {folder} (Read-only file "
        "system); give a path in a writable folder"
    )
    assert list(folder.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in a read-only folder")
def test_unwritable_out_folder_is_refused_before_scoring(
    setup: Setup, no_work: None, tmp_path: Path
) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        line = one_line_error(predict(setup, "--out", folder / "submission.csv"), 2)
    finally:
        folder.chmod(0o755)
    assert line == (
        f"error: --out {folder}/submission.csv: cannot write in {folder} (Permission denied); "
        "give a path in a writable folder"
    )


def test_writable_probe_leaves_nothing_behind(tmp_path: Path) -> None:
    outputs.check_output(tmp_path / "a" / "b.csv", "--out")
    assert list(tmp_path.iterdir()) == []
