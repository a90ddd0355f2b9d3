"""Atomic file writes: a temporary name in the target folder, then ``os.replace``."""

from __future__ import annotations

import contextlib
import csv
import errno
import functools
import io
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from hpatool.errors import UsageError, WorkFailed

#: ``progress(done, total)``: how library code reports progress; the CLI draws the bar.
ProgressFn = Callable[[int, int], None]


#: The errors that mean the disk (or the user's quota on it) has no room left.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(WorkFailed, OSError):
    """A file could not be written because the disk is full; the file at ``path`` is as it was.

    Still an ``OSError`` (``errno`` ENOSPC or EDQUOT, ``strerror``), so code that handles write
    errors as ``OSError`` keeps doing so; the CLI prints its one-line message (exit 1).
    """

    def __init__(
        self, path: str | Path, reason: str, code: int = errno.ENOSPC, advice: str = ""
    ) -> None:
        self.path = Path(path)
        self.reason = reason
        self.advice = advice or "run the command again"
        super().__init__(
            f"disk full: could not write {self.path} ({reason}); nothing was replaced: free "
            f"some space, then {self.advice}"
        )
        self.errno, self.strerror, self.filename = code, reason, str(self.path)

    def __str__(self) -> str:  # the message, not OSError's "[Errno 28] ..."
        return str(self.args[0])

    def with_advice(self, advice: str) -> DiskFull:
        """The same error, saying ``advice`` ("continue the run with ...") as the way on."""
        code = self.errno if self.errno is not None else errno.ENOSPC
        return DiskFull(self.path, self.reason, code, advice)


def disk_full_cause(exc: BaseException) -> OSError | None:
    """The disk-full ``OSError`` that ``exc`` is or was raised from (its ``__cause__`` /
    ``__context__`` chain: torch reports a failed write of a file object as a ``RuntimeError``
    raised while handling the ``OSError``), else ``None``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            return current
        current = current.__cause__ or current.__context__
    return None


#: Below this many free bytes, a write that failed in native code (torch's or ONNX's own file
#: writer, which reports no errno) is taken for a full disk.
NEARLY_FULL_BYTES = 64 * 2**20


def _raise_if_disk_full(exc: BaseException, target: Path) -> None:
    if isinstance(exc, DiskFull):
        return
    cause = disk_full_cause(exc)
    if cause is not None:
        code = cause.errno if cause.errno is not None else errno.ENOSPC
        raise DiskFull(target, cause.strerror or os.strerror(code), code) from None
    text = " ".join(str(exc).split())
    if isinstance(exc, RuntimeError) and ("write failed" in text or "failed writing" in text):
        # torch.jit.save / torch.onnx.export write through C++: no OSError to look at
        try:
            free: int | None = shutil.disk_usage(target.parent).free
        except OSError:
            free = None
        if free is not None and free < NEARLY_FULL_BYTES:
            raise DiskFull(target, f"{free // 2**20} MiB left on its disk") from None
        raise WorkFailed(
            f"could not write {target} ({_first_sentence(text)}); check the folder's free space "
            "and permissions, and run the command again"
        ) from None


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds.

    The temporary name keeps ``path``'s suffix (or ``suffix``) so writers that infer a format
    from the extension still work. A killed process leaves at most a ``.tmp-*`` file, never a
    half-written ``path``. A full disk, wherever in the block it shows, is a ``DiskFull``
    naming ``path``.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".tmp-{_printable(target.name)}.",
            suffix=suffix if suffix is not None else target.suffix,
            dir=target.parent,
        )
    except OSError as exc:
        _raise_if_disk_full(exc, target)
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file owner-only; give it the mode a plain open() would have.
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        _raise_if_disk_full(exc, target)
        raise


def _printable(name: str) -> str:
    """``name`` if it is UTF-8 text, else ``out``: a temporary name that libraries taking
    ``str`` paths (TorchScript's writer) can encode whatever the final name holds."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "out"
    return name


@functools.cache
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def is_link_loop(path: Path) -> bool:
    """Whether ``path`` is a symbolic link that leads, through other links, back to itself."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def path_problem(path: str | Path, want: str = "file") -> str:
    """Why ``path`` is not the existing ``want`` (``"file"`` or ``"folder"``) a command reads:
    the words that follow the path in its error line ("no such file", "is a folder, not a
    file", "is a loop of symbolic links", ...)."""
    p = Path(path)
    if is_link_loop(p):
        return "is a loop of symbolic links (it leads back to itself); point it at a real " + want
    if p.is_symlink() and not p.exists():
        return f"is a broken symbolic link (to {os.readlink(p)}, which is not there)"
    if not p.exists():
        return f"no such {want}"
    if want == "file" and p.is_dir():
        return "is a folder, not a file"
    if want == "folder" and not p.is_dir():
        return "is a file, not a folder"
    if want == "file" and not p.is_file():
        return "is not a regular file (a pipe, socket or device)"
    return f"cannot be read as a {want}"


def not_utf8_where(path: Path) -> str:
    """Where a text file stops being UTF-8: ``line N: byte 0xe9 is not UTF-8 text`` (for the
    error line of a reader that met a ``UnicodeDecodeError``)."""
    try:
        data = path.read_bytes()
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return f"line {line}: byte 0x{data[exc.start]:02x} is not UTF-8 text"
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return "not UTF-8 text"


def check_output_file(path: str | Path, option: str) -> Path:
    """Refuse, before any work is done, an output path that cannot be written as a file: an
    existing folder, a path below an existing file, a loop of symbolic links."""
    target = Path(path).expanduser()
    if is_link_loop(target):
        raise UsageError(f"{option} {target} {path_problem(target)}")
    if target.is_dir():
        raise UsageError(
            f"{option} {target} is a folder; give a file name such as {target}/out.csv"
        )
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{option} {target}: {parent} is a file, not a folder")
            break
    return target


#: What ``--plot`` / ``--out`` pictures may be: matplotlib writes these without extra packages.
FIGURE_FORMATS = ("png", "pdf", "svg", "jpg", "jpeg")


def figure_file(path: str | Path, option: str) -> Path:
    """Check, before any work, a path a figure will be written to: a writable file name whose
    extension is one of ``FIGURE_FORMATS``."""
    target = check_output_file(path, option)
    fmt = target.suffix.lstrip(".").lower()
    if fmt not in FIGURE_FORMATS:
        raise UsageError(
            f"{option} {target}: unknown picture format {target.suffix or '(no extension)'!r}; "
            f"end the name in {', '.join('.' + f for f in FIGURE_FORMATS)}"
        )
    return target


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure atomically, in the format its extension names (PNG if none)."""
    target = Path(path)
    fmt = target.suffix.lstrip(".").lower() or "png"
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi)
    return target


def describe_load_error(exc: BaseException) -> str:
    """A short reason why ``torch.load(..., weights_only=True)`` refused a file, without
    torch's advice to retry with ``weights_only=False`` (unsafe for a file of unknown origin)."""
    text = " ".join(str(exc).split())
    if "WeightsUnpickler error:" in text:
        reason = _first_sentence(text.split("WeightsUnpickler error:", 1)[1])
        return f"not a plain tensor file ({reason})"
    foreign = ("UnpicklingError", "KeyError", "EOFError", "ValueError", "IndexError")
    if "PytorchStreamReader failed" in text:
        return "a truncated or damaged PyTorch file (its zip archive cannot be read)"
    if type(exc).__name__ in foreign or "magic number" in text:
        return "not a PyTorch file (or a truncated one)"
    return f"{type(exc).__name__}: {_first_sentence(text)}"


def _first_sentence(text: str, most: int = 160) -> str:
    sentence = text.split("Check the documentation", 1)[0].strip().split(". ", 1)[0].rstrip(".")
    return sentence if len(sentence) <= most else sentence[: most - 3] + "..."


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """``header`` and ``rows`` as CSV text (``\n`` line ends, quoting only where needed).
    Floats are written with ``repr`` precision, so nothing is rounded away."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """The one CSV writer: ``header`` and ``rows`` written atomically to ``path``."""
    write_text_atomic(path, csv_text(header, rows))
    return Path(path)


def sha256_of(path: Path) -> str:
    """The sha256 of a file's bytes, as hex (read in 1 MiB blocks)."""
    import hashlib

    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
