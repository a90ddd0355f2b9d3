"""Issue 9, data and registry: hostile label files and image folders, an empty --home, rows
edited by hand, a read-only registry, a full disk, and concurrent writers. Each case checks the
one-line message, the exit code, and that nothing was lost."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from hpatool.errors import DataError
from hpatool.ids import COLOURS
from hpatool.registry import MIGRATIONS, REGISTRY_FILE, Registry
from tests.support import REPO, Invoke, one_line_error


def snapshot(home: Path) -> list[str]:
    """Every row of the registry, for 'nothing changed' checks."""
    conn = sqlite3.connect(home / REGISTRY_FILE)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def labels(tmp_path: Path, n: int = 12, name: str = "labels.csv") -> Path:
    path = tmp_path / name
    path.write_text("Id,Target\n" + "".join(f"s{i:03d},{i % 3} {3 + i % 4}\n" for i in range(n)))
    return path


def images(folder: Path, ids: list[str], size: int = 8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for sample_id in ids:
        for colour in COLOURS:
            Image.fromarray(np.full((size, size), 7, np.uint8)).save(
                folder / f"{sample_id}_{colour}.png"
            )
    return folder


def sql(home: Path, statement: str, *args: Any, foreign_keys: bool = True) -> None:
    """Edit the registry by hand, as a user with the sqlite3 shell would."""
    conn = sqlite3.connect(home / REGISTRY_FILE)
    try:
        conn.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        conn.execute(statement, args)
        conn.commit()
    finally:
        conn.close()


# ------------------------------------------------------------------ label CSVs (item 1, 2)


def test_line_break_inside_a_quoted_cell_registers_nothing(
    tmp_path: Path, cli: Invoke, home: Path
) -> None:
    assert cli("datasets", "add", "keep", "--labels", labels(tmp_path)).exit_code == 0
    before = snapshot(home)
    path = tmp_path / "excel.csv"
    path.write_text('Id,Target\nabc,"0\n16"\n')
    msg = one_line_error(cli("datasets", "add", "x", "--labels", path), 1)
    assert msg == (
        f"error: {path}: row 1 (line 2): line break inside the Target cell '0\\n16'; an Id or "
        "Target must be on one line: remove the line break and save the CSV again"
    )
    path.write_text('Id,Target\n"a\nb",0\n')
    msg = one_line_error(cli("datasets", "add", "x", "--labels", path), 1)
    assert msg == (
        f"error: {path}: row 1 (line 2): line break inside the Id cell 'a\\nb'; an Id or "
        "Target must be on one line: remove the line break and save the CSV again"
    )
    assert snapshot(home) == before


@pytest.mark.timeout(60)
def test_fifo_and_pipe_labels_are_refused(tmp_path: Path, cli: Invoke, home: Path) -> None:
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    msg = one_line_error(cli("datasets", "add", "x", "--labels", fifo), 2)
    assert msg == (
        f"error: {fifo}: not a regular file (a pipe, FIFO or device); save the CSV to a file "
        "and give its path with --labels"
    )
    read_end, write_end = os.pipe()  # what `--labels <(cat file.csv)` gives
    try:
        os.write(write_end, labels(tmp_path).read_bytes())
        os.close(write_end)
        msg = one_line_error(cli("datasets", "add", "x", "--labels", f"/dev/fd/{read_end}"), 2)
    finally:
        os.close(read_end)
    assert msg.startswith(f"error: /dev/fd/{read_end}: not a regular file (a pipe, FIFO")
    assert cli("datasets", "list", "--json").stdout.strip() == "[]"


def test_registered_sha256_is_of_the_csv_read(tmp_path: Path, cli: Invoke) -> None:
    import hashlib

    path = labels(tmp_path)
    assert cli("datasets", "add", "d", "--labels", path).exit_code == 0
    doc = json.loads(cli("datasets", "show", "d", "--json").stdout)
    assert doc["labels_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.timeout(60)
def test_fifo_named_like_an_image_fails_verify_and_show(
    tmp_path: Path, cli: Invoke, home: Path
) -> None:
    path = labels(tmp_path, n=2)
    root = images(tmp_path / "img", ["s000", "s001"])
    fifo = root / "s001_green.png"
    fifo.unlink()
    os.mkfifo(fifo)
    assert cli("datasets", "add", "d", "--labels", path, "--root", root).exit_code == 0
    res = cli("datasets", "verify", "d", "--json")
    assert one_line_error(res, 1) == "error: 1 of 2 samples of dataset 'd' failed verification"
    (failure,) = json.loads(res.stdout)["failures"]
    assert failure == {
        "id": "s001",
        "colour": "green",
        "path": str(fifo),
        "problem": "not a regular file (a FIFO, device or folder); replace it with the image file",
    }
    msg = one_line_error(cli("show", "d", "s001", "--out", tmp_path / "s.png"), 1)
    assert msg == (
        f"error: {fifo}: not a regular file (a FIFO, device or folder); replace it with the "
        "image file"
    )
    assert not (tmp_path / "s.png").exists()


# ------------------------------------------------------------------------- --home (item 3)


def test_empty_home_is_refused(
    tmp_path: Path, cli: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    reason = (
        "empty path; give the registry folder, or leave --home out to use $HPATOOL_HOME or "
        "the user data dir"
    )
    msg = one_line_error(cli("datasets", "list", "--home", ""))
    assert msg == f"error: Invalid value for '--home': {reason} (see 'hpatool datasets list -h')"
    msg = one_line_error(cli("--home", " ", "datasets", "list"))
    assert msg == f"error: Invalid value for '--home': {reason} (see 'hpatool -h')"
    assert list(tmp_path.iterdir()) == []
    from hpatool.errors import UsageError

    with pytest.raises(UsageError, match=r"^--home is empty; give the registry folder"):
        Registry.open("")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- rows edited by hand (item 4)


def test_bad_provenance_json_marks_one_dataset_and_spares_the_others(
    tmp_path: Path, cli: Invoke, home: Path
) -> None:
    for name in ("a", "b"):
        assert cli("datasets", "add", name, "--labels", labels(tmp_path)).exit_code == 0
    sql(home, "UPDATE datasets SET provenance = '{oops' WHERE name = 'b'")
    problem = (
        f"registry {home / REGISTRY_FILE}: table datasets, dataset 'b', column provenance: "
        "bad value '{oops' (not JSON: Expecting property name enclosed in double quotes at "
        "character 1); repair the value, or 'hpatool datasets remove b' and add it again"
    )
    res = cli("datasets", "list", "--json")
    assert res.exit_code == 0 and res.stderr.strip() == f"warning: {problem}"
    docs = {d["name"]: d for d in json.loads(res.stdout)}
    assert "problem" not in docs["a"] and docs["b"]["problem"] == problem
    res = cli("datasets", "list")
    assert res.exit_code == 0 and "b (bad row)" in res.stdout
    assert one_line_error(cli("datasets", "show", "b"), 1) == f"error: {problem}"
    assert cli("datasets", "show", "a").exit_code == 0
    assert cli("split", "a", "--folds", "2").exit_code == 0
    res = cli("datasets", "remove", "b")  # a broken row can still be removed
    assert res.exit_code == 0, res.output
    assert [d["name"] for d in json.loads(cli("datasets", "list", "--json").stdout)] == ["a"]


def test_bad_target_names_the_sample(tmp_path: Path, cli: Invoke, home: Path) -> None:
    assert cli("datasets", "add", "a", "--labels", labels(tmp_path)).exit_code == 0
    assert cli("datasets", "add", "b", "--labels", labels(tmp_path)).exit_code == 0
    sql(home, "UPDATE samples SET target = '99' WHERE sample_id = 's003' AND dataset_id = 2")
    before = snapshot(home)
    msg = one_line_error(cli("split", "b", "--folds", "2"), 1)
    assert msg == (
        f"error: registry {home / REGISTRY_FILE}: table samples, dataset 'b', sample 's003', "
        "column target: bad value '99' (label '99' is out of range; class indices are 0..27); "
        "repair the value, or remove the dataset and add it again from its CSV"
    )
    assert one_line_error(cli("stats", "b"), 1) == msg
    assert snapshot(home) == before
    assert cli("split", "a", "--folds", "2").exit_code == 0


def test_fold_out_of_range_names_the_row(tmp_path: Path, cli: Invoke, home: Path) -> None:
    assert cli("datasets", "add", "a", "--labels", labels(tmp_path)).exit_code == 0
    assert cli("split", "a", "--folds", "5").exit_code == 0
    sql(home, "UPDATE folds SET fold = 7 WHERE sample_id = 's004'")
    msg = one_line_error(cli("datasets", "show", "a"), 1)
    assert msg == (
        f"error: registry {home / REGISTRY_FILE}: table folds, dataset 'a', sample 's004', "
        "column fold: bad value 7 (the split has folds 0..4); redo the split with "
        "'hpatool split a --folds 5 --force'"
    )
    assert cli("datasets", "list").exit_code == 0
    assert cli("split", "a", "--folds", "5", "--seed", "3", "--force").exit_code == 0
    assert cli("datasets", "show", "a").exit_code == 0


def test_bad_run_config_names_the_run(tmp_path: Path, home: Path) -> None:
    with Registry.open(home) as reg:
        for name in ("r1", "r2"):
            reg.create_run(
                name, arch="resnet10t", datasets=["d"], fold=0, config={}, out_dir=tmp_path
            )
    sql(home, "UPDATE runs SET config = '[1' WHERE name = 'r2'")
    with Registry.open(home) as reg:
        runs = {r.name: r for r in reg.runs()}
        assert runs["r1"].problem is None and runs["r2"].problem is not None
        assert reg.run("r1").name == "r1"
        with pytest.raises(DataError) as info:
            reg.run("r2")
    assert str(info.value) == (
        f"registry {home / REGISTRY_FILE}: table runs, run 'r2', column config: bad value '[1' "
        "(not JSON: Expecting ',' delimiter at character 2); repair the value (JSON text) with "
        "an SQLite editor"
    )


# --------------------------------------------------------------- read-only registry (item 5)

_READ_ONLY_SCRIPT = """
set -e
mount --bind "$1" "$1"
mount -o remount,bind,ro "$1"
shift
exec "$@"
"""


def run_on_read_only_mount(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m hpatool ARGS`` with ``home`` mounted read-only (a private mount namespace:
    root cannot write there either, unlike a chmod)."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to mount a folder read-only")
    env = {**os.environ, "HPATOOL_HOME": str(home), "PYTHONPATH": str(REPO)}
    cmd = ["unshare", "-rm", "sh", "-c", _READ_ONLY_SCRIPT, "sh", str(home)]
    probe = subprocess.run([*cmd, "true"], capture_output=True, text=True, env=env)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a read-only mount here: {probe.stderr.strip()}")
    return subprocess.run(
        [*cmd, sys.executable, "-m", "hpatool", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


def test_read_only_mount_reads_and_refuses_writes(tmp_path: Path, cli: Invoke, home: Path) -> None:
    path = labels(tmp_path)
    assert cli("datasets", "add", "d", "--labels", path).exit_code == 0
    assert cli("split", "d", "--folds", "3").exit_code == 0
    before = snapshot(home)
    res = run_on_read_only_mount(home, "datasets", "list", "--json")
    assert res.returncode == 0, res.stderr
    assert [d["name"] for d in json.loads(res.stdout)] == ["d"]
    res = run_on_read_only_mount(home, "datasets", "show", "d", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["folds"]["n"] == 3
    expected = (
        f"error: registry {home / REGISTRY_FILE} is read-only (it is on a read-only file "
        "system); this command writes to it: make it writable, or copy the folder somewhere "
        "writable and pass that with --home"
    )
    for args in (("datasets", "add", "e", "--labels", str(path)), ("datasets", "remove", "d")):
        res = run_on_read_only_mount(home, *args)
        assert (res.returncode, res.stderr.strip()) == (1, expected)
    assert snapshot(home) == before
    assert sorted(p.name for p in home.iterdir()) == [REGISTRY_FILE]


def test_read_only_file_opens_read_only(
    tmp_path: Path, cli: Invoke, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry file without write permission (tests run as root, whom chmod does not stop:
    ``os.access`` answers as it would for the file's owner after ``chmod a-w``)."""
    assert cli("datasets", "add", "d", "--labels", labels(tmp_path)).exit_code == 0
    before = snapshot(home)
    real_access = os.access

    def access(path: Any, mode: int, **kwargs: Any) -> bool:
        if Path(path) == home / REGISTRY_FILE and mode & os.W_OK:
            return False
        return real_access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)
    assert cli("datasets", "list").exit_code == 0
    msg = one_line_error(cli("split", "d", "--folds", "2"), 1)
    assert msg == (
        f"error: registry {home / REGISTRY_FILE} is read-only (the file is read-only); this "
        "command writes to it: make it writable, or copy the folder somewhere writable and "
        "pass that with --home"
    )
    assert snapshot(home) == before


def test_read_only_registry_of_an_older_schema_is_read(tmp_path: Path, home: Path) -> None:
    """An old registry is migrated where it can be written; read-only, it is read as it is."""
    home.mkdir()
    conn = sqlite3.connect(home / REGISTRY_FILE)
    conn.executescript(MIGRATIONS[0])
    conn.execute(
        "INSERT INTO datasets (name, kind, created_at, updated_at) VALUES ('old', 'test', 't', 't')"
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    res = run_on_read_only_mount(home, "datasets", "list", "--json")
    assert res.returncode == 0, res.stderr
    assert [d["name"] for d in json.loads(res.stdout)] == ["old"]


# ------------------------------------------------------------------- disk full (item 6)


@pytest.fixture
def small_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Registries opened from now on can grow by a few pages only: SQLite itself then fails
    with SQLITE_FULL ("database or disk is full"), as it does on a full disk."""
    import hpatool.registry.core as registry

    connect = registry._connect

    def small(path: Path) -> sqlite3.Connection:
        conn = connect(path)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages + 2}")
        return conn

    monkeypatch.setattr(registry, "_connect", small)
    yield


def test_disk_full_during_add_says_so_and_changes_nothing(
    tmp_path: Path, cli: Invoke, home: Path, request: pytest.FixtureRequest
) -> None:
    assert cli("datasets", "add", "keep", "--labels", labels(tmp_path)).exit_code == 0
    before = snapshot(home)
    request.getfixturevalue("small_disk")
    big = labels(tmp_path, n=3000, name="big.csv")
    msg = one_line_error(cli("datasets", "add", "big", "--labels", big), 1)
    assert msg == (
        f"error: disk full: registry {home / REGISTRY_FILE} could not be written, and nothing "
        f"was changed; free some space on the disk of {home} and run the command again"
    )
    assert snapshot(home) == before
    with Registry.open(home) as reg:  # still usable, and not left inside a transaction
        assert not reg.conn.in_transaction
        assert [d.name for d in reg.datasets()] == ["keep"]


# ----------------------------------------------------------- concurrent writers (item 7)


def test_concurrent_split_without_force_fails(
    tmp_path: Path, cli: Invoke, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another split (seed 2) lands while this one (seed 1) computes its folds: this one must
    fail as if it had come second, and the registry keeps the other one's folds."""
    import hpatool.data.split as split_module

    assert cli("datasets", "add", "d", "--labels", labels(tmp_path)).exit_code == 0
    make_folds = split_module.make_folds
    calls: list[int] = []

    def interleaved(targets: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
        calls.append(seed)
        if len(calls) == 1:
            with Registry.open(home) as other:
                split_module.split_dataset(other, "d", folds=3, seed=2)
        return make_folds(targets, folds=folds, seed=seed)

    monkeypatch.setattr(split_module, "make_folds", interleaved)
    msg = one_line_error(cli("split", "d", "--folds", "3", "--seed", "1"), 2)
    assert msg == (
        "error: dataset 'd' is already split into 3 folds with seed 2; pass --force to replace "
        "the split (runs keep their record)"
    )
    with Registry.open(home) as reg:
        info = reg.split_info("d")
        assert len(reg.folds("d")) == 12
    assert info is not None and (info["folds"], info["seed"]) == (3, 2)


def test_remove_and_add_during_split_leaves_no_stale_folds(
    tmp_path: Path, cli: Invoke, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hpatool.data.split as split_module
    from hpatool.catalog import add_dataset, remove_dataset

    assert cli("datasets", "add", "d", "--labels", labels(tmp_path)).exit_code == 0
    other_csv = tmp_path / "other.csv"
    other_csv.write_text("Id,Target\n" + "".join(f"t{i},{i % 3}\n" for i in range(6)))
    make_folds = split_module.make_folds

    def interleaved(targets: np.ndarray, folds: int = 5, seed: int = 0) -> np.ndarray:
        with Registry.open(home) as other:
            remove_dataset(other, "d")
            add_dataset(other, "d", labels=other_csv)
        return make_folds(targets, folds=folds, seed=seed)

    monkeypatch.setattr(split_module, "make_folds", interleaved)
    msg = one_line_error(cli("split", "d", "--folds", "3"), 1)
    assert msg == (
        f"error: dataset 'd' changed in {home / REGISTRY_FILE} while it was being split "
        "(removed and added again, or given other samples); nothing was stored: run the split "
        "again"
    )
    res = cli("datasets", "show", "d", "--json")
    assert res.exit_code == 0 and "folds" not in json.loads(res.stdout)
    with Registry.open(home) as reg:
        assert reg.conn.execute("SELECT COUNT(*) FROM folds").fetchone()[0] == 0
        assert [s.id for s in reg.samples("d")] == [f"t{i}" for i in range(6)]


def test_set_folds_refuses_ids_the_dataset_does_not_have(tmp_path: Path, home: Path) -> None:
    with Registry.open(home) as reg:
        reg.create_dataset("d", "train", ["a", "b"], [(0,), (1,)])
        with pytest.raises(DataError, match=r"^dataset 'd' changed in .* while it was being"):
            reg.set_folds("d", ["a", "zz"], [0, 1], folds=2, seed=0)
        assert reg.split_info("d") is None


def test_folds_never_outlive_their_samples(tmp_path: Path, home: Path) -> None:
    with Registry.open(home) as reg:
        reg.create_dataset("d", "train", ["a", "b"], [(0,), (1,)])
        reg.set_folds("d", ["a", "b"], [0, 1], folds=2, seed=0)
        with reg.transaction() as conn:
            conn.execute("DELETE FROM samples WHERE sample_id = 'a'")
        assert reg.conn.execute("SELECT sample_id FROM folds").fetchall() == [("b",)]


def test_stale_fold_rows_are_refused_by_show(tmp_path: Path, cli: Invoke, home: Path) -> None:
    assert cli("datasets", "add", "d", "--labels", labels(tmp_path)).exit_code == 0
    assert cli("split", "d", "--folds", "3").exit_code == 0
    sql(home, "INSERT INTO folds VALUES (1, 'ghost', 0)", foreign_keys=False)
    msg = one_line_error(cli("datasets", "show", "d"), 1)
    assert msg == (
        f"error: registry {home / REGISTRY_FILE}: table folds, dataset 'd', sample 'ghost', "
        "column sample_id: bad value 'ghost' (the dataset has no such sample); redo the split "
        "with 'hpatool split d --folds 3 --force'"
    )


def test_migration_drops_stale_folds_of_an_old_registry(home: Path) -> None:
    home.mkdir()
    conn = sqlite3.connect(home / REGISTRY_FILE)
    conn.executescript(MIGRATIONS[0])
    conn.execute(
        "INSERT INTO datasets (id, name, kind, created_at, updated_at)"
        " VALUES (1, 'd', 'train', 't', 't')"
    )
    conn.execute("INSERT INTO samples VALUES (1, 0, 'a', '0', NULL)")
    conn.execute("INSERT INTO splits VALUES (1, 2, 0, 't')")
    conn.executemany("INSERT INTO folds VALUES (1, ?, ?)", [("a", 0), ("gone", 1)])
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with Registry.open(home) as reg:
        assert reg.folds("d") == {"a": 0}


def test_concurrent_splits_in_two_processes(tmp_path: Path, cli: Invoke, home: Path) -> None:
    """Two real processes split one dataset with different seeds: one wins, the other fails
    with the 'already split' message; the registry holds the winner's seed."""
    assert cli("datasets", "add", "d", "--labels", labels(tmp_path, n=300)).exit_code == 0
    env = {**os.environ, "HPATOOL_HOME": str(home), "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "hpatool", "split", "d", "--folds", "3", "--seed", str(seed)],
            env=env,
            cwd=REPO,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for seed in (1, 2)
    ]
    results = [(p.wait(timeout=120), p.communicate()[1].strip()) for p in procs]
    # Overlapping or not, the second to write must fail: a different seed needs --force.
    assert sorted(code for code, _ in results) == [0, 2], results
    with Registry.open(home) as reg:
        info = reg.split_info("d")
    assert info is not None
    (loser,) = [err for code, err in results if code == 2]
    assert loser == (
        f"error: dataset 'd' is already split into 3 folds with seed {info['seed']}; pass "
        "--force to replace the split (runs keep their record)"
    )
