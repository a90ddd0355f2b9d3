"""Managing finished or stale runs: ``runs remove`` (the registry row and, if asked, the run's
files), and telling a dead run from a running one. Only the files a run writes are deleted
(``engine.runs.run_dir.RUN_FILES`` and the temporary files of an atomic write), and only from a
folder that holds a run's ``config.json`` or checkpoint; the folder itself goes only when
nothing else is left in it. A training process records its id and host with its run
(``process_info``, in the registry's copy of the configuration), so a run left ``running`` by
a killed process or a closed terminal is known to be dead (``process_gone``) on that host.
``runs compare`` puts runs side by side (``compare_runs``): their registry rows and the best
epoch of each ``metrics.csv``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpatool.engine.runs.run_dir import (
    BEST,
    CONFIG_FILE,
    LAST,
    RUN_FILES,
    RunDir,
    best_row,
    read_metrics_csv,
)
from hpatool.errors import DataError, HpaToolError, NotFound, UsageError
from hpatool.registry import Registry, RunRecord, RunStatus

#: A folder is a run's only if it holds one of these.
_RUN_MARKERS = (CONFIG_FILE, LAST, BEST)


@dataclass
class RemovedRun:
    """What ``remove_run`` did: the run's name, folder, the files deleted and those kept."""

    name: str
    out_dir: Path
    deleted: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    folder_removed: bool = False


def remove_run(reg: Registry, name: str, *, files: bool = False, force: bool = False) -> RemovedRun:
    """Remove run ``name`` from the registry (one transaction) and, with ``files``, its run
    files. A run whose status is ``running`` is refused unless ``force`` (its process is gone)."""
    with reg.transaction():
        record = reg.run(name)
        if record.status == RunStatus.RUNNING and not force and not process_gone(record):
            raise UsageError(
                f"run {name!r} is running; stop it first, or pass --force if its process is gone"
            )
        removed = RemovedRun(name, record.out_dir)
        if files:
            _check_run_folder(record.out_dir, name)
        reg.delete_run(name)
        if files and record.out_dir.is_dir():
            _delete_run_files(removed)
    return removed


def _check_run_folder(folder: Path, name: str) -> None:
    if not folder.exists():
        return
    if not folder.is_dir() or not any((folder / m).is_file() for m in _RUN_MARKERS):
        raise UsageError(
            f"{folder} does not look like a run folder (no {CONFIG_FILE} or checkpoint); "
            f"not deleting it; remove run {name!r} without --files"
        )


def _delete_run_files(removed: RemovedRun) -> None:
    folder = removed.out_dir
    from hpatool.engine.runs.run_dir import TENSORBOARD_DIR, is_epoch_checkpoint, is_event_file

    for path in sorted(folder.iterdir()):
        ours = (
            path.name in RUN_FILES
            or path.name.startswith(".tmp-")
            or is_epoch_checkpoint(path.name)  # --keep-checkpoints
        )
        if ours and path.is_file() and not path.is_symlink():
            path.unlink()
            removed.deleted.append(path)
        elif (
            path.name == TENSORBOARD_DIR
            and path.is_dir()
            and not path.is_symlink()
            and all(is_event_file(p) for p in path.iterdir())
        ):  # --tensorboard's folder, holding only its event files
            for event in sorted(path.iterdir()):
                event.unlink()
                removed.deleted.append(event)
            path.rmdir()
            removed.deleted.append(path)
        else:
            removed.kept.append(path)
    if not removed.kept:
        folder.rmdir()
        removed.folder_removed = True


def process_info() -> dict[str, Any]:
    """This process, as a run records it: ``{"pid", "host", "started"}`` (its start time in
    clock ticks since boot where ``/proc`` tells it, to tell a reused process id)."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": _started(os.getpid())}


def process_gone(record: RunRecord) -> bool:
    """``True`` if ``record`` says ``running`` but the process that trains it, on this host,
    no longer exists (killed, or its terminal closed before SIGHUP was handled). A run on
    another host, or one that recorded no process, is never known to be dead."""
    process = record.config.get("process")
    if record.status != RunStatus.RUNNING or not isinstance(process, dict):
        return False
    pid = process.get("pid")
    if process.get("host") != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    started = process.get("started")
    return started is not None and _started(pid) not in (None, started)  # a reused id


def _started(pid: int) -> int | None:
    """Process ``pid``'s start time (clock ticks after boot, ``/proc/PID/stat`` field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class RunSummary:
    """One run as ``runs compare`` shows it: its registry row and, from its ``metrics.csv``,
    the best epoch (highest macro F1 with thresholds tuned on validation) and its metrics."""

    name: str
    arch: str
    datasets: list[str]
    fold: int | None
    status: str
    epochs_done: int
    out_dir: Path
    best_f1: float | None = None
    best_epoch: int | None = None
    f1_at_05: float | None = None  # macro F1 at threshold 0.5, at the best epoch
    val_loss: float | None = None  # at the best epoch
    images_per_s: float | None = None  # training speed, the mean of the epochs
    #: the validation fold scored by the best checkpoint with the run's view (``oof.csv``),
    #: thresholds tuned on it; ``None`` before the run's out-of-fold step
    oof_f1: float | None = None
    #: the same predictions' held-out figure (thresholds tuned on one half, scored on the
    #: other, both ways, over seeded splittings): the figure to compare runs by
    oof_f1_heldout: float | None = None
    oof_view: dict[str, Any] | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    #: why the metrics are missing (no ``metrics.csv`` yet); ``None`` when they are there
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "arch": self.arch,
            "datasets": self.datasets,
            "fold": self.fold,
            "status": self.status,
            "epochs_done": self.epochs_done,
            "out_dir": str(self.out_dir),
            "best_f1": self.best_f1,
            "best_epoch": self.best_epoch,
            "macro_f1_at_0.5": self.f1_at_05,
            "val_loss": self.val_loss,
            "images_per_s": self.images_per_s,
            "oof_macro_f1": self.oof_f1,
            "oof_macro_f1_heldout": self.oof_f1_heldout,
            "oof_view": self.oof_view,
            "metrics": self.rows,
            **({"note": self.note} if self.note else {}),
        }


def compare_runs(
    reg: Registry, names: Sequence[str], *, plot: Path | None = None
) -> list[RunSummary]:
    """``runs compare``: runs ``names`` (in that order) from the registry and their
    ``metrics.csv``; with ``plot``, their validation macro F1 and losses per epoch drawn in one
    figure (its name is checked before anything is read)."""
    from hpatool.outputs import check_figure

    known = {r.name for r in reg.runs()}
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise UsageError(f"run {name!r} is named twice; name each run once")
        seen.add(name)
        if name not in known:
            raise NotFound(_unknown_run(name, known))
    records = [reg.run(name) for name in names]
    target = None
    if plot is not None:
        inputs = [
            (p, f"a file of run {r.name!r}")
            for r in records
            for p in RunDir(r.out_dir).files().values()
        ]
        target = check_figure(plot, "--plot", reg, inputs)
    summaries = [summarize_run(r, reg) for r in records]
    if target is not None:
        from hpatool.engine.runs.run_dir import best_row

        drawn = [(s.name, s.rows, best_row(s.rows)) for s in summaries if s.rows]
        if not drawn:
            raise DataError(
                "none of the runs has finished an epoch (no metrics.csv): nothing to plot"
            )
        from hpatool.run_plots import plot_run_comparison

        plot_run_comparison(drawn, target)
    return summaries


def _unknown_run(name: str, known: set[str]) -> str:
    from difflib import get_close_matches

    close = get_close_matches(name, sorted(known), n=3)
    hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
    return f"unknown run {name!r}{hint}; 'hpatool runs list' shows the runs"


def summarize_run(record: RunRecord, reg: Registry | None = None) -> RunSummary:
    """A run's ``RunSummary``: its best epoch from ``metrics.csv`` (the registry's best F1 and
    epoch when the file is not there); with ``reg``, the held-out out-of-fold figure of a run
    whose ``thresholds.json`` predates it is computed from its ``oof.csv``."""
    summary = RunSummary(
        name=record.name, arch=record.arch, datasets=list(record.datasets), fold=record.fold,
        status=record.status, epochs_done=record.epochs_done, out_dir=record.out_dir,
        best_f1=record.best_f1, best_epoch=record.best_epoch,
    )  # fmt: skip
    oof_thresholds(summary)
    if reg is not None and summary.oof_f1 is not None and summary.oof_f1_heldout is None:
        summary.oof_f1_heldout = heldout_from_oof(reg, record)
    metrics = RunDir(record.out_dir).metrics
    if not metrics.is_file():
        summary.note = f"no {metrics.name} in {record.out_dir} (no epoch finished yet?)"
        return summary
    summary.rows = sorted(read_metrics_csv(metrics), key=lambda r: int(r["epoch"]))
    best = best_row(summary.rows)
    if best is not None:
        summary.best_f1, summary.best_epoch = best["macro_f1"], best["epoch"]
        summary.f1_at_05, summary.val_loss = best["macro_f1_at_0.5"], best["val_loss"]
    speeds = [r["images_per_s"] for r in summary.rows if r["images_per_s"] is not None]
    summary.images_per_s = sum(speeds) / len(speeds) if speeds else None
    return summary


def oof_thresholds(summary: RunSummary) -> None:
    """The run's out-of-fold macro F1 and view from its ``thresholds.json``, when its
    out-of-fold step has run (``"tuned_on": "oof"``); a file that cannot be read is skipped."""
    import json

    path = RunDir(summary.out_dir).thresholds
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(doc, dict) or doc.get("tuned_on") != "oof":
        return
    f1, view = doc.get("oof_macro_f1"), doc.get("view")
    if isinstance(f1, int | float) and not isinstance(f1, bool):
        summary.oof_f1 = float(f1)
    held = doc.get("oof_macro_f1_heldout")
    if isinstance(held, int | float) and not isinstance(held, bool) and held == held:
        summary.oof_f1_heldout = float(held)
    if isinstance(view, dict):
        summary.oof_view = view


def heldout_from_oof(reg: Registry, record: RunRecord) -> float | None:
    """The split-half held-out macro F1 of a run's ``oof.csv`` against the registry's labels
    (``None`` when the file or the labels cannot be read)."""
    import numpy as np

    from hpatool.engine.metrics import heldout_macro_f1
    from hpatool.engine.runs.oof import OOF_FILE, read_oof
    from hpatool.labels import to_multihot

    try:
        ids, probs = read_oof(record.out_dir / OOF_FILE)
        targets = {s.id: s.target for s in reg.samples(record.datasets[0])}
        if not ids or any(targets.get(i) is None for i in ids):
            return None
        f1 = heldout_macro_f1(to_multihot([targets[i] for i in ids]), probs)
    except (HpaToolError, IndexError):
        return None
    return None if np.isnan(f1) else f1
