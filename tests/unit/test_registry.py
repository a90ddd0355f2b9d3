from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from hpatool.errors import AlreadyExists, DataError, NotFound, UsageError
from hpatool.registry import REGISTRY_FILE, SCHEMA_VERSION, Registry, resolve_home


def test_fresh_registry_has_schema_and_wal(tmp_path: Path) -> None:
    with Registry.open(tmp_path / "h") as reg:
        assert reg.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert reg.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {
            r[0] for r in reg.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        assert {"datasets", "samples", "splits", "folds", "runs"} <= tables


def test_reopen_keeps_data(tmp_path: Path) -> None:
    with Registry.open(tmp_path) as reg:
        reg.create_dataset("a", "train", ["x1", "x2"], [(0, 3), None])
    with Registry.open(tmp_path) as reg:
        rec = reg.dataset("a")
        assert (rec.samples, rec.labelled, rec.kind) == (2, 1, "train")
        assert [s.target for s in reg.samples("a")] == [(0, 3), None]


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    Registry.open(tmp_path).close()
    conn = sqlite3.connect(tmp_path / REGISTRY_FILE)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(DataError, match="newer than this hpatool"):
        Registry.open(tmp_path)


def test_not_a_database(tmp_path: Path) -> None:
    (tmp_path / REGISTRY_FILE).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DataError, match="cannot be opened"):
        Registry.open(tmp_path)


def test_home_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        Registry.open(f)


def test_resolve_home_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPATOOL_HOME", str(tmp_path / "env"))
    assert resolve_home(tmp_path / "opt") == tmp_path / "opt"
    assert resolve_home(None) == tmp_path / "env"
    monkeypatch.delenv("HPATOOL_HOME")
    assert "hpatool" in str(resolve_home(None))


def test_failed_transaction_rolls_back(tmp_path: Path) -> None:
    with Registry.open(tmp_path) as reg:
        reg.create_dataset("a", "train", ["x1"], [(1,)])
        with pytest.raises(AlreadyExists):
            reg.create_dataset("a", "test", ["y"], [None])
        with pytest.raises(ValueError), reg.transaction() as conn:
            conn.execute("DELETE FROM samples")
            raise ValueError("boom")
        assert reg.dataset("a").samples == 1
        with pytest.raises(NotFound, match=r"unknown dataset 'b' .* \(known: a\)"):
            reg.dataset("b")


def test_remove_cascades(tmp_path: Path) -> None:
    with Registry.open(tmp_path) as reg:
        reg.create_dataset("a", "train", ["x1", "x2"], [(1,), (2,)])
        reg.remove_dataset("a")
        assert reg.conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 0


# ------------------------------------------------------------------------ the unit of work


def _dump(path: Path) -> list[str]:
    conn = sqlite3.connect(path / REGISTRY_FILE)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def test_failure_between_two_writes_leaves_registry_unchanged(tmp_path: Path) -> None:
    with Registry.open(tmp_path) as reg:
        reg.create_dataset("a", "train", ["x1", "x2"], [(0,), (1,)])
        before = _dump(tmp_path)
        with pytest.raises(RuntimeError, match="between the writes"), reg.transaction():
            reg.create_dataset("b", "test", ["y1"], [None])  # write 1 (its own transaction joins)
            reg.set_folds("a", ["x1", "x2"], [0, 1], folds=2, seed=0)  # write 2
            raise RuntimeError("failure between the writes")
        assert not reg.conn.in_transaction
        assert _dump(tmp_path) == before
        assert [d.name for d in reg.datasets()] == ["a"] and reg.split_info("a") is None
    assert _dump(tmp_path) == before  # and nothing lands at close either


def test_nested_transactions_join_the_outer_one(tmp_path: Path) -> None:
    with Registry.open(tmp_path) as reg, Registry.open(tmp_path) as other:
        with reg.transaction() as outer:
            with reg.transaction() as inner:
                assert inner is outer
                reg.create_dataset("a", "train", ["x1"], [(0,)])
            # the inner block ended, but nothing is committed until the outer one ends
            assert reg.conn.in_transaction
            assert other.datasets() == []
            reg.remove_dataset("a")
            reg.create_dataset("a", "test", ["y1", "y2"], [None, None])
        assert not reg.conn.in_transaction
        assert [(d.name, d.kind, d.samples) for d in other.datasets()] == [("a", "test", 2)]


def test_library_units_of_work_join_the_callers_transaction(tmp_path: Path) -> None:
    from hpatool.catalog import add_dataset, remove_dataset

    labels = tmp_path / "labels.csv"
    labels.write_text("Id,Target\na1,0\na2,1 2\n")
    with Registry.open(tmp_path / "home") as reg:
        with pytest.raises(AlreadyExists), reg.transaction():
            add_dataset(reg, "one", labels=labels)
            add_dataset(reg, "two", labels=labels)
            add_dataset(reg, "one", labels=labels)  # fails: "one" was just added, so neither lands
        assert reg.datasets() == []
        add_dataset(reg, "one", labels=labels)
        with pytest.raises(RuntimeError), reg.transaction():
            remove_dataset(reg, "one")
            raise RuntimeError("after the removal")
        assert [d.name for d in reg.datasets()] == ["one"]


def _version_3_registry(home: Path) -> None:
    """A registry as hpatool 3 left it: one dataset and one run, no experiments."""
    from hpatool.registry import MIGRATIONS

    home.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(home / REGISTRY_FILE)
    for migration in MIGRATIONS[:3]:
        conn.executescript(migration)
    conn.execute(
        "INSERT INTO datasets (id, name, kind, created_at, updated_at)"
        " VALUES (1, 'old', 'train', 'x', 'x')"
    )
    conn.execute(
        "INSERT INTO runs (name, arch, datasets, fold, out_dir, status, created_at, updated_at)"
        " VALUES ('r0', 'resnet18', '[\"old\"]', 0, '/runs/r0', 'done', 'x', 'x')"
    )
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()


def test_version_3_registry_is_migrated_to_experiments(tmp_path: Path) -> None:
    _version_3_registry(tmp_path)
    with Registry.open(tmp_path) as reg:
        assert reg.schema_version() == SCHEMA_VERSION == 4
        old = reg.run("r0")
        assert old.experiment is None and old.to_json()["experiment"] is None
        assert reg.experiments() == []
        reg.create_experiment("exp", datasets=["old"], options={"arch": "resnet18"})
        reg.create_run(
            "exp-f1", arch="resnet18", datasets=["old"], fold=1, config={},
            out_dir=tmp_path / "exp-f1", experiment="exp",
        )  # fmt: skip
        reg.create_run(
            "exp-f0", arch="resnet18", datasets=["old"], fold=0, config={},
            out_dir=tmp_path / "exp-f0", experiment="exp",
        )  # fmt: skip
    with Registry.open(tmp_path) as reg:
        assert [r.name for r in reg.experiment_runs("exp")] == ["exp-f0", "exp-f1"]
        exp = reg.experiment("exp")
        assert (exp.datasets, exp.options, exp.runs) == (["old"], {"arch": "resnet18"}, 2)
        assert [e.name for e in reg.experiments()] == ["exp"]
        assert reg.run("exp-f0").experiment == "exp"
        with pytest.raises(AlreadyExists, match="experiment 'exp' already exists"):
            reg.create_experiment("exp", datasets=["old"])
        with pytest.raises(NotFound, match=r"no experiment 'nope'.*'hpatool experiments list'"):
            reg.experiment_runs("nope")
        with pytest.raises(NotFound, match="no experiment 'nope'"):
            reg.create_run(
                "x", arch="resnet18", datasets=["old"], fold=0, config={},
                out_dir=tmp_path / "x", experiment="nope",
            )  # fmt: skip
        assert not reg.has_run("x")
        reg.delete_experiment("exp")
        assert reg.run("exp-f0").experiment is None and reg.experiments() == []


def test_version_3_registry_reads_when_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _version_3_registry(tmp_path)
    monkeypatch.setattr("hpatool.registry.core._read_only_reason", lambda *a: "test")
    with Registry.open(tmp_path) as reg:
        assert reg.read_only and reg.schema_version() == 3  # not migrated
        assert [(r.name, r.experiment) for r in reg.runs()] == [("r0", None)]
        assert reg.run("r0").status == "done"
        assert reg.experiments() == [] and not reg.has_experiment("exp")
        with pytest.raises(NotFound, match="no experiment 'exp'"):
            reg.experiment_runs("exp")
