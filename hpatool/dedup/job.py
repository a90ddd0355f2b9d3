"""The ``dedup`` job, :func:`find_duplicates`: check everything (datasets, images, options,
``--out``) before any work; hash, in the process pool, only the samples without a current
stored hash (new, or whose files changed), storing the hashes in small batches (a stopped run
keeps them); find every pair within ``max_distance`` bits (``matching``), join them into
clusters, store the clusters (replacing those of the datasets given) and write ``--out``.
Images that cannot be read are returned as failures; the others' hashes are kept.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hpatool._io import ProgressFn, write_csv
from hpatool.dedup import DEFAULT_MAX_DISTANCE, check_max_distance
from hpatool.dedup.hashing import HASHED, HashOutcome, hash_sample, signature
from hpatool.dedup.matching import clusters as join_clusters
from hpatool.dedup.matching import find_pairs
from hpatool.dedup.report import DedupReport, build_report
from hpatool.errors import DataError, UsageError
from hpatool.registry import Registry
from hpatool.registry.records import Sample

#: The hash method recorded with each stored hash: a stored hash of another method is made
#: again. Change it whenever ``hashing`` changes what a hash is.
METHOD = "phash-dct8-green-blue-v1"
#: Hashes are stored after this many samples or seconds, whichever comes first.
_BATCH = 2000
_BATCH_S = 2.0
#: Where a line of ``--out`` names its pair.
PAIRS_HEADER = ("dataset_a", "id_a", "dataset_b", "id_b", "distance")
_DIED = (
    "a hashing process died (out of memory?); the hashes made so far are kept: rerun to go "
    "on, perhaps with fewer --workers"
)


@dataclass(frozen=True)
class HashFailure:
    """A sample whose images could not be read: its dataset, id, and the reason."""

    dataset: str
    sample_id: str
    error: str


@dataclass
class DedupResult:
    """What ``find_duplicates`` did and found."""

    names: list[str]
    max_distance: int
    hashed: int = 0  # hashed by this run
    reused: int = 0  # stored hashes still current
    flat: int = 0  # samples with a channel too flat to hash (left out of matching)
    matched: int = 0  # samples compared
    left_out: dict[str, str] = field(default_factory=dict)  # dataset -> why some were left out
    failures: list[HashFailure] = field(default_factory=list)
    pairs: list[tuple[str, str, str, str, int]] = field(default_factory=list)
    clusters: list[list[tuple[str, str]]] = field(default_factory=list)
    report: DedupReport | None = None
    out: Path | None = None
    elapsed_s: float = 0.0

    def as_json(self) -> dict[str, object]:
        """The ``--json`` document: exactly ``max_distance``, ``clusters``, ``label_conflicts``."""
        return {
            "max_distance": self.max_distance,
            "clusters": [[[d, i] for d, i in members] for members in self.clusters],
            "label_conflicts": self.report.label_conflicts if self.report else 0,
        }


@dataclass
class _Dataset:
    name: str
    root: Path
    samples: list[Sample]  # usable ones, registry order


def find_duplicates(
    reg: Registry,
    names: Sequence[str],
    *,
    max_distance: int = DEFAULT_MAX_DISTANCE,
    workers: int | None = None,
    out: Path | None = None,
    progress: ProgressFn | None = None,
) -> DedupResult:
    """Hash, match and cluster the samples of datasets ``names``; see the module docstring."""
    from hpatool.convert.pool import check_workers

    started = time.perf_counter()
    check_max_distance(max_distance)
    n_workers = check_workers(workers)
    wanted = list(dict.fromkeys(names))
    if not wanted:
        raise UsageError("give one or more dataset names")
    datasets, result = _check_datasets(reg, wanted, max_distance)
    if out is not None:
        from hpatool.outputs import check_output

        out = check_output(out, "--out", reg)
    with reg.transaction():
        pass  # a read-only registry is refused before any work
    words = _hash_all(reg, datasets, result, n_workers, progress)
    rows = [(d.name, s) for d in datasets for s in d.samples if (d.name, s.id) in words]
    hashes = np.array([words[(name, s.id)] for name, s in rows], dtype=np.uint64).reshape(-1, 2)
    result.matched = len(rows)
    pairs = find_pairs(hashes, max_distance)
    groups = join_clusters(len(rows), pairs)
    result.clusters = [[(rows[k][0], rows[k][1].id) for k in g] for g in groups]
    result.pairs = [
        (rows[a][0], rows[a][1].id, rows[b][0], rows[b][1].id, int(dist))
        for a, b, dist in zip(
            pairs.i.tolist(), pairs.j.tolist(), pairs.distance.tolist(), strict=True
        )
    ]
    reg.set_clusters(wanted, result.clusters, max_distance=max_distance)
    if out is not None:
        result.out = write_csv(out, PAIRS_HEADER, sorted(result.pairs, key=lambda p: p[4]))
    targets = {(name, s.id): s.target for name, s in rows}
    kinds = {d.name: reg.dataset(d.name).kind for d in datasets}
    result.report = build_report(wanted, kinds, result.clusters, targets)
    result.elapsed_s = time.perf_counter() - started
    return result


def _check_datasets(
    reg: Registry, names: list[str], max_distance: int
) -> tuple[list[_Dataset], DedupResult]:
    """The datasets and their usable samples; a dataset with no image to hash is an error."""
    from hpatool.availability import usable_samples

    result = DedupResult(names=names, max_distance=max_distance)
    datasets = []
    for name in names:
        record = reg.dataset(name)
        if record.root is None:
            raise DataError(
                f"dataset {name!r} has no image folder (registered from a label CSV alone): "
                f"nothing to hash; attach its images with 'hpatool datasets set-root {name} "
                "DIR', or convert and register them with 'hpatool preprocess'"
            )
        usable = usable_samples(reg, name)
        if not usable.samples:
            why = usable.summary() or f"dataset {name!r} has no samples"
            raise DataError(
                f"dataset {name!r} has no images to hash in {record.root} ({why}); "
                "download or convert them first"
            )
        if usable.left_out:
            result.left_out[name] = usable.summary()
        datasets.append(_Dataset(name, record.root, usable.samples))
    return datasets, result


def _hash_all(
    reg: Registry,
    datasets: list[_Dataset],
    result: DedupResult,
    workers: int,
    progress: ProgressFn | None,
) -> dict[tuple[str, str], tuple[int, int]]:
    """The hash of every usable, hashable sample, ``(dataset, id) -> words``: stored ones
    that are current, the others made now (and stored). Flat and failed samples have none."""
    from hpatool.convert.pool import bounded_map, worker_pool
    from hpatool.signals import sigterm_as_interrupt

    words: dict[tuple[str, str], tuple[int, int]] = {}
    todo: list[tuple[str, str, str, Path]] = []  # dataset, id, signature, root
    for d in datasets:
        stored = reg.stored_hashes(d.name)
        for s in d.samples:
            sig = signature(d.root, s.id)
            if sig is None:
                gone = d.root / f"{s.id}_{{{','.join(HASHED)}}}.png"
                result.failures.append(HashFailure(d.name, s.id, f"{gone}: a file went missing"))
                continue
            known = stored.get(s.id)
            if known is not None and known.signature == sig and known.method == METHOD:
                result.reused += 1
                if known.words is None:
                    result.flat += 1
                else:
                    words[(d.name, s.id)] = known.words
            else:
                todo.append((d.name, s.id, sig, d.root))
    total = result.reused + len(todo)
    done = result.reused
    if progress:
        progress(done, total)
    batch = _Batch(reg)
    jobs = (((name, sid, sig), (str(root), sid)) for name, sid, sig, root in todo)
    try:
        with worker_pool(workers, len(todo), died=_DIED) as pool, sigterm_as_interrupt():
            for (name, sid, sig), outcome in bounded_map(pool, hash_sample, jobs, 4 * workers):
                _take(outcome, name, sid, sig, result, words, batch)
                done += 1
                if progress:
                    progress(done, total)
    finally:
        batch.flush()  # what was hashed is kept, also when the run is stopped
    return words


def _take(
    outcome: HashOutcome,
    name: str,
    sid: str,
    sig: str,
    result: DedupResult,
    words: dict[tuple[str, str], tuple[int, int]],
    batch: _Batch,
) -> None:
    if outcome.error is not None:
        result.failures.append(HashFailure(name, sid, outcome.error))
        return
    result.hashed += 1
    value = None
    if outcome.flat or outcome.words is None:
        result.flat += 1
    else:
        value = (outcome.words[0], outcome.words[1])
        words[(name, sid)] = value
    batch.add(name, sid, sig, value)


class _Batch:
    """Hashes waiting to be stored: written every ``_BATCH`` samples or ``_BATCH_S`` seconds
    in a short transaction of their own."""

    def __init__(self, reg: Registry) -> None:
        self.reg = reg
        self.rows: dict[str, list[tuple[str, str, tuple[int, int] | None]]] = {}
        self.size = 0
        self.since = time.monotonic()

    def add(self, name: str, sid: str, sig: str, value: tuple[int, int] | None) -> None:
        self.rows.setdefault(name, []).append((sid, sig, value))
        self.size += 1
        if self.size >= _BATCH or time.monotonic() - self.since >= _BATCH_S:
            self.flush()

    def flush(self) -> None:
        from hpatool.signals import deferred_interrupts

        with deferred_interrupts() as held:
            rows, self.rows, self.size = self.rows, {}, 0
            with self.reg.transaction():
                for name, batch in rows.items():
                    self.reg.store_hashes(name, METHOD, batch)
        self.since = time.monotonic()
        if held and sys.exc_info()[1] is None:  # else the stop in flight says enough
            raise KeyboardInterrupt
