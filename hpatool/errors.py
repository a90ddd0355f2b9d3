"""The ``HpaToolError`` family.

Library code raises these; the CLI turns each into one red line on stderr and an exit code:
1 for bad data or failed work, 2 for bad usage. Messages are single lines that name the file,
row and value at fault and, where there is one, the fix.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any


class HpaToolError(Exception):
    """Base class: bad data or failed work (exit 1).

    Every subclass survives the two ways an error crosses processes: pickling (``__reduce__``
    rebuilds it without calling its ``__init__``, whatever that takes) and torch's DataLoader
    re-raise in the parent (``exc_type(message=...)`` with its worker text, from which the
    original one-line message is taken back: ``original_message``)."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        # One line, always: the CLI prints exactly this.
        super().__init__(" ".join(original_message(str(message)).split()))

    @property
    def message(self) -> str:
        return str(self)

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), str(self), dict(self.__dict__)))

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass with an ``__init__`` of its own that takes no ``message`` still accepts
        ``cls(message=TEXT)`` alone, as torch's DataLoader re-raise calls it."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None or "message" in inspect.signature(init).parameters:
            return

        @functools.wraps(init)
        def accepting_message(self: HpaToolError, *args: Any, **kw: Any) -> None:
            if not args and set(kw) == {"message"}:
                HpaToolError.__init__(self, kw["message"])
                return
            init(self, *args, **kw)

        cls.__init__ = accepting_message  # type: ignore[method-assign]


def _rebuild(cls: type[HpaToolError], message: str, state: dict[str, object]) -> HpaToolError:
    """An ``HpaToolError`` of class ``cls`` with ``message`` and the attributes ``state``, made
    without calling the class's own ``__init__`` (unpickling)."""
    exc = cls.__new__(cls)
    HpaToolError.__init__(exc, message)
    exc.__dict__.update(state)
    return exc


def original_message(text: str) -> str:
    """The original one-line message inside torch's DataLoader worker text (``Caught BadImage in
    DataLoader worker process 0. Original Traceback ...`` ending in ``module.Class: message``);
    any other text as it is."""
    if not text.startswith("Caught ") or "Original Traceback" not in text:
        return text
    last = next((line for line in reversed(text.splitlines()) if line.strip()), "")
    name, sep, rest = last.partition(": ")
    return rest.strip() if sep and "." in name and " " not in name.strip() else text


class DataError(HpaToolError):
    """An input file has bad content (a malformed CSV, a bad label, an unreadable image)."""


class WorkFailed(HpaToolError):
    """Bulk work finished with failures (some samples failed to verify, download, convert...)."""


class UsageError(HpaToolError):
    """The command was called wrongly: bad option value, unknown name, missing file (exit 2)."""

    exit_code = 2


class NotFound(UsageError):
    """A named thing (dataset, run, sample, file) does not exist."""


class AlreadyExists(UsageError):
    """A name that must be new is already taken."""


class Interrupted(HpaToolError):
    """The run was stopped by Ctrl-C (exit 130) or SIGTERM (exit 143); what was finished is
    kept."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Note(UserWarning):
    """Not a problem: something the user should know that was done (``warnings.warn`` with a
    subclass of this shows as one ``note: ...`` line on stderr, where other hpatool warnings
    show as ``warning: ...``)."""
