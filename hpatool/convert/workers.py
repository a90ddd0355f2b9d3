"""Convert ONE raw image to an 8-bit greyscale channel PNG (or check that it decodes).

The functions here run in pool processes: they are top-level and picklable, and they never
raise for a bad file or a failed write; they return an :class:`Outcome` whose ``kind`` says
what happened (the caller decides on the kind) and whose ``message`` says it to a person.
Only an :class:`~hpatool.errors.Interrupted` (SIGTERM while converting inline) propagates.
"""

from __future__ import annotations

import contextlib
import enum
import io
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from hpatool.errors import Interrupted
from hpatool.imaging import BadImage, check_decodes, convert_channel, save_png

#: The smallest short side, in pixels, a source image may have (or the output ``size``, if that
#: is smaller): a real HPA field is 2048 or 3072 px. Anything much smaller is a placeholder, an
#: icon or an error pixel from a server, and enlarging it to ``size`` would make a flat image
#: that looks valid; such a file fails (``BAD_IMAGE``) instead. See docs/workflow.md.
MIN_SIDE = 64


class OutcomeKind(enum.Enum):
    """What converting (or checking) one file came to."""

    OK = "ok"
    #: The source is not a usable image (missing, truncated, not an image, any failure while
    #: decoding or converting it): a failure of this one file, the others go on.
    BAD_IMAGE = "bad_image"
    #: The output could not be written (disk full, permissions): fatal for the whole run.
    WRITE_ERROR = "write_error"


@dataclass(frozen=True)
class Outcome:
    """The result of one worker call: a ``kind``, the ``path`` it is about (the source, or the
    output for a ``WRITE_ERROR``) and the ``reason`` (without the path)."""

    kind: OutcomeKind
    path: str = ""
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.kind is OutcomeKind.OK

    @property
    def message(self) -> str:
        """One line for people (and failures.csv): ``"<path>: <reason>"``, or
        ``"cannot write <path>: <reason>"`` for a write error; empty when ok."""
        if self.kind is OutcomeKind.OK:
            return ""
        if self.kind is OutcomeKind.WRITE_ERROR:
            return f"cannot write {self.path}: {self.reason}"
        return f"{self.path}: {self.reason}"


OK = Outcome(OutcomeKind.OK)


def _bad(src: str, exc: Exception) -> Outcome:
    """A failure of ``src`` from any exception: a ``BadImage`` says why itself."""
    if isinstance(exc, BadImage):
        return Outcome(OutcomeKind.BAD_IMAGE, src, exc.reason)
    text = " ".join(str(exc).split()) or type(exc).__name__
    return Outcome(OutcomeKind.BAD_IMAGE, src, f"{type(exc).__name__}: {text}")


def min_side(size: int) -> int:
    """The smallest short side a source for outputs of ``size`` px (0: its own size) may have."""
    return min(MIN_SIDE, size) if size > 0 else MIN_SIDE


def check_not_tiny(dims: tuple[int, int], least: int) -> None:
    """A ``BadImage`` if an image of ``dims`` (width, height) has a side under ``least`` px."""
    if min(dims) < least:
        raise BadImage(
            "",
            f"image is only {dims[0]}x{dims[1]} px, under the {least} px a field has at least "
            "on its short side (a placeholder or error image?)",
        )


def _check_source_size(src: str, size: int) -> None:
    """Read ``src``'s header (cheap: no decoding) and refuse a tiny image; a file that does
    not open is left for the decoder to report."""
    try:
        with Image.open(src) as img:
            dims = img.size
    except Exception:  # the conversion names the problem
        return
    check_not_tiny(dims, min_side(size))


def convert_file(src: str, dst: str, colour: str, size: int, rule: str) -> Outcome:
    """Convert the raw image ``src`` to ``dst``: an 8-bit greyscale PNG of stain ``colour``,
    ``size``×``size`` (0 keeps its size), channel rule ``rule``, written atomically. A source
    under ``min_side(size)`` px on its short side is a ``BAD_IMAGE``."""
    try:
        _check_source_size(src, size)
        arr = convert_channel(Path(src), colour, size, rule)
    except Interrupted:
        raise  # SIGTERM while converting inline (--workers 1): stop, not a failed file
    except Exception as exc:  # any failure of one file is data, not a crash
        return _bad(src, exc)
    try:
        save_png(arr, Path(dst))
    except Interrupted:
        raise
    except OSError as exc:
        return Outcome(OutcomeKind.WRITE_ERROR, dst, str(exc.strerror or exc))
    except Exception as exc:  # any failure of one file is data, not a crash
        return _bad(src, exc)
    return OK


def verify_file(src: str, least: int = 0) -> Outcome:
    """Whether ``src`` decodes as a whole image of at least ``least`` px on its short side
    (``OK``), else why not (``BAD_IMAGE``)."""
    try:
        check_not_tiny(check_decodes(Path(src)), least)
    except Interrupted:
        raise
    except Exception as exc:
        return _bad(src, exc)
    return OK


def place_checked_body(body: bytes, part: str, raw: str, least: int = 0) -> Outcome:
    """Check that a downloaded ``body`` decodes (as ``check_decodes`` does a file), then write
    it to ``part`` and rename that to ``raw``. Runs in a thread: the JPEG decoder releases the
    GIL, and the file is created, written and renamed in one hand-off; a ``.part`` file only
    exists inside this call. ``BAD_IMAGE`` is about the body (``path`` is ``part``), also for
    an image under ``least`` px on its short side."""
    try:
        check_not_tiny(check_decodes(io.BytesIO(body)), least)
    except Interrupted:
        raise
    except Exception as exc:
        return _bad(part, exc)
    try:
        with open(part, "wb") as fh:
            fh.write(body)
        os.replace(part, raw)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(part)
        return Outcome(OutcomeKind.WRITE_ERROR, part, str(exc.strerror or exc))
    return OK
