"""The one event loop of ``download-external``: uvloop when installed, SIGTERM as a cancel."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Coroutine
from types import ModuleType
from typing import Any


def _uvloop() -> ModuleType | None:
    """uvloop when it is installed and not turned off (``HPATOOL_EVENT_LOOP=asyncio``)."""
    if os.environ.get("HPATOOL_EVENT_LOOP", "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop


def event_loop_name() -> str:
    """The event loop ``download_external`` runs on: ``"uvloop"`` or ``"asyncio"``."""
    return "uvloop" if _uvloop() is not None else "asyncio"


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run(main)``, on uvloop's event loop when it is installed; SIGTERM cancels
    ``main`` (the caller sees ``asyncio.CancelledError``) as cleanly as Ctrl-C stops it."""
    uvloop = _uvloop()
    if uvloop is not None:
        uvloop.run(_cancel_on_sigterm(main))
    else:
        asyncio.run(_cancel_on_sigterm(main))


async def _cancel_on_sigterm(main: Coroutine[Any, Any, None]) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        # SIGTERM stops the run as cleanly as Ctrl-C does (main thread only).
        if task is not None:
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
    await main
