"""The ``HpaToolError`` family.

Library code raises these; the CLI turns each into one red line on stderr and an exit code:
1 for bad data or failed work, 2 for bad usage. Messages are single lines that name the file,
row and value at fault and, where there is one, the fix.
"""

from __future__ import annotations


class HpaToolError(Exception):
    """Base class: bad data or failed work (exit 1)."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        # One line, always: the CLI prints exactly this.
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        return str(self)


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
