"""An image whose header claims more pixels than hpatool's one limit (``imaging.MAX_PIXELS``) is
one bad image like any other unreadable one, named, in every command: ``predict`` scores the
others (partial and failures files), ``train`` stops with one line naming the file, ``datasets
verify`` lists it, and no Pillow warning reaches stderr (issue 9)."""

from __future__ import annotations

import csv
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from hpatool.cli import app
from hpatool.imaging import MAX_PIXELS
from hpatool.registry import Registry
from tests.support import SIZE, TRAIN, claimed_size_png, one_line_error, start_hpatool

ONE_STEP = ("--epochs", "1", "--max-steps", "1", "--workers", "0")
BOMB = (
    f"image of more than {2 * MAX_PIXELS:,} pixels is over the limit of {MAX_PIXELS:,} pixels "
    "(a real HPA field has 4-16 million); replace the file"
)


def run_cli(home: Path, *args: object) -> Result:
    return CliRunner().invoke(app, ["--home", str(home), *[str(a) for a in args]])


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as fh:
        return list(csv.reader(fh))


@dataclass(frozen=True)
class Setup:
    home: Path
    data: Path
    ids: list[str]


@pytest.fixture(scope="module")
def setup(synth_data: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory) -> Setup:
    """Dataset 'syn' (16 synthetic samples, 2 folds) and a one-step run 'r1' on it."""
    base = tmp_path_factory.mktemp("pixels")
    data = synth_data(16, SIZE, seed=4)
    home = base / "home"
    for args in (
        ("datasets", "add", "syn", "--labels", data / "labels.csv", "--root", data),
        ("split", "syn", "--folds", "2"),
        (
            "train",
            "--dataset",
            "syn",
            *TRAIN,
            *ONE_STEP,
            "--eval-crops",
            "1",
            "--out",
            base / "runs",
            "--name",
            "r1",
        ),
    ):
        res = run_cli(home, *args)
        assert res.exit_code == 0, (args, res.output)
    ids = [line.split(",")[0] for line in (data / "labels.csv").read_text().splitlines()[1:]]
    return Setup(home, data, ids)


def with_bombs(setup: Setup, tmp_path: Path, name: str, bombs: dict[str, tuple[int, int]]) -> Path:
    """A copy of the images with ``{"<id>_<colour>": (width, height)}`` replaced by PNG headers
    claiming that size, registered (and split) as ``name``."""
    folder = tmp_path / name
    shutil.copytree(setup.data, folder)
    for stem, (width, height) in bombs.items():
        claimed_size_png(folder / f"{stem}.png", width, height)
    for args in (
        ("datasets", "add", name, "--labels", folder / "labels.csv", "--root", folder),
        ("split", name, "--folds", "2"),
    ):
        res = run_cli(setup.home, *args)
        assert res.exit_code == 0, (args, res.output)
    return folder


def test_predict_names_the_image_and_writes_the_others(setup: Setup, tmp_path: Path) -> None:
    bad = setup.ids[1]
    folder = with_bombs(setup, tmp_path, "bomb-predict", {f"{bad}_green": (60_000, 60_000)})
    out = tmp_path / "out" / "submission.csv"
    res = run_cli(
        setup.home, "predict", "--run", "r1", "--dataset", "bomb-predict", "--out", out,
        "--crops", "1", "--device", "cpu", "--workers", "0",
    )  # fmt: skip
    partial, failures = (
        out.with_name("submission.partial.csv"),
        out.with_name("submission.failures.csv"),
    )
    assert one_line_error(res, 1) == (
        f"error: 1 of 16 images could not be scored ({bad}: {folder}/{bad}_green.png: {BOMB}; "
        f"all listed in {failures}); the other 15 are in {partial}, and {out} was not written"
    )
    assert [r[0] for r in read_rows(partial)[1:]] == [i for i in setup.ids if i != bad]
    assert read_rows(failures) == [["Id", "error"], [bad, f"{folder}/{bad}_green.png: {BOMB}"]]
    assert not out.exists()


def test_train_stops_with_one_line_naming_the_image(setup: Setup, tmp_path: Path) -> None:
    # Every sample but the first (whose size sets the crop check) claims 60000x60000.
    bombs = {f"{i}_blue": (60_000, 60_000) for i in setup.ids[1:]}
    folder = with_bombs(setup, tmp_path, "bomb-train", bombs)
    res = run_cli(
        setup.home, "train", "--dataset", "bomb-train", *TRAIN, *ONE_STEP,
        "--out", tmp_path / "runs", "--name", "bombed",
    )  # fmt: skip
    line = one_line_error(res, 1)
    assert re.fullmatch(
        rf"error: {re.escape(str(folder))}/[0-9a-f-]+_blue\.png: {re.escape(BOMB)}", line
    )
    with Registry.open(setup.home) as reg:
        assert reg.run("bombed").status == "failed"


def test_verify_lists_it_without_a_pillow_warning(setup: Setup, tmp_path: Path) -> None:
    """Between once and twice Pillow's limit Pillow only warns; hpatool refuses, quietly."""
    bad = setup.ids[2]
    folder = with_bombs(setup, tmp_path, "bomb-verify", {f"{bad}_red": (20_001, 20_000)})
    failures = tmp_path / "failures.csv"
    proc = start_hpatool(
        ["datasets", "verify", "bomb-verify", "--failures", str(failures)], setup.home
    )
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1, (stdout, stderr)
    assert "Warning" not in stderr and "Warning" not in stdout
    assert stderr.strip() == (
        f"error: 1 of 16 samples of dataset 'bomb-verify' failed verification; the failures "
        f"are listed in {failures}"
    )
    reason = (
        f"image of 20001x20000 is over the limit of {MAX_PIXELS:,} pixels (a real HPA field has "
        "4-16 million); replace the file"
    )
    rows = read_rows(failures)
    assert [r for r in rows[1:] if reason in r] and str(folder / f"{bad}_red.png") in str(rows)
