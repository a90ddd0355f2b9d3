"""``hpatool datasets ...`` and ``hpatool stats`` end to end on the real HPA label files."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpatool.registry import REGISTRY_FILE, Registry
from tests.support import REPO, Invoke, one_line_error, register

TRAIN_COUNTS = [
    12885,
    1254,
    3621,
    1561,
    1858,
    2513,
    1008,
    2822,
    53,
    45,
    28,
    1093,
    688,
    537,
    1066,
    21,
    530,
    210,
    902,
    1482,
    172,
    3777,
    802,
    2965,
    322,
    8228,
    328,
    11,
]


def snapshot(home: Path) -> list[str]:
    """Every row of the registry, for 'nothing changed' checks."""
    path = home / REGISTRY_FILE
    if not path.exists():
        return []
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def test_stats_json_on_real_train_csv(train_csv: Path, cli: Invoke) -> None:
    res = cli("datasets", "add", "train", "--labels", train_csv)
    assert res.exit_code == 0, res.output
    assert "31,072 samples" in res.stdout
    res = cli("stats", "train", "--json")
    assert res.exit_code == 0
    doc = json.loads(res.stdout)
    assert set(doc) == {"classes", "datasets"}
    assert len(doc["classes"]) == 28 and doc["classes"][27] == "Rods & rings"
    (ds,) = doc["datasets"]
    assert set(ds) == {
        "name", "samples", "labelled", "class_counts", "labels_per_sample", "registered",
        "left_out",
    }  # fmt: skip
    assert ds["registered"] == 31072 and ds["left_out"] == {}  # labels only: counted whole
    assert ds["name"] == "train"
    assert ds["samples"] == ds["labelled"] == 31072
    assert ds["class_counts"] == TRAIN_COUNTS
    assert ds["labels_per_sample"] == {"1": 15126, "2": 12485, "3": 3160, "4": 299, "5": 2}


def test_hpav18_and_submissionregister(submission_csv: Path, hpav18_csv: Path, cli: Invoke) -> None:
    res = cli("datasets", "add", "hpa-v18", "--labels", hpav18_csv, "--kind", "external")
    assert res.exit_code == 0, res.output
    res = cli("datasets", "add", "test", "--labels", submission_csv)
    assert res.exit_code == 0, res.output
    listing = {d["name"]: d for d in json.loads(cli("datasets", "list", "--json").stdout)}
    assert listing["hpa-v18"]["samples"] == 74606 and listing["hpa-v18"]["kind"] == "external"
    assert listing["test"]["samples"] == 11702 and listing["test"]["labelled"] == 0
    assert listing["test"]["kind"] == "test"
    shown = json.loads(cli("datasets", "show", "test", "--json").stdout)
    assert shown["labels"] == str(submission_csv.resolve())
    assert len(shown["labels_sha256"]) == 64
    doc = json.loads(cli("stats", "test", "hpa-v18", "--json").stdout)
    assert [d["name"] for d in doc["datasets"]] == ["test", "hpa-v18"]
    assert doc["datasets"][0]["class_counts"] == [0] * 28
    assert doc["datasets"][0]["labels_per_sample"] == {}
    assert sum(doc["datasets"][1]["labels_per_sample"].values()) == 74606


def test_submission_order_is_kept(submission_csv: Path, cli: Invoke, home: Path) -> None:
    cli("datasets", "add", "test", "--labels", submission_csv)
    from hpatool.registry import Registry

    with Registry.open(home) as reg:
        ids = [s.id for s in reg.samples("test")]
    expected = [line.split(",")[0] for line in submission_csv.read_text().splitlines()[1:]]
    assert ids == expected


def test_stats_table_and_plot(train_csv: Path, cli: Invoke, tmp_path: Path) -> None:
    cli("datasets", "add", "train", "--labels", train_csv)
    plot = tmp_path / "classes.png"
    res = cli("stats", "train", "--plot", plot)
    assert res.exit_code == 0, res.output
    assert "Rods & rings" in res.stdout and "12,885" in res.stdout
    assert "Labels per sample" in res.stdout
    assert "0 Nucleoplasm + 25 Cytosol" in res.stdout
    with Image.open(plot) as img:
        assert img.format == "PNG" and img.size[0] > 800
    assert not list(tmp_path.glob(".tmp-*"))


def test_remove_and_list(train_csv: Path, cli: Invoke) -> None:
    cli("datasets", "add", "a", "--labels", train_csv)
    res = cli("datasets", "remove", "a")
    assert res.exit_code == 0 and "Removed dataset a" in res.stdout
    assert json.loads(cli("datasets", "list", "--json").stdout) == []
    res = cli("datasets", "add", "a", "--labels", train_csv)  # the name is free again
    assert res.exit_code == 0


def test_home_option_beats_env(
    submission_csv: Path, cli: Invoke, home: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other-home"
    assert cli("datasets", "add", "x", "--labels", submission_csv, "--home", other).exit_code == 0
    assert cli("--home", other, "datasets", "show", "x").exit_code == 0
    assert (other / REGISTRY_FILE).exists()
    res = cli("datasets", "show", "x")  # env home: not there
    assert res.exit_code == 2


# ------------------------------------------------------------------------ bad input


def write_csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8")
    return path


BAD_CSVS = {
    "label 28": (
        "Id,Target\na1,0\na2,28 1\n",
        "row 2 (line 3): bad Target '28 1' for Id 'a2': "
        "label '28' is out of range; class indices are 0..27",
    ),
    "label x": (
        "Id,Target\na1,x\n",
        "row 1 (line 2): bad Target 'x' for Id 'a1': label 'x' is not "
        "a class index; use integers 0..27",
    ),
    "duplicate id": (
        "Id,Target\na1,0\na1,1\n",
        "row 2 (line 3): duplicate Id 'a1' (first at row 1); each sample may appear once",
    ),
    "unsafe id": (
        "Id,Target\n../../etc/passwd,0\n",
        "row 1 (line 2): unsafe or invalid Id "
        "'../../etc/passwd': contains a path separator; "
        "ids name files inside the image root",
    ),
    "missing Id column": (
        "Image,Target\na1,0\n",
        "no 'Id' column (columns: 'Image', 'Target'); "
        "the first line must be a header such as 'Id,Target'; "
        "column 'Image' looks like the ids: rename it to Id",
    ),
    "malformed": (
        "Id,Target\na1,0,5\n",
        "row 1 (line 2): 3 fields where the header has 2; "
        "check for unquoted commas or a missing column",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CSVS))
def test_bad_csv_one_line_and_registry_unchanged(
    submission_csv: Path, cli: Invoke, home: Path, tmp_path: Path, case: str
) -> None:
    cli("datasets", "add", "existing", "--labels", submission_csv)
    before = snapshot(home)
    text, expected = BAD_CSVS[case]
    path = write_csv(tmp_path, text)
    res = cli("datasets", "add", "new", "--labels", path)
    assert res.exit_code == 1
    assert res.stdout == ""
    assert res.stderr == f"error: {path}: {expected}\n"
    assert "Traceback" not in res.output
    assert snapshot(home) == before


def test_unknown_dataset(submission_csv: Path, cli: Invoke, home: Path) -> None:
    cli("datasets", "add", "train", "--labels", submission_csv)
    before = snapshot(home)
    for args in (
        ("datasets", "show", "nope"),
        ("datasets", "remove", "nope"),
        ("stats", "nope"),
        ("datasets", "verify", "nope"),
    ):
        res = cli(*args)
        assert res.exit_code == 2, args
        assert res.stderr == (
            f"error: unknown dataset 'nope' in {home / REGISTRY_FILE} (known: train)\n"
        )
    assert snapshot(home) == before


def test_adding_existing_name(
    train_csv: Path, submission_csv: Path, cli: Invoke, home: Path
) -> None:
    cli("datasets", "add", "train", "--labels", train_csv)
    before = snapshot(home)
    res = cli("datasets", "add", "train", "--labels", submission_csv)
    assert res.exit_code == 2
    assert res.stderr == (
        f"error: dataset 'train' already exists in {home / REGISTRY_FILE}; "
        "choose another name or run 'hpatool datasets remove train' first\n"
    )
    assert snapshot(home) == before


def test_missing_csv_and_bad_usage(
    train_csv: Path, cli: Invoke, home: Path, tmp_path: Path
) -> None:
    res = cli("datasets", "add", "x", "--labels", tmp_path / "nope.csv")
    assert res.exit_code == 2
    assert res.stderr.startswith(f"error: {tmp_path / 'nope.csv'}: no such file")
    res = cli("datasets", "add", "x")
    assert res.exit_code == 2 and "give --labels CSV, --root DIR, or both" in res.stderr
    res = cli("datasets", "add", "bad/name", "--labels", train_csv)
    assert res.exit_code == 2 and "invalid dataset name 'bad/name'" in res.stderr
    res = cli("datasets", "add", "x", "--labels", train_csv, "--kind", "weird")
    assert res.exit_code == 2 and "invalid --kind 'weird'" in res.stderr
    assert json.loads(cli("datasets", "list", "--json").stdout) == []


def test_debug_shows_traceback(cli: Invoke, tmp_path: Path) -> None:
    path = write_csv(tmp_path, "Id,Target\na1,99\n")
    with pytest.raises(Exception, match="out of range"):
        cli("--debug", "datasets", "add", "x", "--labels", path)


# ------------------------------------------------------------------- image folders


def write_sample(root: Path, sample_id: str, size: int = 32, mode: str = "L") -> None:
    rng = np.random.default_rng(abs(hash(sample_id)) % 2**32)
    for colour in ("red", "green", "blue", "yellow"):
        arr = rng.integers(0, 255, (size, size), dtype=np.uint8)
        img = Image.fromarray(arr)
        if mode != "L":
            img = img.convert(mode)
        img.save(root / f"{sample_id}_{colour}.png")


def test_folder_dataset_and_verify(cli: Invoke, tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(6):
        write_sample(root, f"s{i}")
    (root / "notes.txt").write_text("ignored")
    res = cli("datasets", "add", "imgs", "--root", root)
    assert res.exit_code == 0, res.output
    assert "6 samples, 0 labelled" in res.stdout
    res = cli("datasets", "verify", "imgs")
    assert res.exit_code == 0, res.output
    assert "6 samples, 6 ok, 0 failed" in res.stdout

    # break things: a missing channel, a truncated file, an RGB file, a wrong-size sample
    (root / "s1_yellow.png").unlink()
    data = (root / "s2_green.png").read_bytes()
    (root / "s2_green.png").write_bytes(data[: len(data) // 2])
    Image.new("RGB", (32, 32)).save(root / "s3_red.png")
    write_sample(root, "s4", size=48)
    failures = tmp_path / "failures.csv"
    res = cli("datasets", "verify", "imgs", "--json", "--failures", failures)
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert doc["checked"] == 6 and doc["failed"] == 4 and doc["ok"] == 2
    problems = {(f["id"], f["colour"]): f["problem"] for f in doc["failures"]}
    assert problems[("s1", "yellow")] == "missing"
    assert problems[("s2", "green")].startswith("does not decode")
    assert problems[("s3", "red")] == "mode RGB, expected 8-bit greyscale (L)"
    assert problems[("s4", "all")] == "size 48x48, expected 32x32"
    lines = failures.read_text().splitlines()
    assert lines[0] == "Id,colour,path,problem" and len(lines) == 5
    res = cli("datasets", "verify", "imgs", "--size", "48")
    assert res.exit_code == 1 and "1 ok, 5 failed" in res.stdout


def test_verify_failures_end_with_one_error_line(cli: Invoke, tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(3):
        write_sample(root, f"s{i}")
    assert cli("datasets", "add", "imgs", "--root", root).exit_code == 0
    failures = tmp_path / "out" / "failures.csv"
    res = cli("datasets", "verify", "imgs", "--failures", failures)
    assert res.exit_code == 0 and res.stderr == ""
    assert failures.read_text() == "Id,colour,path,problem\n"  # the header alone: none failed
    (root / "s1_red.png").unlink()
    res = cli("datasets", "verify", "imgs", "--failures", failures)
    assert one_line_error(res, 1) == (
        "error: 1 of 3 samples of dataset 'imgs' failed verification; "
        f"the failures are listed in {failures}"
    )
    assert "3 samples, 2 ok, 1 failed" in res.stdout  # the summary and the table stay
    assert failures.read_text().splitlines()[1].startswith("s1,red,")
    res = cli("datasets", "verify", "imgs", "--json")
    assert json.loads(res.stdout)["failed"] == 1
    assert one_line_error(res, 1).endswith("failed verification")
    res = cli("datasets", "verify", "imgs", "--failures", tmp_path)  # a folder: refused first
    assert one_line_error(res, 2).startswith(f"error: --failures {tmp_path} is a folder")


def test_verify_labels_only_dataset(submission_csv: Path, cli: Invoke) -> None:
    cli("datasets", "add", "t", "--labels", submission_csv)
    res = cli("datasets", "verify", "t")
    assert res.exit_code == 2
    assert "has no image folder (labels only)" in res.stderr


def test_folder_without_images(cli: Invoke, tmp_path: Path) -> None:
    res = cli("datasets", "add", "x", "--root", tmp_path)
    assert res.exit_code == 1 and "no <Id>_<colour>.png files" in res.stderr


def test_show_writes_picture(cli: Invoke, tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    root.mkdir()
    write_sample(root, "a1")
    labels = tmp_path / "labels.csv"
    labels.write_text("Id,Target\na1,25 0\n")
    assert cli("datasets", "add", "d", "--labels", labels, "--root", root).exit_code == 0
    out = tmp_path / "a1.png"
    res = cli("show", "d", "a1", "--out", out)
    assert res.exit_code == 0, res.output
    with Image.open(out) as img:
        assert img.size[0] > 4 * img.size[1]  # five panels side by side
    res = cli("show", "d", "zz", "--out", out)
    assert res.exit_code == 2 and "has no sample 'zz'" in res.stderr


def test_two_processes_add_at_once(
    train_csv: Path, submission_csv: Path, hpav18_csv: Path, tmp_path: Path
) -> None:
    home = tmp_path / "shared-home"
    env = {**os.environ, "HPATOOL_HOME": str(home)}
    cmds = [
        [sys.executable, "-m", "hpatool", "datasets", "add", "v18", "--labels", str(hpav18_csv)],
        [sys.executable, "-m", "hpatool", "datasets", "add", "train", "--labels", str(train_csv)],
        [
            sys.executable,
            "-m",
            "hpatool",
            "datasets",
            "add",
            "test",
            "--labels",
            str(submission_csv),
        ],
    ]
    procs = [
        subprocess.Popen(
            c, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for c in cmds
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    from hpatool.registry import Registry

    with Registry.open(home) as reg:
        counts = {d.name: d.samples for d in reg.datasets()}
    assert counts == {"v18": 74606, "train": 31072, "test": 11702}


def test_a_password_stored_by_an_older_hpatool_is_never_shown(
    cli: Invoke, home: Path, tmp_path: Path
) -> None:
    """A registry written before passwords were redacted at store time may hold one in a
    provenance URL: ``datasets show`` and ``datasets list --json`` still show ``***``."""
    labels = tmp_path / "labels.csv"
    labels.write_text("Id,Target\n10580_1610_C1_1,0\n")
    assert cli("datasets", "add", "v18", "--labels", labels).exit_code == 0
    with Registry.open(home) as reg:
        reg.update_dataset("v18", provenance={"base_url": "http://ann:s3cret@example.org/images"})
    for args in (("datasets", "show", "v18"), ("datasets", "show", "v18", "--json")):
        res = cli(*args)
        assert res.exit_code == 0, res.output
        assert "s3cret" not in res.output and "ann:***@example.org" in res.output
    res = cli("datasets", "list", "--json")
    assert res.exit_code == 0 and "s3cret" not in res.output


def test_add_says_which_columns_were_used(cli: Invoke, tmp_path: Path) -> None:
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("ID,Label\na1,0 2\na2,5\n")
    res = cli("datasets", "add", "x", "--labels", csv_path)
    assert res.exit_code == 0, res.output
    assert "Columns used: Id 'ID', Target none (unlabelled)" in res.stdout
    assert res.stderr.startswith("warning: column 'Label' looks like labels")
    assert "rename it to Target" in res.stderr and res.stderr.count("\n") == 1
    csv_path.write_text("id,TARGET\na1,0 2\n")
    res = cli("datasets", "add", "y", "--labels", csv_path)
    assert "Columns used: Id 'id', Target 'TARGET'" in res.stdout and not res.stderr
    assert "1 labelled" in res.stdout


def test_add_without_id_column_names_the_likely_one(cli: Invoke, tmp_path: Path) -> None:
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("Image,Target\na1,0\n")
    msg = one_line_error(cli("datasets", "add", "x", "--labels", csv_path), 1)
    assert "no 'Id' column" in msg and "column 'Image' looks like the ids" in msg


def test_stats_on_a_test_set_says_there_is_nothing_to_count(
    submission_csv: Path, train_csv: Path, cli: Invoke, tmp_path: Path
) -> None:
    cli("datasets", "add", "test", "--labels", submission_csv)
    res = cli("stats", "test")
    assert res.exit_code == 0, res.output
    assert res.stdout == "dataset 'test' has no labels (a test set): nothing to count\n"
    plot = tmp_path / "c.png"
    msg = one_line_error(cli("stats", "test", "--plot", plot), 1)
    assert msg == "error: dataset 'test' has no labels (a test set): nothing to count"
    assert not plot.exists()
    cli("datasets", "add", "train", "--labels", train_csv)
    res = cli("stats", "train", "test", "--plot", plot)
    assert res.exit_code == 0, res.output
    assert (
        "note: dataset 'test' has no labels (a test set): left out of the tables and the plot"
        in res.stdout
    )
    assert "test\ncount" not in res.stdout and "12,885" in res.stdout and plot.exists()


def test_show_samples_lists_status_labels_and_folds(
    synth_data: Callable[..., Path], cli: Invoke, home: Path
) -> None:
    data = synth_data(40, 32)
    register(cli, data, name="syn", folds=4)
    with Registry.open(home) as reg:
        ids = [s.id for s in reg.samples("syn")]
        targets = {s.id: s.target for s in reg.samples("syn")}
        folds = reg.folds("syn")
        # as a download leaves it: 3 failed, 2 missing on the server, 5 not fetched yet
        reg.set_status("syn", [(i, "failed") for i in ids[:3]])
        reg.set_status("syn", [(i, "missing") for i in ids[3:5]])
        reg.set_status("syn", [(i, "done") for i in ids[10:]])

    res = cli("datasets", "show", "syn", "--samples")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["Id", "status", "labels", "fold"] and len(lines) == 41
    cells = {line.split()[0]: line.split() for line in lines[1:]}
    assert list(cells) == ids  # registry order
    first = cells[ids[0]]
    assert first[1] == "failed" and first[-1] == str(folds[ids[0]])
    assert tuple(int(c) for c in first[2:-1]) == targets[ids[0]]
    assert cells[ids[7]][1] == "pending" and cells[ids[20]][1] == "done"

    res = cli("datasets", "show", "syn", "--samples", "--status", "failed", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == [
        {"id": i, "status": "failed", "labels": list(targets[i]), "fold": folds[i]} for i in ids[:3]
    ]
    res = cli("datasets", "show", "syn", "--samples", "--status", "pending", "--json")
    assert [row["id"] for row in json.loads(res.stdout)] == ids[5:10]

    with Registry.open(home) as reg:  # no failures left: an empty list, not an error
        reg.set_status("syn", [(i, "done") for i in ids[:3]])
    res = cli("datasets", "show", "syn", "--samples", "--status", "failed", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout) == []
    text = one_line_error(cli("datasets", "show", "syn", "--samples", "--status", "faild"))
    assert "no sample with --status 'faild'" in text
    assert "done (33), missing (2), pending (5)" in text
    text = one_line_error(cli("datasets", "show", "syn", "--status", "failed"))
    assert "add --samples" in text


@pytest.mark.slow  # 74,606 rows registered, then listed twice: about 10 s
def test_show_samples_of_a_labels_only_dataset(hpav18_csv: Path, cli: Invoke) -> None:
    assert cli("datasets", "add", "v18", "--labels", hpav18_csv).exit_code == 0
    res = cli("datasets", "show", "v18", "--samples")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert len(lines) == 1 + 74606 and lines[0].split() == ["Id", "status", "labels"]
    assert lines[1].split() == ["10580_1610_C1_1", "-", "0", "2", "13", "21", "25"]
    res = cli("datasets", "show", "v18", "--samples", "--json")
    rows = json.loads(res.stdout)
    assert len(rows) == 74606
    assert rows[0] == {"id": "10580_1610_C1_1", "status": None, "labels": [0, 2, 13, 21, 25]}
    text = one_line_error(cli("datasets", "show", "v18", "--samples", "--status", "failed"))
    assert "it records no per-sample status" in text


def test_verify_checks_only_what_a_download_finished(
    synth_data: Callable[..., Path], cli: Invoke, home: Path, tmp_path: Path
) -> None:
    """A partial download (statuses failed / missing / pending) verifies clean: only its
    ``done`` samples are checked, the others counted as not checked (found walking the docs:
    every unfinished sample counted as failed, so such a dataset could never pass)."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth_data(12, 32, seed=6), data)
    register(cli, data, name="dl", folds=None)
    with Registry.open(home) as reg:
        ids = [s.id for s in reg.samples("dl")]
        reg.set_status(
            "dl", [(i, "done") for i in ids[3:]] + [(ids[0], "missing"), (ids[1], "failed")]
        )
    for path in data.glob(f"{ids[0]}_*.png"):
        path.unlink()
    res = cli("datasets", "verify", "dl", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["checked"] == 9 and doc["failed"] == 0
    assert doc["not_checked"] == {
        "failed to download or convert": 1,
        "missing on the server (404)": 1,
        "not downloaded or converted yet": 1,
    }
    (data / f"{ids[5]}_red.png").unlink()  # a finished sample that lost a file: a failure
    res = cli("datasets", "verify", "dl", "--json")
    assert res.exit_code == 1 and json.loads(res.stdout)["failed"] == 1
