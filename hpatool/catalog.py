"""The dataset catalogue: registering datasets (from a label CSV and/or an image folder),
removing them, and verifying their images (a report, and a failures CSV on request)."""

from __future__ import annotations

import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hpatool._io import ProgressFn, path_problem, write_csv
from hpatool.errors import DataError, NotFound, UsageError, WorkFailed
from hpatool.ids import COLOURS, channel_path, id_problem
from hpatool.labels import format_target, load_label_csv
from hpatool.outputs import check_output
from hpatool.registry import KINDS, DatasetRecord, Registry, check_name

_CHANNEL_FILE = re.compile(r"^(?P<id>.+)_(?P<colour>red|green|blue|yellow)\.png$")


def scan_folder(root: Path) -> list[str]:
    """Sample ids of a folder of ``<Id>_<colour>.png`` files, sorted.

    An id counts if any of its four channel files is there (``verify`` reports missing ones).
    Unsafe names are an error naming the file.
    """
    if not root.is_dir():
        raise NotFound(
            f"{root}: {path_problem(root, 'folder')}; give the folder holding <Id>_<colour>.png "
            "files"
        )
    ids: set[str] = set()
    for entry in os.scandir(root):
        m = _CHANNEL_FILE.match(entry.name)
        if not m:
            continue
        problem = id_problem(m.group("id"))
        if problem:
            raise DataError(
                f"{root / entry.name}: unsafe or invalid Id {m.group('id')!r}: {problem}"
            )
        ids.add(m.group("id"))
    if not ids:
        raise DataError(
            f"{root}: no <Id>_<colour>.png files (colours: {', '.join(COLOURS)}); "
            "convert raw images with 'hpatool preprocess' first"
        )
    return sorted(ids)


@dataclass(frozen=True)
class AddedDataset:
    """A registered dataset and how its label CSV was read (``datasets add`` reports it)."""

    record: DatasetRecord
    #: the CSV's Id and Target columns as named in its header (``None``: no CSV / no Target)
    id_column: str | None = None
    target_column: str | None = None
    #: what to do about a column that looks like labels but was not used, if there is one
    label_hint: str | None = None
    #: a submission's prediction column (``Predicted``), read as no labels
    predictions_column: str | None = None


def add_dataset(
    reg: Registry,
    name: str,
    *,
    labels: Path | None = None,
    root: Path | None = None,
    kind: str | None = None,
) -> DatasetRecord:
    """Register ``name`` (see ``register_dataset``) and return its record."""
    return register_dataset(reg, name, labels=labels, root=root, kind=kind).record


def register_dataset(
    reg: Registry,
    name: str,
    *,
    labels: Path | None = None,
    root: Path | None = None,
    kind: str | None = None,
) -> AddedDataset:
    """Register ``name`` from a label CSV, an image folder, or both.

    With a CSV the CSV defines the samples (and their order); ``root`` only says where their
    images are (they may not exist yet). Without a CSV the samples are the ids found in ``root``,
    unlabelled. The kind defaults to ``train`` for a CSV with ``Target`` and ``test`` otherwise.
    Everything is checked before the registry is touched, and the registration is one unit of
    work (it joins the caller's ``reg.transaction()`` if there is one).
    """
    check_name(name)
    if kind is not None and kind not in KINDS:
        raise UsageError(f"invalid --kind {kind!r}; use one of {', '.join(KINDS)}")
    if labels is None and root is None:
        raise UsageError("give --labels CSV, --root DIR, or both")
    reg.ensure_new(name)  # fail before reading a large CSV
    root_abs = root.expanduser().resolve() if root is not None else None
    if root_abs is not None and root_abs.exists() and not root_abs.is_dir():
        raise UsageError(f"{root}: is a file; --root must be the folder holding the images")
    if root_abs is not None and labels is None and not root_abs.is_dir():
        raise NotFound(f"{root}: no such folder; --root must be the folder holding the images")
    labels_path = labels_sha = None
    table = None
    if labels is not None:
        table = load_label_csv(labels)
        ids = table.ids
        targets: list[tuple[int, ...] | None] = list(table.targets)
        labels_path = str(labels.expanduser().resolve())
        labels_sha = table.sha256  # of the bytes parsed: the file is read once
        has_target = table.labelled
    else:
        assert root_abs is not None
        ids = scan_folder(root_abs)
        targets = [None] * len(ids)
        has_target = False
    resolved_kind = kind or ("train" if has_target else "test")
    with reg.transaction():
        record = reg.create_dataset(
            name,
            resolved_kind,
            ids,
            targets,
            root=root_abs,
            labels_path=labels_path,
            labels_sha256=labels_sha,
        )
    if table is None:
        return AddedDataset(record)
    return AddedDataset(
        record,
        table.id_column,
        table.target_column,
        table.label_hint,
        table.predictions_column,
    )


def remove_dataset(reg: Registry, name: str) -> DatasetRecord:
    """Remove dataset ``name`` (samples, folds) from the registry in one unit of work; its image
    files are left where they are."""
    from hpatool.data.cache import drop_cache

    with reg.transaction():
        record = reg.remove_dataset(name)
    drop_cache(reg.path.parent, name)  # its decoded cache goes with it
    return record


def describe_dataset(reg: Registry, name: str) -> dict[str, Any]:
    """The ``datasets show --json`` document: the dataset's record, its per-sample status counts
    if it has any (a download's), and its folds if it is split."""
    rec = reg.dataset(name)
    statuses = reg.status_counts(name)
    split = reg.split_info(name)
    fold_counts = reg.fold_class_counts(name) if split else None
    doc = rec.to_json()
    from hpatool.data.cache import cache_summary

    cache = cache_summary(reg.path.parent, name)
    if cache is not None:
        doc["cache"] = cache
    if any(k is not None for k in statuses):
        doc["status"] = {k or "pending": n for k, n in sorted(statuses.items(), key=str)}
    if split is not None and fold_counts is not None:
        fold_sizes = sorted(reg.folds(name).values())
        doc["folds"] = {
            "n": split["folds"],
            "seed": split["seed"],
            "created_at": split["created_at"],
            "sizes": [fold_sizes.count(k) for k in range(split["folds"])],
            "class_counts": fold_counts,
        }
    duplicates = duplicate_summary(reg, name)
    if duplicates is not None:
        doc["duplicates"] = duplicates
    return doc


def duplicate_summary(reg: Registry, name: str) -> dict[str, int] | None:
    """What ``hpatool dedup`` found in dataset ``name`` (``None`` if it was never run on it):
    clusters with two or more of its samples, the samples in them, and, if it is split, how
    many of those clusters lie in one fold (``kept_together``) or across folds (split before
    ``dedup``: run ``split`` again)."""
    if not reg.dedup_done(name):
        return None
    members: dict[int, list[str]] = {}
    for sample_id, cluster in reg.cluster_ids(name, [name]).items():
        members.setdefault(cluster, []).append(sample_id)
    clusters = [ids for ids in members.values() if len(ids) >= 2]
    doc = {
        "clusters": len(clusters),
        "samples_in_clusters": sum(len(ids) for ids in clusters),
        # samples with a duplicate in any dataset (this one, or an external copy...)
        "samples_with_duplicates": len(reg.cluster_ids(name)),
    }
    folds = reg.folds(name)
    if folds:
        together = sum(1 for ids in clusters if len({folds.get(i) for i in ids}) == 1)
        doc["kept_together"] = together
        doc["across_folds"] = len(clusters) - together
    return doc


def export_rows(reg: Registry, name: str) -> list[tuple[str, str, str, str]]:
    """``datasets export``: ``(Id, Target, fold, cluster)`` of every sample of ``name`` in its
    order; ``fold`` empty where the sample has none, ``cluster`` the number of its duplicate
    cluster (``hpatool dedup``; with samples of any dataset) or empty."""
    folds = reg.folds(name)
    clusters = reg.cluster_ids(name) if reg.dedup_done(name) else {}
    return [
        (
            s.id,
            "" if s.target is None else format_target(s.target),
            "" if folds.get(s.id) is None else str(folds[s.id]),
            "" if clusters.get(s.id) is None else str(clusters[s.id]),
        )
        for s in reg.samples(name)
    ]


#: The status shown for a sample of a dataset with statuses whose own status is not set yet.
PENDING = "pending"


@dataclass(frozen=True)
class SampleRow:
    """One line of ``datasets show NAME --samples``."""

    id: str
    status: str | None  # None: the dataset records no statuses (registered from a CSV)
    labels: tuple[int, ...] | None  # None: unlabelled
    fold: int | None  # None: not split, or left out of the split

    def to_json(self, split: bool) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.id,
            "status": self.status,
            "labels": None if self.labels is None else list(self.labels),
        }
        if split:
            doc["fold"] = self.fold
        return doc


@dataclass
class SampleListing:
    """The samples of a dataset for ``datasets show NAME --samples``, in registry order."""

    dataset: str
    total: int  # samples in the dataset, before ``status`` filtered them
    split: bool  # whether the dataset has folds (rows then carry a fold)
    rows: list[SampleRow]


def list_samples(reg: Registry, name: str, *, status: str | None = None) -> SampleListing:
    """Every sample of ``name`` with its status, labels and fold (if split); with ``status``
    only those with that status (``pending``: not set yet). A status no sample has is a
    ``UsageError`` naming the statuses there are. One query each for the samples and the folds
    (74k samples: well under a second)."""
    samples = reg.samples(name)
    folds = reg.folds(name) if reg.split_info(name) is not None else None
    with_status = any(s.status is not None for s in samples)
    default = PENDING if with_status else None
    rows = [
        SampleRow(
            s.id,
            s.status if s.status is not None else default,
            s.target,
            folds.get(s.id) if folds is not None else None,
        )
        for s in samples
    ]
    if status is not None:
        counts = Counter(r.status for r in rows)
        # a status of the dataset's kind that no sample has (no failures: good news) lists
        # nothing; a value no dataset records (a typo), or any on a dataset without
        # statuses, is an error naming the statuses there are
        known = {"done", "failed", "missing", PENDING}
        if status not in counts and not (with_status and status in known):
            have = ", ".join(f"{k} ({n:,})" for k, n in sorted(counts.items()) if k is not None)
            there = f"its statuses are {have}" if have else "it records no per-sample status"
            raise UsageError(f"dataset {name!r} has no sample with --status {status!r}: {there}")
        rows = [r for r in rows if r.status == status]
    return SampleListing(name, len(samples), folds is not None, rows)


#: The columns of ``datasets verify --failures FILE``.
FAILURE_COLUMNS = ("Id", "colour", "path", "problem")


@dataclass(frozen=True)
class Failure:
    id: str
    colour: str
    path: str
    problem: str

    def row(self) -> tuple[str, str, str, str]:
        return (self.id, self.colour, self.path, self.problem)


@dataclass
class VerifyReport:
    dataset: str
    root: Path
    checked: int = 0
    failed_samples: int = 0
    failures: list[Failure] = field(default_factory=list)
    sizes: Counter[tuple[int, int]] = field(default_factory=Counter)
    #: where the failures were written, if they were
    failures_csv: Path | None = None
    #: samples a download or conversion has not finished (status other than ``done``), by
    #: reason: not checked, since their files are not meant to be there
    not_checked: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return self.checked - self.failed_samples

    def to_json(self) -> dict[str, Any]:
        """The ``datasets verify --json`` document."""
        return {
            "dataset": self.dataset,
            "checked": self.checked,
            "ok": self.ok,
            "failed": self.failed_samples,
            "not_checked": dict(sorted(self.not_checked.items())),
            "sizes": {f"{w}x{h}": n for (w, h), n in self.sizes.most_common()},
            "failures": [asdict(f) for f in self.failures],
        }

    def check(self) -> None:
        """Raise ``WorkFailed`` (exit 1), saying how many samples failed, if any did."""
        if self.failed_samples:
            where = f"; the failures are listed in {self.failures_csv}" if self.failures_csv else ""
            raise WorkFailed(
                f"{self.failed_samples:,} of {self.checked:,} samples of dataset "
                f"{self.dataset!r} failed verification{where}"
            )


def _check_sample(root: Path, sample_id: str) -> tuple[list[Failure], tuple[int, int] | None]:
    from hpatool.imaging import BadImage, _regular_file, open_image

    failures: list[Failure] = []
    sizes: dict[str, tuple[int, int]] = {}
    for colour in COLOURS:
        path = channel_path(root, sample_id, colour)
        try:
            _regular_file(path)  # a FIFO named like an image would hang the reader
            with open_image(path) as img:
                img.load()
                if img.mode != "L":
                    failures.append(
                        Failure(
                            sample_id,
                            colour,
                            str(path),
                            f"mode {img.mode}, expected 8-bit greyscale (L)",
                        )
                    )
                sizes[colour] = img.size
        except FileNotFoundError:
            failures.append(Failure(sample_id, colour, str(path), "missing"))
        except BadImage as exc:
            failures.append(Failure(sample_id, colour, str(path), exc.reason))
        except Exception as exc:
            failures.append(Failure(sample_id, colour, str(path), f"does not decode ({exc})"))
    distinct = set(sizes.values())
    if len(distinct) > 1:
        text = ", ".join(f"{c} {w}x{h}" for c, (w, h) in sizes.items())
        failures.append(
            Failure(sample_id, "all", str(root / sample_id), f"channels differ in size ({text})")
        )
    size = next(iter(distinct)) if len(distinct) == 1 else None
    return failures, size


def verify_dataset(
    reg: Registry,
    name: str,
    *,
    size: int | None = None,
    workers: int | None = None,
    progress: ProgressFn | None = None,
    failures: Path | None = None,
) -> VerifyReport:
    """Check that every sample has four channel files that decode, are 8-bit greyscale and have
    one size: ``size``×``size`` if given, else the size most samples have. With ``failures``,
    also write the failures to that CSV (``FAILURE_COLUMNS``; just the header if none). In a
    dataset with per-sample statuses (a download's) only the ``done`` samples are checked;
    the others are counted in ``not_checked``."""
    if failures is not None:
        failures = check_output(failures, "--failures", reg)
    root = reg.dataset(name).image_root()
    samples = reg.samples(name)
    report = VerifyReport(dataset=name, root=root)
    if any(s.status is not None for s in samples):
        # a download's (or a conversion's) dataset: only the samples it finished are checked
        from hpatool.availability import DONE, NOT_FETCHED, status_reason

        for s in samples:
            if s.status != DONE:
                why = NOT_FETCHED if s.status is None else status_reason(s.status)
                report.not_checked[why] = report.not_checked.get(why, 0) + 1
        samples = [s for s in samples if s.status == DONE]
    per_sample: list[tuple[str, list[Failure], tuple[int, int] | None]] = []
    total = len(samples)
    n_workers = workers or min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        results = pool.map(lambda s: _check_sample(root, s.id), samples, chunksize=16)
        for i, (sample, (fails, sz)) in enumerate(zip(samples, results, strict=True), 1):
            per_sample.append((sample.id, fails, sz))
            if sz is not None:
                report.sizes[sz] += 1
            if progress:
                progress(i, total)
    expected = (
        (size, size) if size else (report.sizes.most_common(1)[0][0] if report.sizes else None)
    )
    for sample_id, fails, sz in per_sample:
        report.checked += 1
        if sz is not None and expected is not None and sz != expected:
            fails = [
                *fails,
                Failure(
                    sample_id,
                    "all",
                    str(root / sample_id),
                    f"size {sz[0]}x{sz[1]}, expected {expected[0]}x{expected[1]}",
                ),
            ]
        if fails:
            report.failed_samples += 1
            report.failures.extend(fails)
    if failures is not None:
        report.failures_csv = write_csv(
            failures, FAILURE_COLUMNS, (f.row() for f in report.failures)
        )
    return report
