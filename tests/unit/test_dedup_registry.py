"""The registry's duplicate tables (``hpatool.registry.dedup``): hashes and clusters are
stored and read back, a run replaces the clusters of its datasets only, they go with their
samples, and a version-2 registry is migrated with its data kept."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from hpatool.errors import NotFound
from hpatool.registry import MIGRATIONS, REGISTRY_FILE, SCHEMA_VERSION, Registry


def _three(reg: Registry) -> None:
    reg.create_dataset("tr", "train", ["a", "b", "c"], [(0,), (1,), None])
    reg.create_dataset("ex", "external", ["x", "y"], [(0,), (2,)])
    reg.create_dataset("te", "test", ["t1", "t2"], [None, None])


def test_hashes_round_trip_unsigned_words(tmp_path: Path) -> None:
    with Registry.open(tmp_path) as reg:
        _three(reg)
        big = (2**64 - 1, 2**63)
        reg.store_hashes("tr", "m1", [("a", "s1", big), ("b", "s2", None), ("gone", "s", (1, 2))])
        stored = reg.stored_hashes("tr")
        assert set(stored) == {"a", "b"}  # an id the dataset does not have is not stored
        assert stored["a"].words == big and stored["a"].signature == "s1"
        assert stored["b"].words is None and stored["b"].method == "m1"
        reg.store_hashes("tr", "m2", [("a", "s9", (3, 4))])
        assert reg.stored_hashes("tr")["a"].words == (3, 4)


def test_clusters_restricted_to_datasets_and_replaced_per_dataset(tmp_path: Path) -> None:
    with Registry.open(tmp_path) as reg:
        _three(reg)
        assert not reg.dedup_done("tr")
        reg.set_clusters(
            ["tr", "ex", "te"],
            [[("tr", "a"), ("ex", "x"), ("te", "t1")], [("tr", "b"), ("tr", "c")]],
            max_distance=16,
        )
        assert reg.clusters() == [
            [("ex", "x"), ("te", "t1"), ("tr", "a")],
            [("tr", "b"), ("tr", "c")],
        ]
        assert reg.clusters(["tr"]) == [[("tr", "b"), ("tr", "c")]]
        assert reg.clusters(["tr", "te"]) == [
            [("te", "t1"), ("tr", "a")],
            [("tr", "b"), ("tr", "c")],
        ]
        ids = reg.cluster_ids("tr")
        assert set(ids) == {"a", "b", "c"} and ids["b"] == ids["c"] != ids["a"]
        assert set(reg.cluster_ids("tr", ["tr"])) == {"b", "c"}
        info = reg.dedup_info("te")
        assert info is not None
        assert (info["max_distance"], info["datasets"]) == (16, ["ex", "te", "tr"])
        # A run over tr and ex alone replaces their clusters; te's member stays alone.
        reg.set_clusters(["tr", "ex"], [[("tr", "c"), ("ex", "y")]], max_distance=8)
        assert reg.clusters() == [[("ex", "y"), ("tr", "c")]]
        assert reg.dedup_info("tr")["max_distance"] == 8  # type: ignore[index]
        assert reg.dedup_info("te")["max_distance"] == 16  # type: ignore[index]
        # Removing a dataset takes its cluster rows and dedup record with it.
        reg.remove_dataset("ex")
        assert reg.clusters() == []
        with pytest.raises(NotFound, match="unknown dataset 'ex'"):
            reg.clusters(["ex"])


def test_version_2_registry_is_migrated(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / REGISTRY_FILE)
    conn.executescript(MIGRATIONS[0])
    conn.executescript(MIGRATIONS[1])
    conn.execute(
        "INSERT INTO datasets (id, name, kind, created_at, updated_at)"
        " VALUES (1, 'old', 'train', 'x', 'x')"
    )
    conn.execute("INSERT INTO samples (dataset_id, idx, sample_id) VALUES (1, 0, 's')")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    with Registry.open(tmp_path) as reg:
        assert reg.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert [s.id for s in reg.samples("old")] == ["s"]
        assert reg.clusters() == [] and not reg.dedup_done("old")
        reg.store_hashes("old", "m", [("s", "sig", (1, 2))])
        assert reg.stored_hashes("old")["s"].words == (1, 2)
