"""The dataset registry: one SQLite file under the hpatool home.

Home: ``--home`` > ``HPATOOL_HOME`` > the platform's user data dir. WAL journal, a busy timeout
so that concurrent commands wait instead of failing, and a schema version in
``PRAGMA user_version`` with ordered migrations. Each command does its writes in one
``transaction()``, so a failed command leaves the registry as it was.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from hpatool.errors import AlreadyExists, DataError, HpaToolError, NotFound, UsageError
from hpatool.labels import parse_target

REGISTRY_FILE = "registry.sqlite"
BUSY_TIMEOUT_S = 60.0
KINDS = ("train", "test", "external")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# Ordered migrations: MIGRATIONS[i] takes the schema from version i to i + 1.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE datasets (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL CHECK (kind IN ('train', 'test', 'external')),
        root TEXT,
        labels_path TEXT,
        labels_sha256 TEXT,
        parent TEXT,
        provenance TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE samples (
        dataset_id INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        sample_id TEXT NOT NULL,
        target TEXT,
        status TEXT,
        PRIMARY KEY (dataset_id, sample_id)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX samples_order ON samples(dataset_id, idx);
    CREATE TABLE splits (
        dataset_id INTEGER PRIMARY KEY REFERENCES datasets(id) ON DELETE CASCADE,
        folds INTEGER NOT NULL,
        seed INTEGER NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE folds (
        dataset_id INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
        sample_id TEXT NOT NULL,
        fold INTEGER NOT NULL,
        PRIMARY KEY (dataset_id, sample_id)
    ) WITHOUT ROWID;
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        arch TEXT NOT NULL,
        datasets TEXT NOT NULL,
        fold INTEGER,
        config TEXT NOT NULL DEFAULT '{}',
        best_f1 REAL,
        best_epoch INTEGER,
        epochs_done INTEGER NOT NULL DEFAULT 0,
        out_dir TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'running',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    """,
    # 1 -> 2: a fold row belongs to a sample, not only to its dataset, so that removing a sample
    # (or a dataset, and adding it again) can never leave folds for ids it no longer has.
    """
    CREATE TABLE folds_v2 (
        dataset_id INTEGER NOT NULL,
        sample_id TEXT NOT NULL,
        fold INTEGER NOT NULL,
        PRIMARY KEY (dataset_id, sample_id),
        FOREIGN KEY (dataset_id, sample_id) REFERENCES samples(dataset_id, sample_id)
            ON DELETE CASCADE
    ) WITHOUT ROWID;
    INSERT INTO folds_v2 (dataset_id, sample_id, fold)
        SELECT f.dataset_id, f.sample_id, f.fold FROM folds f
        JOIN samples s ON s.dataset_id = f.dataset_id AND s.sample_id = f.sample_id;
    DROP TABLE folds;
    ALTER TABLE folds_v2 RENAME TO folds;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
#: SQLite's primary result codes that ``Registry`` turns into one-line errors.
_SQLITE_READONLY = 8
_SQLITE_FULL = 13


def _sqlite_error(exc: sqlite3.Error, path: Path) -> HpaToolError | None:
    """The one-line error for a full disk or a read-only registry (by SQLite's result code),
    else ``None``."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    if code == _SQLITE_FULL:
        return HpaToolError(
            f"disk full: registry {path} could not be written, and nothing was changed; free "
            f"some space on the disk of {path.parent} and run the command again"
        )
    if code == _SQLITE_READONLY:
        return HpaToolError(
            f"registry {path} is read-only; this command writes to it: make it writable, or "
            "copy the folder somewhere writable and pass that with --home"
        )
    return None


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def resolve_home(home: str | Path | None = None) -> Path:
    """``home`` if given, else ``$HPATOOL_HOME``, else the platform's user data dir.

    An empty ``home`` is refused: it would silently mean the current folder."""
    if home is not None:
        if not str(home).strip():
            raise UsageError(
                "--home is empty; give the registry folder, or leave --home out to use "
                "$HPATOOL_HOME or the user data dir"
            )
        return Path(home).expanduser()
    env = os.environ.get("HPATOOL_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("hpatool", appauthor=False))


def check_name(name: str, what: str = "dataset") -> str:
    if not _NAME.match(name or ""):
        raise UsageError(
            f"invalid {what} name {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class DatasetRecord:
    id: int
    name: str
    kind: str
    root: Path | None
    labels_path: str | None
    labels_sha256: str | None
    parent: str | None
    provenance: dict[str, Any]
    created_at: str
    updated_at: str
    samples: int
    labelled: int
    #: why this row cannot be used as it is (a hand-edited value); ``None`` when it is fine
    problem: str | None = None

    def image_root(self) -> Path:
        """The folder of this dataset's images; a clear error if it has none or it is gone."""
        if self.root is None:
            raise UsageError(
                f"dataset {self.name!r} has no image folder (labels only); register it with "
                "--root DIR or download its images first"
            )
        if not self.root.is_dir():
            raise DataError(f"dataset {self.name!r}: image folder {self.root} does not exist")
        return self.root

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "root": str(self.root) if self.root else None,
            "labels": self.labels_path,
            "labels_sha256": self.labels_sha256,
            "parent": self.parent,
            "provenance": self.provenance,
            "samples": self.samples,
            "labelled": self.labelled,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            **({"problem": self.problem} if self.problem else {}),
        }


@dataclass(frozen=True)
class Sample:
    id: str
    target: tuple[int, ...] | None
    status: str | None = None


@dataclass(frozen=True)
class RunRecord:
    name: str
    arch: str
    datasets: list[str]
    fold: int | None
    config: dict[str, Any]
    best_f1: float | None
    best_epoch: int | None
    epochs_done: int
    out_dir: Path
    status: str
    created_at: str
    updated_at: str
    #: why this row cannot be used as it is (a hand-edited value); ``None`` when it is fine
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "arch": self.arch,
            "datasets": self.datasets,
            "fold": self.fold,
            "config": self.config,
            "best_f1": self.best_f1,
            "best_epoch": self.best_epoch,
            "epochs_done": self.epochs_done,
            "out_dir": str(self.out_dir),
            "status": self.status,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            **({"problem": self.problem} if self.problem else {}),
        }


def _target(text: str | None) -> tuple[int, ...] | None:
    """A stored target; ``ValueError`` (with the reason) if it is not one (a hand edit)."""
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split())
    except ValueError:
        values = ()
    if values and list(values) == sorted(set(values)) and 0 <= values[0] <= values[-1] < 28:
        return values
    return parse_target(text)  # the reason it is not a target (or it was out of order)


def _json_value(text: str | None, kind: type) -> Any:
    """A stored JSON column; ``ValueError`` (with the reason) if it is not a ``kind``."""
    try:
        value = json.loads(text if text is not None else ("{}" if kind is dict else "null"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg} at character {exc.pos}") from None
    if not isinstance(value, kind):
        raise ValueError(f"not a JSON {'object' if kind is dict else 'list'}")
    return value


def bad_row(path: Path, table: str, what: str, column: str, value: Any, why: str, fix: str) -> str:
    """The message for a registry value that cannot be used (typically a hand edit)."""
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return (
        f"registry {path}: table {table}, {what}, column {column}: bad value {shown} ({why}); {fix}"
    )


def _read_only_reason(home: Path, path: Path) -> str | None:
    """Why the registry at ``path`` can only be read (``None`` if it can be written).

    ``os.access`` says so for a read-only mount (for root too) and for a file or folder
    without write permission; SQLite needs the folder writable for its WAL and lock files."""
    if path.exists():
        if hasattr(os, "statvfs") and os.statvfs(home).f_flag & os.ST_RDONLY:
            return "it is on a read-only file system"
        if not os.access(path, os.W_OK):
            return "the file is read-only"
        if not os.access(home, os.W_OK):
            return f"its folder {home} is read-only"
        return None
    if home.is_dir() and not os.access(home, os.W_OK):
        raise UsageError(
            f"hpatool home {home} is read-only and has no registry yet; "
            "choose a writable folder with --home"
        )
    return None


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that never writes. A WAL registry whose folder is read-only has no
    ``-shm`` file to coordinate readers through; with no ``-wal`` content either, nothing
    can be writing it, and SQLite reads it as an immutable file."""
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:
        conn.close()
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise DataError(
            f"registry {path} is read-only and has changes not yet merged from {wal.name}; "
            "open it once where its folder is writable (any 'hpatool datasets list' does it)"
        )
    conn = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None)
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except BaseException:
        conn.close()
        raise
    return conn


@dataclass
class Registry:
    """An open registry. Use as a context manager, or call ``close()``.

    A registry that cannot be written (a read-only mount, file or folder) is opened read-only:
    reading commands work, and a writing command says it is read-only (``read_only`` says why).
    """

    home: Path
    conn: sqlite3.Connection = field(repr=False)
    read_only: str | None = None

    @classmethod
    def open(cls, home: str | Path | None = None) -> Registry:
        home_path = resolve_home(home)
        if home_path.exists() and not home_path.is_dir():
            raise UsageError(f"hpatool home {home_path} is a file; give a folder with --home")
        path = home_path / REGISTRY_FILE
        read_only = _read_only_reason(home_path, path)
        if read_only is None:
            try:
                home_path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(
                    f"cannot create hpatool home {home_path}: {exc.strerror}; "
                    "choose another with --home"
                ) from None
        conn: sqlite3.Connection | None = None
        try:
            try:
                conn = _connect_read_only(path) if read_only else _connect(path)
            except sqlite3.DatabaseError as exc:
                raise _sqlite_error(exc, path) or DataError(
                    f"registry {path} cannot be opened ({exc}); move it aside"
                ) from None
            reg = cls(home=home_path, conn=conn, read_only=read_only)
            reg._migrate(path)
        except BaseException:
            if conn is not None:
                conn.close()  # a registry that cannot be used leaves no connection behind
            raise
        return reg

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def path(self) -> Path:
        return self.home / REGISTRY_FILE

    def _migrate(self, path: Path) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise DataError(
                f"registry {path} has schema version {version}, newer than this hpatool's "
                f"{SCHEMA_VERSION}; upgrade hpatool"
            )
        if self.read_only:
            return  # an older schema reads the same; it is upgraded where it can be written
        with self.transaction():
            # Re-read inside the write lock: another process may have migrated meanwhile.
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            for i in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[i].split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
            self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``): all of it lands, or none of it.

        This is the unit of work: a command opens one around all of its writes, and the write
        methods it calls inside join it (a nested ``transaction()`` opens nothing new), so the
        command's writes land together or not at all. A full disk or a read-only registry ends
        it with one error line that names the registry; nothing of it is kept.
        """
        if self.conn.in_transaction:
            yield self.conn  # join the command's unit of work
            return
        if self.read_only:
            raise self._read_only_error(self.read_only)
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                # SQLite has already rolled back after some errors (a full disk): no second try.
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            error = _sqlite_error(exc, self.path)
            if error is None:
                raise
            raise error from None

    def _read_only_error(self, reason: str) -> HpaToolError:
        return HpaToolError(
            f"registry {self.path} is read-only ({reason}); this command writes to it: make it "
            "writable, or copy the folder somewhere writable and pass that with --home"
        )

    # ---------------------------------------------------------------- datasets

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
        return DatasetRecord(
            id=row[0],
            name=row[1],
            kind=row[2],
            root=Path(row[3]) if row[3] else None,
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
    ) -> DatasetRecord:
        with self.transaction() as conn:
            record = self.dataset(name)  # looked up under the write lock
            if root is not None:
                conn.execute("UPDATE datasets SET root = ? WHERE id = ?", (str(root), record.id))
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

    def dataset_at(self, folder: Path) -> DatasetRecord | None:
        """The dataset whose image folder (``root``, or a download's ``raw_dir``) is ``folder``."""
        target = str(folder.expanduser().resolve())
        for record in self.datasets():
            if record.root is not None and str(record.root) == target:
                return record
            if record.provenance.get("raw_dir") == target:
                return record
        return None

    # ---- folds and runs

    def set_folds(
        self,
        name: str,
        sample_ids: Sequence[str],
        folds_of: Sequence[int],
        *,
        folds: int,
        seed: int,
    ) -> None:
        """Store a dataset's fold assignment (replacing any earlier one) in one transaction.

        ``sample_ids`` must be exactly the dataset's samples, checked inside the transaction:
        folds made from samples that another command has since replaced are refused."""
        if len(sample_ids) != len(folds_of):
            raise ValueError("sample_ids and folds_of differ in length")
        with self.transaction() as conn:
            record = self.dataset(name)
            current = {
                r[0]
                for r in conn.execute(
                    "SELECT sample_id FROM samples WHERE dataset_id = ?", (record.id,)
                )
            }
            if len(current) != len(sample_ids) or not current.issuperset(sample_ids):
                raise DataError(
                    f"dataset {name!r} changed in {self.path} while it was being split (it was "
                    "removed, added again or grew); nothing was stored: run the split again"
                )
            conn.execute("DELETE FROM folds WHERE dataset_id = ?", (record.id,))
            conn.execute("DELETE FROM splits WHERE dataset_id = ?", (record.id,))
            conn.execute(
                "INSERT INTO splits (dataset_id, folds, seed, created_at) VALUES (?, ?, ?, ?)",
                (record.id, folds, seed, now()),
            )
            conn.executemany(
                "INSERT INTO folds (dataset_id, sample_id, fold) VALUES (?, ?, ?)",
                ((record.id, sid, int(k)) for sid, k in zip(sample_ids, folds_of, strict=True)),
            )

    def split_info(self, name: str) -> dict[str, Any] | None:
        """``{"folds": n, "seed": s, "created_at": ...}`` if the dataset is split, else ``None``."""
        record = self.dataset(name)
        row = self.conn.execute(
            "SELECT folds, seed, created_at FROM splits WHERE dataset_id = ?", (record.id,)
        ).fetchone()
        if row is None:
            return None
        return {"folds": row[0], "seed": row[1], "created_at": row[2]}

    def folds(self, name: str) -> dict[str, int]:
        """Fold of each sample id (empty if the dataset is not split).

        A fold outside the split's ``0..folds-1``, or a fold of an id the dataset does not have,
        is a ``DataError`` naming the row (only a hand edit or an old registry makes one)."""
        record = self.dataset(name)
        info = self.split_info(name)
        n = info["folds"] if info else 0
        rows = self.conn.execute(
            "SELECT f.sample_id, f.fold, s.sample_id IS NULL FROM folds f LEFT JOIN samples s"
            " ON s.dataset_id = f.dataset_id AND s.sample_id = f.sample_id"
            " WHERE f.dataset_id = ?",
            (record.id,),
        )
        out: dict[str, int] = {}
        fix = f"redo the split with 'hpatool split {name} --folds {n or 5} --force'"
        for sample_id, k, stale in rows:
            where = f"dataset {name!r}, sample {sample_id!r}"
            if stale:
                why = "the dataset has no such sample"
                raise DataError(
                    bad_row(self.path, "folds", where, "sample_id", sample_id, why, fix)
                )
            if type(k) is not int or not 0 <= k < n:
                why = f"the split has folds 0..{n - 1}" if n else "the dataset is not split"
                raise DataError(bad_row(self.path, "folds", where, "fold", k, why, fix))
            out[sample_id] = k
        return out

    def fold_class_counts(self, name: str) -> list[list[int]] | None:
        """Samples of each class 0..27 in each fold, ``[fold][class]``; ``None`` if not split."""
        info = self.split_info(name)
        if info is None:
            return None
        counts = [[0] * 28 for _ in range(info["folds"])]
        folds = self.folds(name)
        for sample in self.samples(name):
            k = folds.get(sample.id)
            if k is None or sample.target is None:
                continue
            for c in sample.target:
                counts[k][c] += 1
        return counts

    _RUN_SELECT = (
        "SELECT name, arch, datasets, fold, config, best_f1, best_epoch, epochs_done, out_dir,"
        " status, created_at, updated_at FROM runs"
    )

    def _run_row(self, row: Sequence[Any]) -> RunRecord:
        """A run row; a value that cannot be used is kept in ``problem`` (``runs()`` lists the
        others) and ``run(name)`` refuses it."""
        values: dict[str, Any] = {"datasets": [], "config": {}}
        problem = None
        for column, i, kind in (("datasets", 2, list), ("config", 4, dict)):
            try:
                values[column] = _json_value(row[i], kind)
            except ValueError as exc:
                fix = "repair the value (JSON text) with an SQLite editor"
                where = f"run {row[0]!r}"
                problem = problem or bad_row(
                    self.path, "runs", where, column, row[i], str(exc), fix
                )
        return RunRecord(
            name=row[0],
            arch=row[1],
            datasets=values["datasets"],
            fold=row[3],
            config=values["config"],
            best_f1=row[5],
            best_epoch=row[6],
            epochs_done=row[7],
            out_dir=Path(row[8]),
            status=row[9],
            created_at=row[10],
            updated_at=row[11],
            problem=problem,
        )

    def has_run(self, name: str) -> bool:
        row = self.conn.execute("SELECT 1 FROM runs WHERE name = ?", (name,)).fetchone()
        return row is not None

    def runs(self) -> list[RunRecord]:
        rows = self.conn.execute(self._RUN_SELECT + " ORDER BY created_at, name").fetchall()
        return [self._run_row(r) for r in rows]

    def run(self, name: str) -> RunRecord:
        row = self.conn.execute(self._RUN_SELECT + " WHERE name = ?", (name,)).fetchone()
        if row is None:
            names = [r[0] for r in self.conn.execute("SELECT name FROM runs ORDER BY name")]
            known = ", ".join(names) if names else "none yet; start one with 'hpatool train'"
            raise NotFound(f"unknown run {name!r} in {self.path} (known: {known})")
        record = self._run_row(row)
        if record.problem:
            raise DataError(record.problem)
        return record

    def create_run(
        self,
        name: str,
        *,
        arch: str,
        datasets: Sequence[str],
        fold: int | None,
        config: dict[str, Any],
        out_dir: Path,
        replace: bool = False,
    ) -> RunRecord:
        """Register a new training run (status ``running``); the name must be new, unless
        ``replace`` (a run that never reached a checkpoint is started again)."""
        check_name(name, "run")
        stamp = now()
        with self.transaction() as conn:
            if replace:
                conn.execute("DELETE FROM runs WHERE name = ?", (name,))
            if self.has_run(name):
                raise AlreadyExists(
                    f"run {name!r} already exists in {self.path}; pass --resume to continue it "
                    "or choose another --name"
                )
            conn.execute(
                "INSERT INTO runs (name, arch, datasets, fold, config, out_dir, status,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?)",
                (
                    name,
                    arch,
                    json.dumps(list(datasets)),
                    fold,
                    json.dumps(config, sort_keys=True),
                    str(out_dir),
                    stamp,
                    stamp,
                ),
            )
        return self.run(name)

    def update_run(self, name: str, **fields: Any) -> RunRecord:
        """Update some of ``config``, ``best_f1``, ``best_epoch``, ``epochs_done``, ``status``."""
        allowed = {"config", "best_f1", "best_epoch", "epochs_done", "status"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update run fields {sorted(unknown)}")
        sets = [f"{key} = ?" for key in fields]
        values = [
            json.dumps(v, sort_keys=True) if key == "config" else v for key, v in fields.items()
        ]
        with self.transaction() as conn:
            self.run(name)  # NotFound if missing, checked under the write lock
            conn.execute(
                f"UPDATE runs SET {', '.join([*sets, 'updated_at = ?'])} WHERE name = ?",
                (*values, now(), name),
            )
        return self.run(name)
