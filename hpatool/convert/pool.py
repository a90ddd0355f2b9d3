"""The process pool that conversion (and synthesis) runs in, and the signals around it.

- :func:`process_pool` starts ``workers`` processes that ignore Ctrl-C (the parent's business)
  and die with the parent (no orphans after ``kill -9``);
- :func:`worker_pool` is that pool as a ``with`` block, or ``None`` (work inline) when there is
  no parallel work; it shuts the pool down without letting a second Ctrl-C cut that short, and
  turns a dead worker into a :class:`WorkerDied`;
- :func:`bounded_map` runs jobs over a pool (or inline) with a bounded number in flight;
- the signal handling (Ctrl-C, SIGTERM, SIGHUP) is ``hpatool.signals``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    BrokenExecutor,
    Executor,
    Future,
    ProcessPoolExecutor,
    wait,
)
from multiprocessing.context import BaseContext
from typing import Any, TypeVar

from hpatool.errors import UsageError, WorkFailed
from hpatool.signals import deferred_interrupts

T = TypeVar("T")
R = TypeVar("R")

#: What a run says when a pool process died (the kernel's OOM killer, mostly).
WORKER_DIED = (
    "a conversion process died (out of memory?); finished files are kept, rerun to resume, "
    "perhaps with fewer --workers"
)


class WorkerDied(WorkFailed):
    """A pool process died while working (killed for memory, mostly)."""


# --------------------------------------------------------------------------- the pool


def _worker_init(parent_pid: int) -> None:
    """Set up a pool process: ignore Ctrl-C, and die with the parent.

    Ctrl-C is the parent's business (it cancels the work and shuts the pool down); without
    this every worker would print its own traceback. And if the parent is killed (``kill -9``)
    its workers must not live on as orphans holding its pipes open.
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


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def check_workers(workers: int | None) -> int:
    """``workers`` if it is a sensible ``--workers`` (1 .. max(8, 4 per CPU)), the CPU count
    if None, else a ``UsageError``."""
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


def process_pool(workers: int, *, start_method: str | None = None) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes, all started before this returns when forked.

    By default on Linux the workers are forked (fast, and no re-import of the caller's main
    module), and they are forked now, before the caller starts an event loop or other
    threads; elsewhere they are spawned. ``start_method="spawn"`` spawns them everywhere
    (safe whatever threads the parent already runs).
    """
    method = start_method or ("fork" if sys.platform.startswith("linux") else "spawn")
    ctx: BaseContext = multiprocessing.get_context(method)
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(),)
    )
    if method == "fork":
        pool.submit(_noop).result()  # with fork, the first submit starts every worker
    return pool


@contextlib.contextmanager
def worker_pool(
    workers: int, jobs: int, *, start_method: str | None = None, died: str = WORKER_DIED
) -> Iterator[ProcessPoolExecutor | None]:
    """A pool of ``min(workers, jobs)`` processes for the block, or ``None`` (run the jobs
    inline) when ``workers`` or ``jobs`` is 1 or less.

    On leaving, the pool is shut down (pending jobs cancelled) with Ctrl-C and SIGTERM held
    back; one that arrived then is raised as ``KeyboardInterrupt`` unless an error is already
    on its way. A dead worker becomes ``WorkerDied(died)``.
    """
    pool = (
        process_pool(min(workers, jobs), start_method=start_method)
        if workers > 1 and jobs > 1
        else None
    )
    try:
        yield pool
    except BrokenExecutor:
        raise WorkerDied(died) from None
    finally:
        if pool is not None:
            with deferred_interrupts() as held:
                pool.shutdown(wait=True, cancel_futures=True)
            if held and sys.exc_info()[1] is None:  # else the error in flight says enough
                raise KeyboardInterrupt


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
    try:
        for key, args in jobs:
            pending[pool.submit(fn, *args)] = key
            if len(pending) >= max_in_flight:
                yield from _completed(pending)
        while pending:
            yield from _completed(pending)
    finally:
        for fut in pending:
            fut.cancel()


def _completed(pending: dict[Future[R], T]) -> Iterator[tuple[T, R]]:
    """Wait for at least one of ``pending`` and yield (and forget) those that are done."""
    done, _ = wait(pending, return_when=FIRST_COMPLETED)
    for fut in done:
        yield pending.pop(fut), fut.result()
