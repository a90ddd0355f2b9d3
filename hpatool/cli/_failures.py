"""The one line for a failure that is not an ``HpaToolError``: an ``OSError`` (the file and
what the system said, with what to do), a loop of symbolic links met while resolving a path, a
value that is not UTF-8 text, and the original text of an error re-raised from a DataLoader
worker. The root command group (``hpatool.cli``) prints it."""

from __future__ import annotations

import errno
import os

#: What to do about an ``OSError``, by ``errno``.
_OS_ADVICE = {
    errno.ENOSPC: "free some space and run the command again",
    errno.EDQUOT: "free some space (the disk quota is used up) and run the command again",
    errno.EROFS: "give a path on a writable file system",
    errno.EACCES: "give a path you may read and write, or change its permissions",
    errno.EPERM: "give a path you may read and write, or change its permissions",
    errno.ELOOP: "a loop of symbolic links: point the link at a real file or folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EISDIR: "it is a folder: give a file name",
    errno.EEXIST: "something else is there already: remove it or choose another path",
    errno.ENOENT: "check the path (a file or folder may have been removed meanwhile)",
    errno.ENAMETOOLONG: "choose a shorter path",
    errno.EMFILE: "too many open files: raise 'ulimit -n' or use fewer --workers",
}


def shown_path(name: object) -> str:
    """A path as text that any terminal shows: bytes that are not UTF-8 escaped as ``\\xff``."""
    if isinstance(name, bytes):
        return name.decode("utf-8", "backslashreplace")
    text = os.fspath(name) if isinstance(name, os.PathLike) else str(name)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def os_error_line(exc: OSError) -> str | None:
    """``PATH: what the system said; what to do`` for an ``OSError`` that names a file; None
    for one that names none."""
    if exc.filename is None:
        return None
    reason = (exc.strerror or type(exc).__name__).rstrip(".")
    where = shown_path(exc.filename)
    if exc.filename2 is not None:
        where = f"{where} -> {shown_path(exc.filename2)}"
    advice = _OS_ADVICE.get(exc.errno or 0, "check the path and run the command again")
    return f"{where}: {reason[:1].lower()}{reason[1:]}; {advice}"


def link_loop_line(exc: RuntimeError) -> str | None:
    """The line for pathlib's ``RuntimeError("Symlink loop from '...'")`` (Python 3.11 and
    3.12 raise it from ``Path.resolve``); None for any other ``RuntimeError``."""
    text = str(exc)
    if not text.startswith("Symlink loop from "):
        return None
    where = text.removeprefix("Symlink loop from ").strip("'\"")
    return (
        f"{shown_path(where)}: a loop of symbolic links (it leads back to itself); point the "
        "link at a real file or folder, or remove it"
    )


def not_utf8_line(exc: UnicodeError) -> str:
    """The one line for a value that is not UTF-8 text: the value (its bad bytes escaped, as
    ``\\xff``) and the fix."""
    value = getattr(exc, "object", None)
    shown = shown_path(value) if isinstance(value, bytes | str) else str(exc)
    return (
        f"'{shown}' is not valid UTF-8 text (a file or folder name, an id or a value with "
        "bytes of another encoding); rename it, or save the file as UTF-8, and run the command "
        "again"
    )


def worker_text(exc: BaseException) -> str:
    """The text of ``exc`` on one line; for an error that torch re-raised from a DataLoader
    worker ("Caught X in DataLoader worker process N. Original Traceback ... X: <text>"), just
    the original ``<text>``."""
    text = str(exc)
    marker = "Original Traceback"
    if marker in text:
        head = f"{type(exc).__name__}: "
        at = text.rfind(head)
        if at > text.find(marker):
            text = text[at + len(head) :]
    return " ".join(text.split())
