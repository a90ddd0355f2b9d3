"""Atomic file writes: a temporary name in the target folder, then ``os.replace``."""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import io
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from hpatool.errors import UsageError

#: ``progress(done, total)``: how library code reports progress; the CLI draws the bar.
ProgressFn = Callable[[int, int], None]


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds.

    The temporary name keeps ``path``'s suffix (or ``suffix``) so writers that infer a format
    from the extension still work. A killed process leaves at most a ``.tmp-*`` file, never a
    half-written ``path``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".tmp-{target.name}.",
        suffix=suffix if suffix is not None else target.suffix,
        dir=target.parent,
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file owner-only; give it the mode a plain open() would have.
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@functools.cache
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_output_file(path: str | Path, option: str) -> Path:
    """Refuse, before any work is done, an output path that cannot be written as a file: an
    existing folder, or a path below an existing file."""
    target = Path(path).expanduser()
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
    if type(exc).__name__ in ("UnpicklingError", "KeyError", "EOFError", "ValueError"):
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


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()
