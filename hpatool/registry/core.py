"""``Registry``: opening the registry (creating and migrating it, or read-only), closing it;
its queries come from the per-table mixins."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from hpatool.errors import DataError, UsageError
from hpatool.registry.connection import (
    REGISTRY_FILE,
    _connect,
    _connect_read_only,
    _read_only_reason,
    _sqlite_error,
    resolve_home,
)
from hpatool.registry.datasets import DatasetQueries
from hpatool.registry.dedup import DedupQueries
from hpatool.registry.experiments import ExperimentQueries
from hpatool.registry.folds import FoldQueries
from hpatool.registry.runs import RunQueries
from hpatool.registry.schema import MIGRATIONS, SCHEMA_VERSION


@dataclass
class Registry(DatasetQueries, FoldQueries, RunQueries, DedupQueries, ExperimentQueries):
    """An open registry. Use as a context manager, or call ``close()``.

    A registry that cannot be written (a read-only mount, file or folder) is opened read-only:
    reading commands work, and a writing command says it is read-only (``read_only`` says why).
    """

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
