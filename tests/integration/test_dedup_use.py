"""What the duplicate clusters of ``hpatool dedup`` change downstream (issue 11, items 2-4):
``split`` keeps a cluster in one fold, ``datasets show`` counts the clusters kept together,
``datasets export`` writes ``Id,Target,fold,cluster``, ``train`` leaves out training samples
that duplicate a validation sample (``duplicates_removed`` in ``config.json``), and
``predict --known-labels`` gives a test sample its labelled duplicates' labels."""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from hpatool.ids import COLOURS
from hpatool.registry import Registry
from tests.support import SIZE, TRAIN, Invoke, one_line_error


def _copy(src: Path, sid: str, dst: Path, new: str) -> None:
    for colour in COLOURS:
        shutil.copy(src / f"{sid}_{colour}.png", dst / f"{new}_{colour}.png")


@pytest.fixture
def planted(
    cli: Invoke, home: Path, synth_data: Callable[..., Path], tmp_path: Path
) -> dict[str, list[str]]:
    """Dataset 'a' (40 samples plus two copies of its first), 'b' (external: 4 new samples
    and a copy of a's second, with other labels), 't' (test: a copy of a's third), deduped."""
    base = synth_data(48, SIZE, seed=5)
    rows = list(csv.reader((base / "labels.csv").open()))[1:]
    a, b, t = tmp_path / "a", tmp_path / "b", tmp_path / "t"
    for folder in (a, b, t):
        folder.mkdir()
    a_rows = [*rows[:40], ["a0-copy1", rows[0][1]], ["a0-copy2", rows[0][1]]]
    for sid, _ in rows[:40]:
        _copy(base, sid, a, sid)
    _copy(base, rows[0][0], a, "a0-copy1")
    _copy(base, rows[0][0], a, "a0-copy2")
    b_rows = [*rows[40:44], ["ext-of-a1", "27"]]
    for sid, _ in rows[40:44]:
        _copy(base, sid, b, sid)
    _copy(base, rows[1][0], b, "ext-of-a1")
    _copy(base, rows[2][0], t, "test-of-a2")
    _copy(base, rows[44][0], t, "test-other")
    for folder, items in ((a, a_rows), (b, b_rows), (t, [["test-of-a2", ""], ["test-other", ""]])):
        with (folder / "labels.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["Id", "Target"] if folder != t else ["Id", "Predicted"])
            writer.writerows(items)
    assert cli("datasets", "add", "a", "--labels", a / "labels.csv", "--root", a).exit_code == 0
    assert cli("datasets", "add", "b", "--labels", b / "labels.csv", "--root", b,
               "--kind", "external").exit_code == 0  # fmt: skip
    assert cli("datasets", "add", "t", "--labels", t / "labels.csv", "--root", t).exit_code == 0
    res = cli("dedup", "a", "b", "t", "--workers", "1")
    assert res.exit_code == 0, res.output
    return {"a": [r[0] for r in a_rows], "rows": [r[0] for r in rows[:3]]}


def test_split_show_and_export_keep_a_cluster_together(
    cli: Invoke, home: Path, planted: dict[str, list[str]]
) -> None:
    a0 = planted["rows"][0]
    res = cli("split", "a", "--folds", "3")
    assert res.exit_code == 0, res.output
    assert "Kept 1 duplicate cluster(s)" in res.stdout
    with Registry.open(home) as reg:
        folds = reg.folds("a")
    assert folds[a0] == folds["a0-copy1"] == folds["a0-copy2"]
    doc = json.loads(cli("datasets", "show", "a", "--json").stdout)
    assert doc["duplicates"]["clusters"] == 1 and doc["duplicates"]["kept_together"] == 1
    exported = cli("datasets", "export", "a")
    assert exported.exit_code == 0, exported.output
    table = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert [r["Id"] for r in table] == planted["a"]
    by_id = {r["Id"]: r for r in table}
    assert by_id[a0]["cluster"] == by_id["a0-copy1"]["cluster"] != ""
    assert by_id[planted["rows"][1]]["cluster"] != ""  # a1 has a copy in dataset b
    assert sum(1 for r in table if r["cluster"]) == 5  # a0 and its copies, a1, a2 (in t)
    assert all(r["fold"] == str(folds[r["Id"]]) for r in table)


def test_train_drops_a_training_duplicate_of_a_validation_sample(
    cli: Invoke, home: Path, planted: dict[str, list[str]], tmp_path: Path
) -> None:
    a1 = planted["rows"][1]
    assert cli("split", "a", "--folds", "2").exit_code == 0
    with Registry.open(home) as reg:
        fold = reg.folds("a")[a1]
    runs = tmp_path / "runs"
    res = cli("train", "--dataset", "a", "--dataset", "b", *TRAIN, "--fold", fold,
              "--epochs", "1", "--workers", "0", "--out", runs, "--name", "d")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "1 training samples left out: duplicates of validation samples" in res.output
    assert "hint: run 'hpatool dedup" not in res.output
    config = json.loads((runs / "d" / "config.json").read_text())
    assert config["duplicates_removed"] == [["b", "ext-of-a1"]]
    assert config["train_samples_per_dataset"]["b"] == 4


def test_predict_known_labels_takes_the_duplicates_labels(
    cli: Invoke, home: Path, planted: dict[str, list[str]], tmp_path: Path
) -> None:
    a2 = planted["rows"][2]
    assert cli("split", "a", "--folds", "2").exit_code == 0
    runs = tmp_path / "runs"
    res = cli("train", "--dataset", "a", *TRAIN, "--max-steps", "1", "--workers", "0",
              "--out", runs, "--name", "k")  # fmt: skip
    assert res.exit_code == 0, res.output
    sub = tmp_path / "sub.csv"
    res = cli("predict", "--dataset", "t", "--run", "k", "--crops", "1", "--device", "cpu",
              "--out", sub, "--known-labels")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "--known-labels: 1 samples took the labels" in res.stdout
    rows = {r["Id"]: r["Predicted"] for r in csv.DictReader(sub.open())}
    with Registry.open(home) as reg:
        expected = " ".join(str(c) for c in sorted(reg.sample("a", a2).target or ()))
    assert rows["test-of-a2"] == expected and rows["test-other"] != ""


def test_known_labels_without_dedup_is_refused_before_scoring(
    cli: Invoke, home: Path, synth_data: Callable[..., Path], tmp_path: Path
) -> None:
    data = synth_data(24, SIZE, seed=1)
    assert cli("datasets", "add", "s", "--labels", data / "labels.csv", "--root", data)
    assert cli("split", "s", "--folds", "2").exit_code == 0
    runs = tmp_path / "runs"
    res = cli("train", "--dataset", "s", *TRAIN, "--max-steps", "1", "--workers", "0",
              "--out", runs, "--name", "k")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "hint: run 'hpatool dedup s'" in res.output
    args = ("predict", "--dataset", "s", "--run", "k", "--out", tmp_path / "x.csv")
    line = one_line_error(cli(*args, "--known-labels"), 2)
    assert "run 'hpatool dedup s" in line and not (tmp_path / "x.csv").exists()
