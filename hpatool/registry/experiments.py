"""The registry's experiments: groups of fold runs of one dataset's split (``hpatool cv``,
``train --experiment``, ``runs import``), created, listed and looked up with their runs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hpatool.errors import AlreadyExists, DataError, NotFound
from hpatool.registry.records import (
    ExperimentRecord,
    RunRecord,
    _json_value,
    bad_row,
    check_name,
    now,
)
from hpatool.registry.transaction import RegistryConnection


class ExperimentQueries(RegistryConnection):
    """The ``experiments`` table and the runs that belong to one (a mixin of ``Registry``,
    beside ``RunQueries``, whose row reader it uses)."""

    if TYPE_CHECKING:

        def _run_select(self) -> str: ...

        def _run_row(self, row: Sequence[Any]) -> RunRecord: ...

        def schema_version(self) -> int: ...

    _EXPERIMENT_SELECT = (
        "SELECT e.name, e.datasets, e.created_at, e.options,"
        " (SELECT COUNT(*) FROM runs r WHERE r.experiment = e.name) FROM experiments e"
    )

    def _experiment_row(self, row: Sequence[Any]) -> ExperimentRecord:
        values: dict[str, Any] = {"datasets": [], "options": {}}
        problem = None
        for column, i, kind in (("datasets", 1, list), ("options", 3, dict)):
            try:
                values[column] = _json_value(row[i], kind)
            except ValueError as exc:
                fix = "repair the value (JSON text) with an SQLite editor"
                problem = problem or bad_row(
                    self.path,
                    "experiments",
                    f"experiment {row[0]!r}",
                    column,
                    row[i],
                    str(exc),
                    fix,
                )
        return ExperimentRecord(
            name=row[0],
            datasets=[str(d) for d in values["datasets"]],
            created_at=row[2],
            options=values["options"],
            runs=int(row[4]),
            problem=problem,
        )

    def _has_experiments_table(self) -> bool:
        # a registry of schema 3 opened read-only (so not migrated) has none
        return self.schema_version() >= 4

    def experiments(self) -> list[ExperimentRecord]:
        """Every experiment, oldest first."""
        if not self._has_experiments_table():
            return []
        rows = self.conn.execute(self._EXPERIMENT_SELECT + " ORDER BY e.created_at, e.name")
        return [self._experiment_row(r) for r in rows.fetchall()]

    def has_experiment(self, name: str) -> bool:
        if not self._has_experiments_table():
            return False
        row = self.conn.execute("SELECT 1 FROM experiments WHERE name = ?", (name,)).fetchone()
        return row is not None

    def experiment(self, name: str) -> ExperimentRecord:
        """Experiment ``name``; ``NotFound`` naming how to list them."""
        row = None
        if self._has_experiments_table():
            row = self.conn.execute(
                self._EXPERIMENT_SELECT + " WHERE e.name = ?", (name,)
            ).fetchone()
        if row is None:
            raise NotFound(
                f"no experiment {name!r} in the registry; 'hpatool experiments list' shows them"
            )
        record = self._experiment_row(row)
        if record.problem:
            raise DataError(record.problem)
        return record

    def experiment_runs(self, name: str) -> list[RunRecord]:
        """The runs of experiment ``name``, by fold, then name (``NotFound`` if unknown)."""
        self.experiment(name)
        rows = self.conn.execute(
            self._run_select() + " WHERE experiment = ? ORDER BY fold IS NULL, fold, name", (name,)
        ).fetchall()
        return [self._run_row(r) for r in rows]

    def create_experiment(
        self, name: str, *, datasets: Sequence[str], options: dict[str, Any] | None = None
    ) -> ExperimentRecord:
        """Register a new experiment (``AlreadyExists`` if the name is taken): its datasets
        (the first one's split gives the folds) and the options its runs start with."""
        check_name(name, "experiment")
        with self.transaction() as conn:
            if self.has_experiment(name):
                raise AlreadyExists(f"experiment {name!r} already exists in {self.path}")
            conn.execute(
                "INSERT INTO experiments (name, datasets, created_at, options) VALUES (?, ?, ?, ?)",
                (
                    name,
                    json.dumps(list(datasets)),
                    now(),
                    json.dumps(options or {}, sort_keys=True),
                ),
            )
        return self.experiment(name)

    def update_experiment_options(self, name: str, changes: dict[str, Any]) -> None:
        """Change some of the options experiment ``name``'s runs start with (``cv --epochs``
        continuing every fold to more epochs)."""
        with self.transaction() as conn:
            options = {**self.experiment(name).options, **changes}
            conn.execute(
                "UPDATE experiments SET options = ? WHERE name = ?",
                (json.dumps(options, sort_keys=True), name),
            )

    def delete_experiment(self, name: str) -> None:
        """Remove experiment ``name``; its runs stay, belonging to none."""
        with self.transaction() as conn:
            self.experiment(name)
            conn.execute("UPDATE runs SET experiment = NULL WHERE experiment = ?", (name,))
            conn.execute("DELETE FROM experiments WHERE name = ?", (name,))
