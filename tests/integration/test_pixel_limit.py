"""An image whose header claims more pixels than hpatool's one limit (``imaging.MAX_PIXELS``) is
one bad image like any other unreadable one, named, in every command: ``predict`` scores the
others (partial and failures files), ``train`` stops with one line naming the file, ``datasets
verify`` lists it, and no Pillow warning reaches stderr (issue 9)."""

from __future__ import annotations

import csv
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from hpatool.imaging import MAX_PIXELS
from hpatool.registry import Registry
from tests.support import (
    RUN_CROPS,
    TRAIN,
    Workspace,
    claimed_size_png,
    one_line_error,
    run_cli,
    start_hpatool,
)

ONE_STEP = ("--epochs", "1", "--max-steps", "1", "--workers", "0")
N = 16  # the samples of each copy with bombs: below predict's 20 for a class-frequency warning
BOMB = (
    f"image of more than {2 * MAX_PIXELS:,} pixels is over the limit of {MAX_PIXELS:,} pixels "
    "(a real HPA field has 4-16 million); replace the file"
)


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as fh:
        return list(csv.reader(fh))


@dataclass(frozen=True)
class Setup:
    home: Path
    data: Path
    ids: list[str]


@pytest.fixture
def setup(trained_run: Workspace) -> Setup:
    """A private copy of the session's dataset 'syn' (24 synthetic samples, 3 folds) and its
    run 'r1' (see ``trained_run``)."""
    data = trained_run.data
    ids = [line.split(",")[0] for line in (data / "labels.csv").read_text().splitlines()[1:]]
    return Setup(trained_run.home, data, ids[:N])


def with_bombs(setup: Setup, tmp_path: Path, name: str, bombs: dict[str, tuple[int, int]]) -> Path:
    """A copy of the images with ``{"<id>_<colour>": (width, height)}`` replaced by PNG headers
    claiming that size, registered (and split) as ``name`` with its first ``N`` samples."""
    folder = tmp_path / name
    shutil.copytree(setup.data, folder)
    labels = folder / "labels.csv"
    labels.write_text("\n".join(labels.read_text().splitlines()[: N + 1]) + "\n")
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
        "--crops", RUN_CROPS, "--device", "cpu", "--workers", "0",
    )  # fmt: skip
    partial, failures = (
        out.with_name("submission.partial.csv"),
        out.with_name("submission.failures.csv"),
    )
    assert one_line_error(res, 1) == (
        f"error: 1 of {N} images could not be scored ({bad}: {folder}/{bad}_green.png: {BOMB}; "
        f"all listed in {failures}); the other {N - 1} are in {partial}, and {out} was not written"
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
        f"error: 1 of {N} samples of dataset 'bomb-verify' failed verification; the failures "
        f"are listed in {failures}"
    )
    reason = (
        f"image of 20001x20000 is over the limit of {MAX_PIXELS:,} pixels (a real HPA field has "
        "4-16 million); replace the file"
    )
    rows = read_rows(failures)
    assert [r for r in rows[1:] if reason in r] and str(folder / f"{bad}_red.png") in str(rows)
