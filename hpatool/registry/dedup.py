"""The registry's duplicate tables: each sample's perceptual hash (``sample_hashes``), the
duplicate clusters (``clusters``) and which datasets ``dedup`` has clustered, with which
``--max-distance`` (``dedup_runs``).

A cluster is a number shared by its members (two or more samples, of one or several
datasets). A ``dedup`` run replaces the clusters of the datasets it was given: a cluster of
an earlier run keeps only its members in other datasets (and counts only while it still has
two), so run ``dedup`` over every dataset used together.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hpatool.registry.records import now
from hpatool.registry.transaction import RegistryConnection

if TYPE_CHECKING:
    from hpatool.registry.records import DatasetRecord

_SIGN = 1 << 63


def _to_sql(word: int | None) -> int | None:
    """An unsigned 64-bit word as SQLite's signed INTEGER."""
    return None if word is None else (word - (1 << 64) if word >= _SIGN else word)


def _from_sql(value: int | None) -> int | None:
    return None if value is None else value & ((1 << 64) - 1)


@dataclass(frozen=True)
class StoredHash:
    """A sample's stored hash: the ``signature`` of the files it was made from (sizes and
    modification times), the hash ``method``, and its 64-bit ``words`` (``None``: a channel
    had nothing to hash)."""

    signature: str
    method: str
    words: tuple[int, int] | None


class DedupQueries(RegistryConnection):
    """The ``sample_hashes``, ``clusters`` and ``dedup_runs`` tables (a mixin of
    ``Registry``, beside ``DatasetQueries``, whose lookups it uses)."""

    if TYPE_CHECKING:

        def dataset(self, name: str, *, usable: bool = True) -> DatasetRecord: ...

    # ---------------------------------------------------------------- hashes

    def stored_hashes(self, name: str) -> dict[str, StoredHash]:
        """The stored hash of each hashed sample of dataset ``name``."""
        record = self.dataset(name)
        rows = self.conn.execute(
            "SELECT sample_id, signature, method, hash_green, hash_blue FROM sample_hashes"
            " WHERE dataset_id = ?",
            (record.id,),
        )
        out: dict[str, StoredHash] = {}
        for sample_id, sig, method, green, blue in rows:
            words = None
            if not (isinstance(sig, str) and all(isinstance(v, int | None) for v in (green, blue))):
                continue  # a damaged (hand-edited) row: the sample counts as not hashed yet,
                # so dedup hashes it again and store_hashes replaces the row
            if green is not None and blue is not None:
                words = (_from_sql(green) or 0, _from_sql(blue) or 0)
            out[sample_id] = StoredHash(sig, method, words)
        return out

    def store_hashes(
        self,
        name: str,
        method: str,
        rows: Iterable[tuple[str, str, tuple[int, int] | None]],
    ) -> None:
        """Store ``(sample_id, signature, words)`` hashes (replacing earlier ones) in one
        transaction; ids the dataset no longer has are skipped."""
        with self.transaction() as conn:
            record = self.dataset(name)  # looked up under the write lock
            conn.executemany(
                "INSERT OR REPLACE INTO sample_hashes"
                " (dataset_id, sample_id, signature, method, hash_green, hash_blue)"
                " SELECT ?, ?, ?, ?, ?, ? WHERE EXISTS"
                " (SELECT 1 FROM samples WHERE dataset_id = ? AND sample_id = ?)",
                (
                    (
                        record.id,
                        sid,
                        sig,
                        method,
                        _to_sql(words[0]) if words else None,
                        _to_sql(words[1]) if words else None,
                        record.id,
                        sid,
                    )
                    for sid, sig, words in rows
                ),
            )

    def drop_hashes(self, name: str, sample_ids: Iterable[str]) -> int:
        """Forget the stored hashes of these samples of dataset ``name`` (their files changed:
        ``dedup`` hashes them again) and their places in duplicate clusters, which were found
        with those hashes, in one transaction; the number of hashes dropped."""
        with self.transaction() as conn:
            record = self.dataset(name)  # looked up under the write lock
            keys = [(record.id, sid) for sid in sample_ids]
            cur = conn.executemany(
                "DELETE FROM sample_hashes WHERE dataset_id = ? AND sample_id = ?", keys
            )
            conn.executemany("DELETE FROM clusters WHERE dataset_id = ? AND sample_id = ?", keys)
        return max(cur.rowcount, 0)

    # --------------------------------------------------------------- clusters

    def set_clusters(
        self,
        names: Sequence[str],
        clusters: Sequence[Sequence[tuple[str, str]]],
        *,
        max_distance: int,
    ) -> None:
        """Replace the clusters of datasets ``names`` with ``clusters`` (each a list of
        ``(dataset, sample id)``, all in ``names``), and record the run, in one transaction."""
        with self.transaction() as conn:
            ids = {n: self.dataset(n).id for n in names}
            for dataset_id in ids.values():
                conn.execute("DELETE FROM clusters WHERE dataset_id = ?", (dataset_id,))
            first = conn.execute("SELECT COALESCE(MAX(cluster), -1) + 1 FROM clusters").fetchone()
            conn.executemany(  # a sample removed meanwhile is skipped
                "INSERT INTO clusters (dataset_id, sample_id, cluster) SELECT ?, ?, ? WHERE EXISTS"
                " (SELECT 1 FROM samples WHERE dataset_id = ? AND sample_id = ?)",
                (
                    (ids[dataset], sample_id, first[0] + k, ids[dataset], sample_id)
                    for k, members in enumerate(clusters)
                    for dataset, sample_id in members
                ),
            )
            stamp = now()
            together = json.dumps(sorted(names))
            conn.executemany(
                "INSERT OR REPLACE INTO dedup_runs (dataset_id, max_distance, datasets,"
                " created_at) VALUES (?, ?, ?, ?)",
                ((dataset_id, max_distance, together, stamp) for dataset_id in ids.values()),
            )

    def clusters(self, names: Sequence[str] | None = None) -> list[list[tuple[str, str]]]:
        """The stored duplicate clusters, each a list of ``(dataset, sample id)`` in dataset
        name and registration order, the clusters in the order of their first member.

        With ``names``, only the members in those datasets count, and a cluster is kept if two
        or more of its members are in them; unknown names are a ``NotFound``."""
        wanted = None if names is None else {self.dataset(n).id for n in names}
        rows = self.conn.execute(
            "SELECT c.cluster, c.dataset_id, d.name, c.sample_id FROM clusters c"
            " JOIN datasets d ON d.id = c.dataset_id"
            " JOIN samples s ON s.dataset_id = c.dataset_id AND s.sample_id = c.sample_id"
            " ORDER BY d.name, s.idx"
        )
        groups: dict[int, list[tuple[str, str]]] = {}
        first: dict[int, int] = {}  # cluster -> rank of its first member in that order
        for rank, (cluster, dataset_id, dataset, sample_id) in enumerate(rows):
            if wanted is None or dataset_id in wanted:
                groups.setdefault(cluster, []).append((dataset, sample_id))
                first.setdefault(cluster, rank)
        kept = [c for c, members in groups.items() if len(members) >= 2]
        kept.sort(key=first.__getitem__)
        return [groups[c] for c in kept]

    def cluster_ids(self, name: str, names: Sequence[str] | None = None) -> dict[str, int]:
        """The cluster number of each sample of dataset ``name`` that is in a cluster of two or
        more members (of any dataset; with ``names``, counting only the members in ``name``
        and ``names``)."""
        record = self.dataset(name)
        scope = ""
        params: list[Any] = [record.id]
        if names is not None:
            counted = {record.id} | {self.dataset(n).id for n in names}
            scope = f" AND o.dataset_id IN ({','.join('?' * len(counted))})"
            params += sorted(counted)
        rows = self.conn.execute(
            "SELECT c.sample_id, c.cluster FROM clusters c WHERE c.dataset_id = ? AND"
            f" (SELECT COUNT(*) FROM clusters o WHERE o.cluster = c.cluster{scope}) >= 2",
            params,
        )
        return {sample_id: cluster for sample_id, cluster in rows}

    def dedup_info(self, name: str) -> dict[str, Any] | None:
        """``{"max_distance": d, "datasets": [...], "created_at": ..., "hashed": n}`` if
        ``dedup`` has clustered dataset ``name`` (``datasets``: those clustered with it),
        else ``None``."""
        record = self.dataset(name)
        row = self.conn.execute(
            "SELECT max_distance, datasets, created_at FROM dedup_runs WHERE dataset_id = ?",
            (record.id,),
        ).fetchone()
        if row is None:
            return None
        hashed = self.conn.execute(
            "SELECT COUNT(*) FROM sample_hashes WHERE dataset_id = ?", (record.id,)
        ).fetchone()[0]
        try:
            together = json.loads(row[1])
        except ValueError:
            together = [name]
        return {
            "max_distance": row[0],
            "datasets": together,
            "created_at": row[2],
            "hashed": hashed,
        }

    def dedup_done(self, name: str) -> bool:
        """Whether ``dedup`` has hashed and clustered dataset ``name``."""
        return self.dedup_info(name) is not None
