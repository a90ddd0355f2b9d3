"""The registry's training runs: creating, listing, looking up and updating them."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hpatool.errors import AlreadyExists, DataError, NotFound
from hpatool.registry.records import RunRecord, RunStatus, _json_value, bad_row, check_name, now
from hpatool.registry.transaction import RegistryConnection


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


#: The run columns whose type a hand edit can break (SQLite keeps any value in any column):
#: (column, index in ``_RUN_COLUMNS``, check, what a bad value is not, the value a damaged
#: row is listed with).
_TYPED_RUN_COLUMNS: tuple[tuple[str, int, Callable[[Any], bool], str, Any], ...] = (
    ("fold", 3, lambda v: v is None or _count(v), "not a fold number", None),
    (
        "best_f1",
        5,
        lambda v: v is None or (isinstance(v, int | float) and 0 <= v <= 1),
        "not an F1 between 0 and 1",
        None,
    ),
    ("best_epoch", 6, lambda v: v is None or _count(v), "not an epoch number", None),
    ("epochs_done", 7, _count, "not a count of epochs", 0),
    ("out_dir", 8, lambda v: isinstance(v, str) and v != "", "not a folder path", "."),
    (
        "status",
        9,
        lambda v: v in tuple(RunStatus),
        f"not one of {', '.join(RunStatus)}",
        RunStatus.FAILED,
    ),
)


class RunQueries(RegistryConnection):
    """The ``runs`` table (a mixin of ``Registry``)."""

    _RUN_COLUMNS = (
        "SELECT name, arch, datasets, fold, config, best_f1, best_epoch, epochs_done, out_dir,"
        " status, created_at, updated_at, {experiment} FROM runs"
    )

    def _run_select(self) -> str:
        # A registry of schema 3, opened read-only (so not migrated), has no experiment column.
        return self._RUN_COLUMNS.format(
            experiment="experiment" if self.schema_version() >= 4 else "NULL"
        )

    def schema_version(self) -> int:
        """The schema version of the open file (older than ``SCHEMA_VERSION`` only when it
        was opened read-only)."""
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

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
        kept = list(row)
        for column, i, ok, why, default in _TYPED_RUN_COLUMNS:
            if not ok(row[i]):
                kept[i] = default
                fix = "repair the value with an SQLite editor, or 'hpatool runs remove' the run"
                problem = problem or bad_row(
                    self.path, "runs", f"run {row[0]!r}", column, row[i], why, fix
                )
        return RunRecord(
            name=row[0],
            arch=row[1],
            datasets=values["datasets"],
            fold=kept[3],
            config=values["config"],
            best_f1=kept[5],
            best_epoch=kept[6],
            epochs_done=kept[7],
            out_dir=Path(kept[8]),
            status=kept[9],
            created_at=row[10],
            updated_at=row[11],
            problem=problem,
            experiment=row[12],
        )

    def has_run(self, name: str) -> bool:
        row = self.conn.execute("SELECT 1 FROM runs WHERE name = ?", (name,)).fetchone()
        return row is not None

    def runs(self) -> list[RunRecord]:
        rows = self.conn.execute(self._run_select() + " ORDER BY created_at, name").fetchall()
        return [self._run_row(r) for r in rows]

    def run(self, name: str) -> RunRecord:
        row = self.conn.execute(self._run_select() + " WHERE name = ?", (name,)).fetchone()
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
        experiment: str | None = None,
        status: str = RunStatus.RUNNING,
    ) -> RunRecord:
        """Register a new training run (status ``running``, or ``status`` for an imported one);
        the name must be new, unless ``replace`` (a run that never reached a checkpoint is
        started again). ``experiment``: the experiment it is a fold model of (it must exist,
        see ``create_experiment``)."""
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
            if experiment is not None:
                found = conn.execute(
                    "SELECT 1 FROM experiments WHERE name = ?", (experiment,)
                ).fetchone()
                if found is None:
                    raise NotFound(f"no experiment {experiment!r} in the registry {self.path}")
            conn.execute(
                "INSERT INTO runs (name, arch, datasets, fold, config, out_dir, status,"
                " created_at, updated_at, experiment) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    arch,
                    json.dumps(list(datasets)),
                    fold,
                    json.dumps(config, sort_keys=True),
                    str(out_dir),
                    status,
                    stamp,
                    stamp,
                    experiment,
                ),
            )
        return self.run(name)

    def delete_run(self, name: str) -> None:
        """Remove run ``name``'s row (``NotFound`` if there is none)."""
        with self.transaction() as conn:
            self.run(name)
            conn.execute("DELETE FROM runs WHERE name = ?", (name,))

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
