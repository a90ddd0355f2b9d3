"""Batch conversion of raw images to sample channel files, in a process pool.

Shared by ``hpatool preprocess`` (images already on disk) and ``hpatool download-external``
(images as they arrive). A source is ``<Id>_<colour>.{jpg,jpeg,png,tif,tiff}``: an RGB JPEG of
one stain (as the HPA image server sends), an 8- or 16-bit greyscale or RGB PNG, or a TIFF. The
output is ``<out>/<Id>_<colour>.png``, 8-bit greyscale, ``size``×``size``, made by
:func:`hpatool.imaging.convert_channel` (draft-mode JPEG decode, channel rule, 16-bit stretch,
LANCZOS resize) and written atomically.

An output folder remembers the size and channel rule its PNGs were made with (in
``.hpatool-images.json``), so that a rerun with other settings cannot mix two kinds of image in
one folder; a rerun with the same settings skips every output that is already there and newer
than its source.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    BrokenExecutor,
    Executor,
    Future,
    ProcessPoolExecutor,
    wait,
)
from dataclasses import dataclass, field
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any, TypeVar

from hpatool import __version__
from hpatool._io import ProgressFn, sha256_file, write_text_atomic
from hpatool.errors import (
    AlreadyExists,
    DataError,
    Interrupted,
    NotFound,
    UsageError,
    WorkFailed,
)
from hpatool.ids import COLOURS, id_problem
from hpatool.imaging import check_channel_rule, check_decodes, convert_channel, save_png
from hpatool.registry import DatasetRecord, Registry, check_name

#: Remembers the settings an output folder's PNGs were made with.
MANIFEST = ".hpatool-images.json"
FAILURES_CSV = "failures.csv"
MAX_SIZE = 8192
SOURCE_EXTS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
_SOURCE_FILE = re.compile(
    r"^(?P<id>.+)_(?P<colour>red|green|blue|yellow)\.(?P<ext>jpe?g|png|tiff?)$", re.IGNORECASE
)

#: How ``convert_file`` starts the error of an output it could not write (disk full,
#: permissions): fatal for the whole run, unlike a bad input file.
WRITE_ERROR = "cannot write "
_LEFTOVER = re.compile(
    r"^(?:\.tmp-)?(?P<id>.+)_(?:red|green|blue|yellow)\.(?:jpg|png)(?:\.part$|\..+)"
)

T = TypeVar("T")
R = TypeVar("R")


# --------------------------------------------------------------------------- worker functions
# Top-level, picklable, and never raising: each returns None or a one-line error.


def convert_file(src: str, dst: str, colour: str, size: int, rule: str) -> str | None:
    """Convert one raw image to ``dst`` (an 8-bit greyscale PNG, written atomically)."""
    try:
        arr = convert_channel(Path(src), colour, size, rule)
    except Interrupted:
        raise  # SIGTERM while converting inline (--workers 1): stop, not a failed file
    except DataError as exc:
        return exc.message
    except Exception as exc:  # any failure of one file is data, not a crash
        text = " ".join(str(exc).split()) or type(exc).__name__
        return f"{src}: {type(exc).__name__}: {text}"
    try:
        save_png(arr, Path(dst))
    except Interrupted:
        raise
    except OSError as exc:
        return f"{WRITE_ERROR}{dst}: {exc.strerror or exc}"
    except DataError as exc:
        return exc.message
    except Exception as exc:  # any failure of one file is data, not a crash
        text = " ".join(str(exc).split()) or type(exc).__name__
        return f"{src}: {type(exc).__name__}: {text}"
    return None


def verify_file(src: str) -> str | None:
    """``None`` if ``src`` decodes as a whole image, else why not."""
    try:
        check_decodes(Path(src))
    except DataError as exc:
        return exc.message
    except Exception as exc:
        return f"{src}: {type(exc).__name__}: {exc}"
    return None


def remove_leftovers(folder: Path, ids: set[str]) -> None:
    """Delete ``.part`` and half-written ``.tmp-*`` files a killed run left for ``ids``.

    Only these ids: another run (a shard) writing into the same folder keeps its files.
    """
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    for entry in entries:
        if not (entry.name.endswith(".part") or entry.name.startswith(".tmp-")):
            continue
        m = _LEFTOVER.match(entry.name)
        if m and m.group("id") in ids:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[list[int]]:
    """Within the block (a clean-up), Ctrl-C and SIGTERM are held back so that the clean-up
    always completes; the signals that arrived are in the yielded list, for the caller to act
    on afterwards."""
    received: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        received.append(signum)

    try:
        previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        yield received
        return
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM stops the work as cleanly as Ctrl-C does (exit 143)."""

    def handler(signum: int, frame: Any) -> None:
        raise Interrupted("terminated", exit_code=143)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _worker_init(parent_pid: int) -> None:
    """Set up a conversion worker: ignore Ctrl-C, and die with the parent.

    Ctrl-C is the parent's business (it cancels the work and shuts the pool down); without
    this every worker would print its own traceback. And if the parent is killed (``kill -9``)
    its forked workers must not live on as orphans holding its pipes open.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
        else:
            if os.getppid() != parent_pid:  # the parent died before prctl
                os._exit(1)
            return
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(1)


def _noop() -> None:
    return None


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` conversion processes, all started before this returns.

    On Linux the workers are forked (fast, and no re-import of the caller's main module), and
    they are forked now, before the caller starts an event loop or other threads; elsewhere
    they are spawned.
    """
    ctx: BaseContext = multiprocessing.get_context(
        "fork" if sys.platform.startswith("linux") else "spawn"
    )
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(),)
    )
    if ctx.get_start_method() == "fork":
        pool.submit(_noop).result()  # with fork, the first submit starts every worker
    return pool


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def bounded_map(
    pool: Executor | None,
    fn: Callable[..., R],
    jobs: Iterable[tuple[T, tuple[Any, ...]]],
    max_in_flight: int,
) -> Iterator[tuple[T, R]]:
    """``(key, fn(*args))`` for each ``(key, args)`` job, in completion order.

    With a pool at most ``max_in_flight`` jobs are submitted at a time (a million-file folder
    does not become a million futures); without one, jobs run inline in order. Interrupting the
    iteration cancels the jobs not yet started.
    """
    if pool is None:
        for key, args in jobs:
            yield key, fn(*args)
        return
    pending: dict[Future[R], T] = {}
    it = iter(jobs)
    try:
        for key, args in it:
            pending[pool.submit(fn, *args)] = key
            if len(pending) >= max_in_flight:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield pending.pop(fut), fut.result()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield pending.pop(fut), fut.result()
    finally:
        for fut in pending:
            fut.cancel()


# --------------------------------------------------------------------------- output folders


def check_size(size: int, *, zero: str) -> int:
    """``size`` if it is 0..MAX_SIZE, else a ``UsageError`` (``zero`` says what 0 means)."""
    if not 0 <= size <= MAX_SIZE:
        raise UsageError(
            f"invalid --size {size}: give the output width and height in pixels, 1..{MAX_SIZE} "
            f"(0 {zero})"
        )
    return size


def check_workers(workers: int | None) -> int:
    if workers is None:
        return default_workers()
    cpus = os.cpu_count() or 1
    most = max(8, 4 * cpus)
    if not 1 <= workers <= most:
        raise UsageError(
            f"invalid --workers {workers}: give 1 to {most} processes (this machine has {cpus} "
            "CPUs)"
        )
    return workers


def claim_output_dir(out_dir: Path, size: int, rule: str) -> None:
    """Record (or check) the size and channel rule of the PNGs in ``out_dir``.

    Refuses, with the fix, to write PNGs of other settings into a folder that already holds
    some: the outputs already there would be skipped and the folder would mix two kinds.
    """
    path = out_dir / MANIFEST
    wanted = {"size": size, "channel_rule": rule}
    if path.exists():
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
            old = {"size": int(found["size"]), "channel_rule": str(found["channel_rule"])}
        except (OSError, ValueError, KeyError, TypeError):
            raise DataError(
                f"{path}: unreadable settings file; delete it if the PNGs in {out_dir} were all "
                "made with the settings of this command"
            ) from None
        if old != wanted:
            old_size = "original size" if old["size"] == 0 else f"--size {old['size']}"
            new_size = "original size" if size == 0 else f"--size {size}"
            raise UsageError(
                f"{out_dir} holds PNGs made with {old_size} --channel-rule "
                f"{old['channel_rule']}, not {new_size} --channel-rule {rule}; rerun with those "
                "settings, or write to another --out"
            )
        return
    write_text_atomic(
        path, json.dumps({**wanted, "tool_version": __version__}, sort_keys=True) + "\n"
    )


def prepare_out_dir(out_dir: Path) -> Path:
    """``out_dir`` resolved and created, or a ``UsageError`` if it cannot be a folder."""
    out = out_dir.expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out_dir} is a file; give a folder for the images")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create --out folder {out_dir}: {exc.strerror}") from None
    return out


def write_failures_csv(path: Path, header: list[str], rows: list[list[Any]]) -> Path | None:
    """Write ``rows`` to ``path`` atomically; with no rows remove a stale file. The path or None."""
    if not rows:
        path.unlink(missing_ok=True)
        return None
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())
    return path


# --------------------------------------------------------------------------- preprocess


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


def _is_current(dst: Path, src: Path) -> bool:
    """An output is current if it exists (outputs are written atomically, so whole) and is
    not older than its source."""
    try:
        return dst.stat().st_mtime >= src.stat().st_mtime
    except FileNotFoundError:
        return False


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


def preprocess_images(
    src_dir: Path,
    out_dir: Path,
    *,
    size: int = 512,
    channel_rule: str = "stain",
    workers: int | None = None,
    registry: Registry | None = None,
    name: str | None = None,
    labels: Path | None = None,
    progress: ProgressFn | None = None,
) -> PreprocessSummary:
    """Convert every ``<Id>_<colour>.<ext>`` in ``src_dir`` to ``out_dir/<Id>_<colour>.png``.

    8-bit greyscale, ``size``×``size`` (0 keeps each image's size), channel rule ``stain`` or
    ``luma`` for RGB sources. Idempotent: outputs already there and not older than their
    source are skipped. Files that fail are returned as data (and written to
    ``out_dir/failures.csv``); the others are still converted. With a ``registry`` the output is
    registered as dataset ``name`` (default: ``default_output_name``; samples from ``labels`` if
    given, else from the source dataset if ``src_dir`` is one's image folder, else the ids
    found), with its lineage.
    """
    started = time.perf_counter()
    check_size(size, zero="keeps each image's own size")
    check_channel_rule(channel_rule)
    n_workers = check_workers(workers)
    if labels is not None and registry is None:
        raise UsageError("--labels only gives the labels of the registered output")
    if name is not None and registry is None:
        raise ValueError("registering a dataset needs a registry")
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
    existing = None
    table = None
    if registry is not None and name is None:
        name = default_output_name(registry, src, out, size)
    if registry is not None and name is not None:
        existing = _check_registration(registry, name, src, out)
        if labels is not None:
            from hpatool.labels import load_label_csv

            table = load_label_csv(labels)
    sources, failures = scan_sources(src)
    if not sources and not failures:
        raise DataError(
            f"{src}: no <Id>_<colour>.{{jpg,png,tif}} files (colours: {', '.join(COLOURS)}); "
            "nothing to convert"
        )
    out = prepare_out_dir(out_dir)
    claim_output_dir(out, size, channel_rule)
    summary = PreprocessSummary(src_dir=src, out_dir=out, files=len(sources) + len(failures))

    remove_leftovers(out, {s.id for s in sources})
    todo: list[SourceFile] = []
    for source in sources:
        if _is_current(out / f"{source.id}_{source.colour}.png", source.path):
            summary.skipped += 1
        else:
            todo.append(source)
    total = summary.files
    done = summary.skipped + len(failures)
    if progress:
        progress(done, total)
    jobs = (
        (s, (str(s.path), str(out / f"{s.id}_{s.colour}.png"), s.colour, size, channel_rule))
        for s in todo
    )
    pool = process_pool(n_workers) if n_workers > 1 and len(todo) > 1 else None
    try:
        with sigterm_as_interrupt():
            for source, error in bounded_map(pool, convert_file, jobs, max_in_flight=4 * n_workers):
                if error is None:
                    summary.converted += 1
                elif error.startswith(WRITE_ERROR):
                    raise WorkFailed(
                        f"{error}; free some space in the --out folder (or check its "
                        "permissions) and rerun: converted files are kept"
                    )
                else:
                    failures.append(
                        ConvertFailure(source.id, source.colour, str(source.path), error)
                    )
                done += 1
                if progress:
                    progress(done, total)
    except BrokenExecutor:
        raise WorkFailed(
            "a conversion process died (out of memory?); finished files are kept, rerun to "
            "resume, perhaps with fewer --workers"
        ) from None
    finally:
        if pool is not None:
            with deferred_interrupts() as held:
                pool.shutdown(wait=True, cancel_futures=True)
            if held and sys.exc_info()[1] is None:  # else the error in flight says enough
                raise KeyboardInterrupt
    failures.sort(key=lambda f: (f.id, COLOURS.index(f.colour) if f.colour in COLOURS else 9))
    summary.failures = failures
    summary.failures_csv = write_failures_csv(
        out / FAILURES_CSV,
        ["Id", "colour", "path", "error"],
        [[f.id, f.colour, f.path, f.error] for f in failures],
    )
    ids_found = sorted({s.id for s in sources} | {f.id for f in failures})
    summary.samples = len(ids_found)
    present = _present_outputs(out)
    summary.complete_samples = sum(
        1 for i in ids_found if all(f"{i}_{c}.png" in present for c in COLOURS)
    )
    if registry is not None and name is not None:
        summary.dataset = _register_output(
            registry,
            name,
            src,
            out,
            size=size,
            channel_rule=channel_rule,
            labels=labels,
            table=table,
            existing=existing,
            ids_found=ids_found,
            present=present,
            failed_ids={f.id for f in failures},
        )
    summary.elapsed_s = time.perf_counter() - started
    return summary


def _present_outputs(out: Path) -> set[str]:
    with os.scandir(out) as entries:
        return {e.name for e in entries if e.name.endswith(".png")}


def _register_output(
    reg: Registry,
    name: str,
    src: Path,
    out: Path,
    *,
    size: int,
    channel_rule: str,
    labels: Path | None,
    table: Any,
    existing: DatasetRecord | None,
    ids_found: list[str],
    present: set[str],
    failed_ids: set[str],
) -> DatasetRecord:
    parent = reg.dataset_at(src)
    if parent is not None and parent.name == name:
        parent = None
    labels_path = labels_sha = None
    if table is not None:
        assert labels is not None
        ids: list[str] = list(table.ids)
        targets: list[tuple[int, ...] | None] = list(table.targets)
        kind = parent.kind if parent is not None else ("train" if table.labelled else "test")
        labels_path = str(labels.expanduser().resolve())
        labels_sha = sha256_file(labels)
    elif parent is not None:
        parent_samples = reg.samples(parent.name)
        ids = [s.id for s in parent_samples]
        targets = [s.target for s in parent_samples]
        kind = parent.kind
        labels_path, labels_sha = parent.labels_path, parent.labels_sha256
    else:
        ids = ids_found
        targets = [None] * len(ids)
        kind = "test"

    def status(sample_id: str) -> str | None:
        if all(f"{sample_id}_{c}.png" in present for c in COLOURS):
            return "done"
        return "failed" if sample_id in failed_ids else None

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
    if existing is None:
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
