"""The registry's datasets and samples: registering, looking up, updating and removing
datasets; reading samples, appending them and setting their per-sample status."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hpatool.errors import AlreadyExists, DataError, NotFound, UsageError
from hpatool.registry.records import (
    KINDS,
    DatasetRecord,
    Sample,
    _json_value,
    _target,
    bad_row,
    check_name,
    now,
)
from hpatool.registry.transaction import RegistryConnection


class DatasetQueries(RegistryConnection):
    """The ``datasets`` and ``samples`` tables (a mixin of ``Registry``)."""

    _DATASET_SELECT = """
        SELECT d.id, d.name, d.kind, d.root, d.labels_path, d.labels_sha256, d.parent,
               d.provenance, d.created_at, d.updated_at,
               (SELECT COUNT(*) FROM samples s WHERE s.dataset_id = d.id),
               (SELECT COUNT(*) FROM samples s WHERE s.dataset_id = d.id AND s.target IS NOT NULL)
        FROM datasets d
    """

    def _dataset_row(self, row: Sequence[Any]) -> DatasetRecord:
        """A dataset row; a value that cannot be used is kept in ``problem`` (so that one
        hand-edited row does not hide the others) and ``dataset(name)`` refuses it."""
        problem = None
        try:
            provenance = _json_value(row[7], dict)
        except ValueError as exc:
            provenance = {}
            problem = bad_row(
                self.path,
                "datasets",
                f"dataset {row[1]!r}",
                "provenance",
                row[7],
                str(exc),
                f"repair the value, or 'hpatool datasets remove {row[1]}' and add it again",
            )
        kind, root = row[2], row[3]
        for column, value, ok, why in (
            ("kind", kind, kind in KINDS, f"not one of {', '.join(KINDS)}"),
            ("root", root, root is None or isinstance(root, str), "not a folder path"),
        ):
            if not ok:
                problem = problem or bad_row(
                    self.path,
                    "datasets",
                    f"dataset {row[1]!r}",
                    column,
                    value,
                    why,
                    f"repair the value, or 'hpatool datasets remove {row[1]}' and add it again",
                )
        kind = kind if kind in KINDS else "external"
        root = root if isinstance(root, str) else None
        return DatasetRecord(
            id=row[0],
            name=row[1],
            kind=kind,
            root=Path(root) if root else None,
            labels_path=row[4],
            labels_sha256=row[5],
            parent=row[6],
            provenance=provenance,
            created_at=row[8],
            updated_at=row[9],
            samples=row[10],
            labelled=row[11],
            problem=problem,
        )

    def datasets(self) -> list[DatasetRecord]:
        rows = self.conn.execute(self._DATASET_SELECT + " ORDER BY d.name").fetchall()
        return [self._dataset_row(r) for r in rows]

    def has_dataset(self, name: str) -> bool:
        row = self.conn.execute("SELECT 1 FROM datasets WHERE name = ?", (name,)).fetchone()
        return row is not None

    def ensure_new(self, name: str) -> None:
        """Raise ``AlreadyExists`` if a dataset called ``name`` is registered."""
        if self.has_dataset(name):
            raise AlreadyExists(
                f"dataset {name!r} already exists in {self.path}; choose another name or "
                f"run 'hpatool datasets remove {name}' first"
            )

    def dataset(self, name: str, *, usable: bool = True) -> DatasetRecord:
        """The record of dataset ``name``; with ``usable`` (the default) a ``DataError`` naming
        the row if a value of it cannot be used (``usable=False`` lets it be removed)."""
        row = self.conn.execute(self._DATASET_SELECT + " WHERE d.name = ?", (name,)).fetchone()
        if row is None:
            names = [r[0] for r in self.conn.execute("SELECT name FROM datasets ORDER BY name")]
            known = ", ".join(names) if names else "none yet; add one with 'hpatool datasets add'"
            raise NotFound(f"unknown dataset {name!r} in {self.path} (known: {known})")
        record = self._dataset_row(row)
        if usable and record.problem:
            raise DataError(record.problem)
        return record

    def create_dataset(
        self,
        name: str,
        kind: str,
        ids: Sequence[str],
        targets: Sequence[Sequence[int] | None],
        *,
        root: Path | None = None,
        labels_path: str | None = None,
        labels_sha256: str | None = None,
        parent: str | None = None,
        provenance: dict[str, Any] | None = None,
        statuses: Sequence[str | None] | None = None,
    ) -> DatasetRecord:
        """Insert a dataset and its samples in one transaction; the name must be new."""
        check_name(name)
        if kind not in KINDS:
            raise UsageError(f"invalid kind {kind!r}; use one of {', '.join(KINDS)}")
        if len(ids) != len(targets):
            raise ValueError("ids and targets differ in length")
        stamp = now()
        with self.transaction() as conn:
            self.ensure_new(name)
            cur = conn.execute(
                "INSERT INTO datasets (name, kind, root, labels_path, labels_sha256, parent,"
                " provenance, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    kind,
                    str(root) if root else None,
                    labels_path,
                    labels_sha256,
                    parent,
                    json.dumps(provenance or {}, sort_keys=True),
                    stamp,
                    stamp,
                ),
            )
            dataset_id = cur.lastrowid
            status_list = statuses if statuses is not None else [None] * len(ids)
            conn.executemany(
                "INSERT INTO samples (dataset_id, idx, sample_id, target, status)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    (dataset_id, i, sid, " ".join(map(str, t)) if t is not None else None, st)
                    for i, (sid, t, st) in enumerate(zip(ids, targets, status_list, strict=True))
                ),
            )
        return self.dataset(name)

    def update_dataset(
        self,
        name: str,
        *,
        root: Path | None = None,
        provenance: dict[str, Any] | None = None,
        kind: str | None = None,
    ) -> DatasetRecord:
        """Change a dataset's image folder, provenance and/or kind (``None``: unchanged)."""
        if kind is not None and kind not in KINDS:
            raise UsageError(f"invalid kind {kind!r}; use one of {', '.join(KINDS)}")
        with self.transaction() as conn:
            record = self.dataset(name)  # looked up under the write lock
            if root is not None:
                conn.execute("UPDATE datasets SET root = ? WHERE id = ?", (str(root), record.id))
            if kind is not None:
                conn.execute("UPDATE datasets SET kind = ? WHERE id = ?", (kind, record.id))
            if provenance is not None:
                conn.execute(
                    "UPDATE datasets SET provenance = ? WHERE id = ?",
                    (json.dumps(provenance, sort_keys=True), record.id),
                )
            conn.execute("UPDATE datasets SET updated_at = ? WHERE id = ?", (now(), record.id))
        return self.dataset(name)

    def remove_dataset(self, name: str) -> DatasetRecord:
        with self.transaction() as conn:
            record = self.dataset(name, usable=False)  # a broken row can still be removed
            conn.execute("DELETE FROM datasets WHERE id = ?", (record.id,))
        return record

    # ----------------------------------------------------------------- samples

    def samples(self, name: str) -> list[Sample]:
        """The samples of a dataset in registration order."""
        record = self.dataset(name)
        rows = self.conn.execute(
            "SELECT sample_id, target, status FROM samples WHERE dataset_id = ? ORDER BY idx",
            (record.id,),
        )
        return [self._sample_row(name, r) for r in rows]

    def _sample_row(self, name: str, row: Sequence[Any]) -> Sample:
        from hpatool.ids import id_problem

        problem = id_problem(row[0]) if isinstance(row[0], str) else "not text"
        if problem is not None:  # a hand edit: nothing outside the image folder is ever read
            raise DataError(
                bad_row(
                    self.path,
                    "samples",
                    f"dataset {name!r}",
                    "sample_id",
                    row[0],
                    f"an id that could name a file outside the image folder: {problem}",
                    "repair the id, or remove the dataset and add it again from its CSV",
                )
            )
        try:
            return Sample(row[0], _target(row[1]), row[2])
        except ValueError as exc:
            raise DataError(
                bad_row(
                    self.path,
                    "samples",
                    f"dataset {name!r}, sample {row[0]!r}",
                    "target",
                    row[1],
                    str(exc),
                    "repair the value, or remove the dataset and add it again from its CSV",
                )
            ) from None

    def sample(self, name: str, sample_id: str) -> Sample:
        record = self.dataset(name)
        row = self.conn.execute(
            "SELECT sample_id, target, status FROM samples WHERE dataset_id = ? AND sample_id = ?",
            (record.id, sample_id),
        ).fetchone()
        if row is None:
            raise NotFound(f"dataset {name!r} has no sample {sample_id!r}")
        return self._sample_row(name, row)

    def set_status(self, name: str, updates: Iterable[tuple[str, str | None]]) -> None:
        """Set per-sample status values (``(sample_id, status)`` pairs) in one transaction."""
        with self.transaction() as conn:
            record = self.dataset(name)  # looked up under the write lock
            conn.executemany(
                "UPDATE samples SET status = ? WHERE dataset_id = ? AND sample_id = ?",
                ((st, record.id, sid) for sid, st in updates),
            )

    # ---- external data (download/preprocess)

    def status_counts(self, name: str) -> dict[str | None, int]:
        """How many samples have each status (``None`` = pending / never set)."""
        record = self.dataset(name)
        rows = self.conn.execute(
            "SELECT status, COUNT(*) FROM samples WHERE dataset_id = ? GROUP BY status",
            (record.id,),
        )
        return {r[0]: r[1] for r in rows}

    def add_samples(
        self,
        name: str,
        ids: Sequence[str],
        targets: Sequence[Sequence[int] | None],
        statuses: Sequence[str | None] | None = None,
    ) -> None:
        """Append new samples after the existing ones, in one transaction (ids must be new)."""
        status_list = statuses if statuses is not None else [None] * len(ids)
        with self.transaction() as conn:
            record = self.dataset(name)  # looked up under the write lock
            last = conn.execute(
                "SELECT COALESCE(MAX(idx), -1) FROM samples WHERE dataset_id = ?", (record.id,)
            ).fetchone()[0]
            conn.executemany(
                "INSERT INTO samples (dataset_id, idx, sample_id, target, status)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    (
                        record.id,
                        last + 1 + i,
                        sid,
                        " ".join(map(str, t)) if t is not None else None,
                        st,
                    )
                    for i, (sid, t, st) in enumerate(zip(ids, targets, status_list, strict=True))
                ),
            )
            conn.execute("UPDATE datasets SET updated_at = ? WHERE id = ?", (now(), record.id))

    def set_origin(
        self,
        name: str,
        *,
        labels_path: str | None = None,
        labels_sha256: str | None = None,
        parent: str | None = None,
    ) -> DatasetRecord:
        """Record where a dataset came from: its label CSV (path, sha256) and/or parent dataset."""
        with self.transaction() as conn:
            record = self.dataset(name)  # looked up under the write lock
            if labels_path is not None:
                conn.execute(
                    "UPDATE datasets SET labels_path = ?, labels_sha256 = ? WHERE id = ?",
                    (labels_path, labels_sha256, record.id),
                )
            if parent is not None:
                conn.execute("UPDATE datasets SET parent = ? WHERE id = ?", (parent, record.id))
            conn.execute("UPDATE datasets SET updated_at = ? WHERE id = ?", (now(), record.id))
        return self.dataset(name)

    def dataset_at(self, folder: Path, prefer: str | None = None) -> DatasetRecord | None:
        """The dataset whose image folder (``root``, or a download's ``raw_dir``) is ``folder``.

        Several datasets may share a folder (a test set registered over the train images,
        say): then ``prefer`` if it is one of them (the parent an earlier run recorded), else
        the one registered first, so that adding a dataset never changes the answer."""
        target = str(folder.expanduser().resolve())
        found = [
            record
            for record in self.datasets()
            if (record.root is not None and str(record.root) == target)
            or record.provenance.get("raw_dir") == target
        ]
        for record in found:
            if record.name == prefer:
                return record
        return min(found, key=lambda r: (r.created_at, r.id)) if found else None
