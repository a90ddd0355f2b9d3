"""``hpatool preprocess``: raw images already on disk -> sample channel PNGs, registered.

A source is ``<Id>_<colour>.{jpg,jpeg,png,tif,tiff}``: an RGB JPEG of one stain (as the HPA
image server sends), an 8- or 16-bit greyscale or RGB PNG, or a TIFF, in the source folder or,
when it has none of its own, in its sub-folders one level down (the server's ``<antibody>/``
layout: see :func:`hpatool.preprocess.sources.scan_sources`). The output is
``<out>/<Id>_<colour>.png``, 8-bit greyscale, ``size``×``size``. This module is the job:
naming the sources, converting them through :mod:`hpatool.convert` (a rerun with the same
settings skips every output that is already there and newer than its source), and registering
the output as a dataset with its lineage, in one registry transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from hpatool._io import ProgressFn, path_problem
from hpatool.convert.lock import output_lock
from hpatool.convert.outdir import (
    FAILURES_CSV,
    check_path_text,
    check_size,
    claim_output_dir,
    names_ending,
    prepare_out_dir,
    remove_leftovers,
    write_failures_csv,
)
from hpatool.convert.pool import bounded_map, check_workers, worker_pool
from hpatool.convert.workers import OutcomeKind, convert_file
from hpatool.errors import DataError, NotFound, UsageError, WorkFailed
from hpatool.ids import COLOURS
from hpatool.imaging import check_channel_rule
from hpatool.options import PreprocessConfig
from hpatool.outputs import check_output_dir
from hpatool.preprocess.registration import (
    _plan_registration,
    _register_output,
    default_output_name,
)
from hpatool.preprocess.sources import (
    SOURCE_EXTS,
    ConvertFailure,
    SourceFile,
    _is_current,
    _output,
    scan_sources,
)
from hpatool.registry import KINDS, DatasetRecord, Registry
from hpatool.signals import deferred_interrupts, sigterm_as_interrupt

__all__ = [
    "SOURCE_EXTS",
    "ConvertFailure",
    "PreprocessSummary",
    "SourceFile",
    "default_output_name",
    "preprocess_images",
    "scan_sources",
]


@dataclass
class PreprocessSummary:
    """What ``preprocess_images`` did."""

    src_dir: Path
    out_dir: Path
    files: int = 0
    #: the sub-folders of ``src_dir`` the sources were read from (the HPA server's layout);
    #: 0: the sources were in ``src_dir`` itself
    subfolders: int = 0
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
    """Convert every ``<Id>_<colour>.<ext>`` in ``src_dir`` (or, when it has none, in its
    sub-folders: ``scan_sources``) to ``out_dir/<Id>_<colour>.png``, with the options of
    ``config`` (default: ``PreprocessConfig()``).

    8-bit greyscale, ``size``×``size`` (0 keeps each image's size), channel rule ``stain`` or
    ``luma`` for RGB sources. Idempotent: outputs already there and not older than their
    source are skipped. Files that fail are returned as data (and written to
    ``out_dir/failures.csv``); the others are still converted. With a ``registry`` the output is
    registered as dataset ``name`` (default: ``default_output_name``; samples from ``labels`` if
    given, else from the source dataset if ``src_dir`` is one's image folder, else the ids
    found; of kind ``config.kind`` if given), with its lineage. With ``register=False`` the
    ``registry`` is only checked: an ``out_dir`` holding what it must keep (its home, another
    dataset's images) is refused.
    """
    started = time.perf_counter()
    cfg = config if config is not None else PreprocessConfig()
    size, channel_rule, name, labels = cfg.size, cfg.channel_rule, cfg.name, cfg.labels
    check_size(size, zero="keeps each image's own size")
    check_channel_rule(channel_rule)
    n_workers = check_workers(cfg.workers)
    if (registry is None or not register) and (
        name is not None or labels is not None or cfg.kind is not None
    ):
        raise UsageError(
            "--no-register leaves nothing for --name, --labels or --kind; drop one of them"
        )
    if cfg.kind is not None and cfg.kind not in KINDS:
        raise UsageError(f"invalid --kind {cfg.kind!r}; use one of {', '.join(KINDS)}")
    for path, what in (
        (src_dir, "source folder"),
        (out_dir, "--out folder"),
        (labels, "--labels file"),
    ):
        if path is not None:
            check_path_text(path, what)
    src, out = _check_folders(src_dir, out_dir)
    registration = _plan_registration(
        registry if register else None, name, labels, src, out, size, kind=cfg.kind
    )
    own = registration.name if registration is not None and registration.existing else None
    check_output_dir(out_dir, "--out", registry, own_dataset=own, writes=(FAILURES_CSV,))
    sources, failures = scan_sources(src, exclude=out)
    if not sources and not failures:
        raise DataError(
            f"{src}: no <Id>_<colour>.{{jpg,png,tif}} files (colours: {', '.join(COLOURS)}) in "
            "it, nor in its sub-folders one level down (the HPA server's <antibody>/ layout; "
            "deeper folders are not read); nothing to convert"
        )
    out = prepare_out_dir(out_dir)
    with output_lock(out, "preprocess"):
        claim_output_dir(out, size, channel_rule)
        summary = PreprocessSummary(src_dir=src, out_dir=out, files=len(sources) + len(failures))
        parents = {s.path.parent for s in sources} | {Path(f.path).parent for f in failures}
        summary.subfolders = len(parents - {src})
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
    if not src_dir.expanduser().is_dir():
        raise NotFound(
            f"{src_dir}: {path_problem(src_dir.expanduser(), 'folder')}; give the folder holding "
            "<Id>_<colour>.jpg/.png/.tif files"
        )
    src = src_dir.expanduser().resolve()
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
