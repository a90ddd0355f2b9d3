"""The open registry connection and its unit of work, ``transaction()``: the base that
``Registry`` and its query mixins share."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from hpatool.errors import HpaToolError
from hpatool.registry.connection import REGISTRY_FILE, _sqlite_error


@dataclass
class RegistryConnection:
    """An open registry connection: its home, the SQLite connection and, when it can only be
    read, why (``read_only``); writes go through ``transaction()``."""

    home: Path
    conn: sqlite3.Connection = field(repr=False)
    read_only: str | None = None

    @property
    def path(self) -> Path:
        return self.home / REGISTRY_FILE

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
