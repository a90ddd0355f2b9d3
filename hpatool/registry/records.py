"""The registry's record types and the checks of its stored values: names, kinds, targets,
JSON columns, and the message for a row that cannot be used (a hand edit)."""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hpatool.errors import DataError, UsageError
from hpatool.labels import parse_target

KINDS = ("train", "test", "external")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_name(name: str, what: str = "dataset") -> str:
    if not _NAME.match(name or ""):
        raise UsageError(
            f"invalid {what} name {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return name


class RunStatus(enum.StrEnum):
    """A training run's state in the registry (a ``str``: compares and stores as its value)."""

    RUNNING = "running"  # training (or its process died: ``run_admin.process_gone``)
    DONE = "done"  # every epoch trained and oof.csv written
    STOPPED = "stopped"  # --max-steps reached; resumable
    INTERRUPTED = "interrupted"  # Ctrl-C, SIGTERM or SIGHUP; resumable
    FAILED = "failed"  # an error; resumable when it had a checkpoint


#: Statuses of a run that ended without error (cv skips such a fold once it has oof.csv).
FINISHED_STATUSES = (RunStatus.DONE, RunStatus.STOPPED)


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
                f"dataset {self.name!r} has no image folder (labels only); attach one with "
                f"'hpatool datasets set-root {self.name} DIR' or download its images first"
            )
        if not self.root.is_dir():
            raise DataError(
                f"dataset {self.name!r}: image folder {self.root} does not exist; if the images "
                f"were moved, point to them with 'hpatool datasets set-root {self.name} DIR'"
            )
        return self.root

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "root": str(self.root) if self.root else None,
            "labels": self.labels_path,
            "labels_sha256": self.labels_sha256,
            "parent": self.parent,
            "provenance": _redacted(self.provenance),
            "samples": self.samples,
            "labelled": self.labelled,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            **({"problem": self.problem} if self.problem else {}),
        }


def _redacted(provenance: dict[str, Any] | None) -> dict[str, Any] | None:
    """``provenance`` with any password in a URL value shown as ``***``: downloads store URLs
    redacted, but a registry written by an older hpatool may still hold one in clear."""
    if not provenance:
        return provenance
    from hpatool.download.urls import redact_url

    return {
        k: redact_url(v) if isinstance(v, str) and "://" in v else v for k, v in provenance.items()
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
    #: the experiment (``hpatool cv``) this run is a fold model of; ``None`` for a lone run
    experiment: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "arch": self.arch,
            "datasets": self.datasets,
            "fold": self.fold,
            "experiment": self.experiment,
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


@dataclass(frozen=True)
class ExperimentRecord:
    """An experiment: fold runs of one dataset's split (``hpatool cv``, ``train --experiment``)."""

    name: str
    datasets: list[str]
    created_at: str
    #: the options its runs were started with (``TrainConfig`` names), less the per-run ones
    options: dict[str, Any]
    runs: int = 0
    #: why this row cannot be used as it is (a hand-edited value); ``None`` when it is fine
    problem: str | None = None

    @property
    def dataset(self) -> str:
        """The dataset whose split gives the folds (the first)."""
        return self.datasets[0] if self.datasets else ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "datasets": self.datasets,
            "created_at": self.created_at,
            "options": self.options,
            "runs": self.runs,
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
