"""``hpatool preprocess``: raw images already on disk -> sample channel PNGs, registered.

A source is ``<Id>_<colour>.{jpg,jpeg,png,tif,tiff}``: an RGB JPEG of one stain (as the HPA
image server sends), an 8- or 16-bit greyscale or RGB PNG, or a TIFF. The output is
``<out>/<Id>_<colour>.png``, 8-bit greyscale, ``size``×``size``. This module is the job:
naming the sources, converting them through :mod:`hpatool.convert` (a rerun with the same
settings skips every output that is already there and newer than its source), and registering
the output as a dataset with its lineage, in one registry transaction.
"""

from __future__ import annotations

import os
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpatool import __version__
from hpatool._io import ProgressFn, sha256_file
from hpatool.convert.lock import output_lock
from hpatool.convert.outdir import (
    FAILURES_CSV,
    check_path_text,
    check_size,
    claim_output_dir,
    is_utf8,
    looks_whole,
    names_ending,
    prepare_out_dir,
    remove_leftovers,
    write_failures_csv,
)
from hpatool.convert.pool import (
    bounded_map,
    check_workers,
    deferred_interrupts,
    sigterm_as_interrupt,
    worker_pool,
)
from hpatool.convert.workers import OutcomeKind, convert_file
from hpatool.errors import AlreadyExists, DataError, NotFound, UsageError, WorkFailed
from hpatool.ids import COLOURS, id_problem
from hpatool.imaging import check_channel_rule
from hpatool.options import PreprocessConfig
from hpatool.outputs import check_output_dir
from hpatool.registry import DatasetRecord, Registry, check_name

SOURCE_EXTS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
_SOURCE_FILE = re.compile(
    r"^(?P<id>.+)_(?P<colour>red|green|blue|yellow)\.(?P<ext>jpe?g|png|tiff?)$", re.IGNORECASE
)


@dataclass(frozen=True)
class SourceFile:
    id: str
    colour: str
    path: Path


@dataclass(frozen=True)
class ConvertFailure:
    id: str
    colour: str
    path: str
    error: str


@dataclass
class PreprocessSummary:
    """What ``preprocess_images`` did."""

    src_dir: Path
    out_dir: Path
    files: int = 0
    converted: int = 0
    skipped: int = 0
    failures: list[ConvertFailure] = field(default_factory=list)
    failures_csv: Path | None = None
    samples: int = 0
    complete_samples: int = 0
    dataset: DatasetRecord | None = None
    elapsed_s: float = 0.0

    @property
    def failed(self) -> int:
        return len(self.failures)


@dataclass(frozen=True)
class _Registration:
    """Registering the output, as checked before any work: the dataset ``name`` (``existing``
    if a rerun updates it) and, with ``--labels``, its label table, path and sha256."""

    reg: Registry
    name: str
    existing: DatasetRecord | None
    table: Any = None
    labels_path: str | None = None
    labels_sha256: str | None = None


# --------------------------------------------------------------------------- naming


def scan_sources(src_dir: Path) -> tuple[list[SourceFile], list[ConvertFailure]]:
    """Source files of ``src_dir`` (sorted by id, colour) and the names that cannot be used.

    Files that are not ``<Id>_<colour>.<ext>`` are ignored; an unsafe id, or two sources for
    one output (``x_red.jpg`` and ``x_red.png``), is a failure of that file.
    """
    found: dict[tuple[str, str], list[Path]] = defaultdict(list)
    failures: list[ConvertFailure] = []
    with os.scandir(src_dir) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_file():
                continue
            m = _SOURCE_FILE.match(entry.name)
            if not m:
                continue
            if not is_utf8(entry.name):
                raise DataError(
                    f"{src_dir}: the file name {entry.name!r} is not valid UTF-8 and cannot be "
                    "recorded; rename it (e.g. with 'convmv -f latin1 -t utf8') and rerun "
                    "(nothing was converted)"
                )
            sample_id, colour = m.group("id"), m.group("colour").lower()
            problem = id_problem(sample_id)
            if problem:
                failures.append(
                    ConvertFailure(
                        sample_id, colour, entry.path, f"unusable Id {sample_id!r}: {problem}"
                    )
                )
                continue
            found[(sample_id, colour)].append(Path(entry.path))
    sources: list[SourceFile] = []
    for (sample_id, colour), paths in sorted(found.items(), key=lambda kv: kv[0]):
        if len(paths) > 1:
            names = ", ".join(sorted(p.name for p in paths))
            failures.append(
                ConvertFailure(
                    sample_id,
                    colour,
                    str(paths[0]),
                    f"several sources for {sample_id}_{colour}.png ({names}); keep one of them",
                )
            )
            continue
        sources.append(SourceFile(sample_id, colour, paths[0]))
    return sources, failures


def _output(out: Path, source: SourceFile) -> Path:
    return out / f"{source.id}_{source.colour}.png"


def _is_current(dst: Path, src: Path) -> bool:
    """An output is current if it exists, is not older than its source and looks whole (an
    empty or truncated PNG, damaged after it was written, is converted again)."""
    try:
        newer = dst.stat().st_mtime >= src.stat().st_mtime
    except FileNotFoundError:
        return False
    return newer and looks_whole(dst)


def default_output_name(reg: Registry, src: Path, out: Path, size: int) -> str:
    """The dataset name ``preprocess`` registers its output under when no ``--name`` is given:
    the dataset an earlier run of the same conversion registered; else ``<source>-<size>`` when
    the source folder is a registered dataset's, else the output folder's name; made unique
    with ``-2``, ``-3``... if taken."""
    for record in reg.datasets():
        prov = record.provenance
        made_here = prov.get("made_by") == "preprocess" and record.root == out
        if made_here and prov.get("source") == str(src):
            return record.name
    source = reg.dataset_at(src)
    if source is not None:
        base = f"{source.name}-{size}" if size else f"{source.name}-converted"
    else:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "-", out.name).strip("-._")[:56] or "images"
        if not base[0].isalnum():
            base = f"d{base}"
    name, n = base, 1
    while reg.has_dataset(name):
        n += 1
        name = f"{base}-{n}"
    return name


def _check_registration(reg: Registry, name: str, src: Path, out: Path) -> DatasetRecord | None:
    """The existing dataset ``name`` if a rerun may update it; None if the name is new."""
    check_name(name)
    if not reg.has_dataset(name):
        return None
    record = reg.dataset(name)
    prov = record.provenance
    same_source = prov.get("source") == str(src) and record.root == out
    if prov.get("made_by") == "preprocess" and same_source:
        return record
    raise AlreadyExists(
        f"dataset {name!r} already exists and was not made by 'hpatool preprocess {src} --out "
        f"{out}'; choose another --name or run 'hpatool datasets remove {name}' first"
    )


def _plan_registration(
    reg: Registry | None, name: str | None, labels: Path | None, src: Path, out: Path, size: int
) -> _Registration | None:
    """Check the registration (name, label CSV) before any work; None without a registry."""
    if reg is None:
        return None
    if name is None:
        name = default_output_name(reg, src, out, size)
    existing = _check_registration(reg, name, src, out)
    if labels is None:
        return _Registration(reg, name, existing)
    from hpatool.labels import load_label_csv

    table = load_label_csv(labels)
    return _Registration(
        reg,
        name,
        existing,
        table=table,
        labels_path=str(labels.expanduser().resolve()),
        labels_sha256=sha256_file(labels),
    )


# --------------------------------------------------------------------------- the job


def preprocess_images(
    src_dir: Path,
    out_dir: Path,
    config: PreprocessConfig | None = None,
    *,
    registry: Registry | None = None,
    progress: ProgressFn | None = None,
    register: bool = True,
) -> PreprocessSummary:
    """Convert every ``<Id>_<colour>.<ext>`` in ``src_dir`` to ``out_dir/<Id>_<colour>.png``,
    with the options of ``config`` (default: ``PreprocessConfig()``).

    8-bit greyscale, ``size``×``size`` (0 keeps each image's size), channel rule ``stain`` or
    ``luma`` for RGB sources. Idempotent: outputs already there and not older than their
    source are skipped. Files that fail are returned as data (and written to
    ``out_dir/failures.csv``); the others are still converted. With a ``registry`` the output is
    registered as dataset ``name`` (default: ``default_output_name``; samples from ``labels`` if
    given, else from the source dataset if ``src_dir`` is one's image folder, else the ids
    found), with its lineage. With ``register=False`` the ``registry`` is only checked: an
    ``out_dir`` holding what it must keep (its home, another dataset's images) is refused.
    """
    started = time.perf_counter()
    cfg = config if config is not None else PreprocessConfig()
    size, channel_rule, name, labels = cfg.size, cfg.channel_rule, cfg.name, cfg.labels
    check_size(size, zero="keeps each image's own size")
    check_channel_rule(channel_rule)
    n_workers = check_workers(cfg.workers)
    if (registry is None or not register) and (name is not None or labels is not None):
        raise UsageError("--no-register leaves nothing for --name or --labels; drop one of them")
    for path, what in (
        (src_dir, "source folder"),
        (out_dir, "--out folder"),
        (labels, "--labels file"),
    ):
        if path is not None:
            check_path_text(path, what)
    src, out = _check_folders(src_dir, out_dir)
    registration = _plan_registration(registry if register else None, name, labels, src, out, size)
    own = registration.name if registration is not None and registration.existing else None
    check_output_dir(out_dir, "--out", registry, own_dataset=own, writes=(FAILURES_CSV,))
    sources, failures = scan_sources(src)
    if not sources and not failures:
        raise DataError(
            f"{src}: no <Id>_<colour>.{{jpg,png,tif}} files (colours: {', '.join(COLOURS)}); "
            "nothing to convert"
        )
    out = prepare_out_dir(out_dir)
    with output_lock(out, "preprocess"):
        claim_output_dir(out, size, channel_rule)
        summary = PreprocessSummary(src_dir=src, out_dir=out, files=len(sources) + len(failures))
        _convert_sources(summary, sources, failures, cfg, n_workers, progress)
        if registration is not None:
            summary.dataset = _register_output(
                registration,
                src,
                out,
                size=size,
                channel_rule=channel_rule,
                ids_found=sorted({s.id for s in sources} | {f.id for f in failures}),
                present=names_ending(out, ".png"),
                failed_ids={f.id for f in failures},
            )
    summary.elapsed_s = time.perf_counter() - started
    return summary


def _convert_sources(
    summary: PreprocessSummary,
    sources: list[SourceFile],
    failures: list[ConvertFailure],
    cfg: PreprocessConfig,
    workers: int,
    progress: ProgressFn | None,
) -> None:
    """Convert the ``sources`` whose output is not current into ``summary.out_dir``; the
    counts, failures (and ``failures.csv``) and complete samples go to ``summary``."""
    out = summary.out_dir
    remove_leftovers(out, {s.id for s in sources})
    todo = [s for s in sources if not _is_current(_output(out, s), s.path)]
    summary.skipped = len(sources) - len(todo)
    summary.converted = _convert_all(
        todo,
        out,
        size=cfg.size,
        rule=cfg.channel_rule,
        workers=workers,
        failures=failures,
        done=summary.skipped + len(failures),
        total=summary.files,
        progress=progress,
    )
    _record_failures(summary, failures)
    ids_found = {s.id for s in sources} | {f.id for f in failures}
    summary.samples = len(ids_found)
    present = names_ending(out, ".png")
    summary.complete_samples = sum(
        1 for i in ids_found if all(f"{i}_{c}.png" in present for c in COLOURS)
    )


def _check_folders(src_dir: Path, out_dir: Path) -> tuple[Path, Path]:
    """The source folder and the output folder, resolved (the output not created yet)."""
    src = src_dir.expanduser().resolve()
    if not src.is_dir():
        raise NotFound(
            f"{src_dir}: no such folder; give the folder holding <Id>_<colour>.jpg/.png/.tif files"
        )
    out = out_dir.expanduser().resolve()
    if out == src:
        raise UsageError(
            f"--out {out_dir} is the source folder; write the converted images to another folder"
        )
    return src, out


def _convert_all(
    todo: list[SourceFile],
    out: Path,
    *,
    size: int,
    rule: str,
    workers: int,
    failures: list[ConvertFailure],
    done: int,
    total: int,
    progress: ProgressFn | None,
) -> int:
    """Convert ``todo`` in a process pool (inline with one worker); the number converted. Bad
    files are appended to ``failures``; an output that cannot be written stops the run."""
    if progress:
        progress(done, total)
    jobs = ((s, (str(s.path), str(_output(out, s)), s.colour, size, rule)) for s in todo)
    converted = 0
    try:
        with worker_pool(workers, len(todo)) as pool, sigterm_as_interrupt():
            for source, outcome in bounded_map(pool, convert_file, jobs, 4 * workers):
                if outcome.kind is OutcomeKind.WRITE_ERROR:
                    raise WorkFailed(
                        f"{outcome.message}; free some space in the --out folder (or check its "
                        "permissions) and rerun: converted files are kept"
                    )
                if outcome.ok:
                    converted += 1
                else:
                    failures.append(
                        ConvertFailure(source.id, source.colour, str(source.path), outcome.message)
                    )
                done += 1
                if progress:
                    progress(done, total)
    except BaseException:
        # A stop can land between the creation of a temporary file and the block that removes
        # it (inside tempfile.mkstemp); the pool is shut down, nothing writes now: sweep them.
        with deferred_interrupts():
            remove_leftovers(out, {s.id for s in todo})
        raise
    return converted


def _record_failures(summary: PreprocessSummary, failures: list[ConvertFailure]) -> None:
    """Sort the failures into the summary and write (or remove) ``failures.csv``."""
    failures.sort(key=lambda f: (f.id, COLOURS.index(f.colour) if f.colour in COLOURS else 9))
    summary.failures = failures
    summary.failures_csv = write_failures_csv(
        summary.out_dir / FAILURES_CSV,
        ["Id", "colour", "path", "error"],
        [[f.id, f.colour, f.path, f.error] for f in failures],
    )


# --------------------------------------------------------------------------- registration


def _register_output(
    plan: _Registration,
    src: Path,
    out: Path,
    *,
    size: int,
    channel_rule: str,
    ids_found: list[str],
    present: set[str],
    failed_ids: set[str],
) -> DatasetRecord:
    """Create or update the output dataset, its samples, statuses and lineage: one
    transaction."""
    reg, name = plan.reg, plan.name

    def status(sample_id: str) -> str | None:
        if all(f"{sample_id}_{c}.png" in present for c in COLOURS):
            return "done"
        return "failed" if sample_id in failed_ids else None

    with reg.transaction():
        parent = reg.dataset_at(src)
        if parent is not None and parent.name == name:
            parent = None
        ids, targets, kind, labels_path, labels_sha = _samples_of(reg, plan, parent, ids_found)
        provenance = {
            "made_by": "preprocess",
            "source": str(src),
            "source_dataset": parent.name if parent is not None else None,
            "size": size,
            "channel_rule": channel_rule,
            "labels": labels_path,
            "tool_version": __version__,
        }
        provenance = {k: v for k, v in provenance.items() if v is not None}
        if plan.existing is None:
            return reg.create_dataset(
                name,
                kind,
                ids,
                targets,
                root=out,
                labels_path=labels_path,
                labels_sha256=labels_sha,
                parent=parent.name if parent is not None else None,
                provenance=provenance,
                statuses=[status(i) for i in ids],
            )
        known = {s.id for s in reg.samples(name)}
        new = [(i, t) for i, t in zip(ids, targets, strict=True) if i not in known]
        if new:
            reg.add_samples(name, [i for i, _ in new], [t for _, t in new])
        reg.set_status(name, [(i, status(i)) for i in ids])
        if labels_path is not None:
            reg.set_origin(name, labels_path=labels_path, labels_sha256=labels_sha)
        if parent is not None:
            reg.set_origin(name, parent=parent.name)
        return reg.update_dataset(name, root=out, provenance=provenance)


def _samples_of(
    reg: Registry, plan: _Registration, parent: DatasetRecord | None, ids_found: list[str]
) -> tuple[list[str], list[tuple[int, ...] | None], str, str | None, str | None]:
    """The output dataset's ``(ids, targets, kind, labels_path, labels_sha256)``: from
    ``--labels``, else from the source dataset, else the ids found, unlabelled."""
    if plan.table is not None:
        table = plan.table
        kind = parent.kind if parent is not None else ("train" if table.labelled else "test")
        return list(table.ids), list(table.targets), kind, plan.labels_path, plan.labels_sha256
    if parent is not None:
        samples = reg.samples(parent.name)
        return (
            [s.id for s in samples],
            [s.target for s in samples],
            parent.kind,
            parent.labels_path,
            parent.labels_sha256,
        )
    return list(ids_found), [None] * len(ids_found), "test", None, None
