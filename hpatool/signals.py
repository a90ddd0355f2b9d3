"""Stop signals, in one place: Ctrl-C (SIGINT, exit 130), SIGTERM from a scheduler (143) and
SIGHUP from a closed terminal (129) stop every long command alike, with one line that says
why (``stop_reason``) and what was kept.

- ``sigterm_as_interrupt``: within the block SIGTERM (and, with ``hangup``, SIGHUP) raises
  ``Interrupted`` as Ctrl-C raises ``KeyboardInterrupt`` (train, cv, predict, evaluate, the
  conversion pool, the cache build, dedup);
- ``deferred_interrupts``: within the block (a clean-up, an epoch's files) Ctrl-C and SIGTERM
  are held back and listed, so that it always completes; ``raise_held`` then acts on them;
- ``stop_code`` and ``stop_reason``: the exit code and the words of a stop.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

from hpatool.errors import Interrupted

#: The words of a stop, by exit code.
STOP_REASONS = {130: "interrupted", 143: "terminated (SIGTERM)", 129: "hung up (SIGHUP)"}


def stop_code(exc: BaseException) -> int:
    """The exit code of a stop: an ``Interrupted``'s own, else 130 (Ctrl-C)."""
    return exc.exit_code if isinstance(exc, Interrupted) else 130


def stop_reason(code: int) -> str:
    """``interrupted``, ``terminated (SIGTERM)`` or ``hung up (SIGHUP)``."""
    return STOP_REASONS.get(code, "interrupted")


def raise_held(held: list[int]) -> None:
    """Act on the signals ``deferred_interrupts`` held back: Ctrl-C as ``KeyboardInterrupt``,
    SIGTERM as ``Interrupted`` (exit 143); nothing when none came."""
    if not held:
        return
    if held[0] == signal.SIGINT:
        raise KeyboardInterrupt
    raise Interrupted("terminated", exit_code=143)


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
def sigterm_as_interrupt(*, hangup: bool = False) -> Iterator[None]:
    """Within the block, SIGTERM stops the work as cleanly as Ctrl-C does (exit 143); with
    ``hangup``, so does SIGHUP, a closed terminal (exit 129)."""

    def handler(signum: int, frame: Any) -> None:
        if signum == signal.SIGHUP:
            raise Interrupted("hung up", exit_code=129)
        raise Interrupted("terminated", exit_code=143)

    signals = [signal.SIGTERM, *([signal.SIGHUP] if hangup else [])]
    try:
        previous = {sig: signal.signal(sig, handler) for sig in signals}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
