"""Finding and connecting to the registry file: the home folder, read-only detection, the
read-write / read-only / immutable connections, and SQLite errors turned into one-line errors.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from hpatool.errors import DataError, HpaToolError, UsageError

REGISTRY_FILE = "registry.sqlite"
BUSY_TIMEOUT_S = 60.0
#: SQLite's primary result codes that ``Registry`` turns into one-line errors.
_SQLITE_READONLY = 8
_SQLITE_FULL = 13


def _sqlite_error(exc: sqlite3.Error, path: Path) -> HpaToolError | None:
    """The one-line error for a full disk or a read-only registry (by SQLite's result code),
    else ``None``."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    if code == _SQLITE_FULL:
        return HpaToolError(
            f"disk full: registry {path} could not be written, and nothing was changed; free "
            f"some space on the disk of {path.parent} and run the command again"
        )
    if code == _SQLITE_READONLY:
        return HpaToolError(
            f"registry {path} is read-only; this command writes to it: make it writable, or "
            "copy the folder somewhere writable and pass that with --home"
        )
    return None


def resolve_home(home: str | Path | None = None) -> Path:
    """``home`` if given, else ``$HPATOOL_HOME``, else the platform's user data dir.

    An empty ``home`` is refused: it would silently mean the current folder."""
    if home is not None:
        if not str(home).strip():
            raise UsageError(
                "--home is empty; give the registry folder, or leave --home out to use "
                "$HPATOOL_HOME or the user data dir"
            )
        return Path(home).expanduser()
    env = os.environ.get("HPATOOL_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("hpatool", appauthor=False))


def _read_only_reason(home: Path, path: Path) -> str | None:
    """Why the registry at ``path`` can only be read (``None`` if it can be written).

    ``os.access`` says so for a read-only mount (for root too) and for a file or folder
    without write permission; SQLite needs the folder writable for its WAL and lock files."""
    if path.exists():
        if hasattr(os, "statvfs") and os.statvfs(home).f_flag & os.ST_RDONLY:
            return "it is on a read-only file system"
        if not os.access(path, os.W_OK):
            return "the file is read-only"
        if not os.access(home, os.W_OK):
            return f"its folder {home} is read-only"
        return None
    if home.is_dir() and not os.access(home, os.W_OK):
        raise UsageError(
            f"hpatool home {home} is read-only and has no registry yet; "
            "choose a writable folder with --home"
        )
    return None


def registry_text(value: bytes) -> str:
    """A TEXT value as read: UTF-8, with bytes that are not (a hand edit, a folder name of
    another encoding) kept as surrogates, as Python keeps such file names (``os.fsdecode``);
    the path still opens, and printing or storing it again says it is not UTF-8 text."""
    return value.decode("utf-8", "surrogateescape")


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    conn.text_factory = registry_text
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that never writes. A WAL registry whose folder is read-only has no
    ``-shm`` file to coordinate readers through; with no ``-wal`` content either, nothing
    can be writing it, and SQLite reads it as an immutable file."""
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    conn.text_factory = registry_text
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:
        conn.close()
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        raise DataError(
            f"registry {path} is read-only and has changes not yet merged from {wal.name}; "
            "open it once where its folder is writable (any 'hpatool datasets list' does it)"
        )
    conn = sqlite3.connect(uri + "&immutable=1", uri=True, isolation_level=None)
    conn.text_factory = registry_text
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except BaseException:
        conn.close()
        raise
    return conn
