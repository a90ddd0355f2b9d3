"""The 28 HPA classes, ``Target`` strings, multi-hot arrays and label-CSV loading.

Loading is done with the ``csv`` module (no pandas) so that registering a 75k-row CSV is fast
and every error names the exact row, line and value.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hpatool._io import path_problem
from hpatool.errors import DataError, NotFound, UsageError
from hpatool.ids import id_problem

if TYPE_CHECKING:
    import numpy as np

CLASS_NAMES: tuple[str, ...] = (
    "Nucleoplasm",
    "Nuclear membrane",
    "Nucleoli",
    "Nucleoli fibrillar center",
    "Nuclear speckles",
    "Nuclear bodies",
    "Endoplasmic reticulum",
    "Golgi apparatus",
    "Peroxisomes",
    "Endosomes",
    "Lysosomes",
    "Intermediate filaments",
    "Actin filaments",
    "Focal adhesion sites",
    "Microtubules",
    "Microtubule ends",
    "Cytokinetic bridge",
    "Mitotic spindle",
    "Microtubule organizing center",
    "Centrosome",
    "Lipid droplets",
    "Plasma membrane",
    "Cell junctions",
    "Mitochondria",
    "Aggresome",
    "Cytosol",
    "Cytoplasmic bodies",
    "Rods & rings",
)
NUM_CLASSES = len(CLASS_NAMES)

_INT = re.compile(r"^[0-9]{1,3}$")


def parse_target(text: str) -> tuple[int, ...]:
    """Parse a space-separated ``Target`` string into sorted class indices.

    The input may be in any order; duplicates, values outside 0..27, non-integers and an
    empty string raise ``ValueError`` with a short reason (callers add file and row).
    """
    tokens = text.split()
    if not tokens:
        raise ValueError("empty Target; a labelled sample needs at least one class index 0..27")
    seen: set[int] = set()
    for tok in tokens:
        if not _INT.match(tok):
            raise ValueError(f"label {tok!r} is not a class index; use integers 0..27")
        value = int(tok)
        if value >= NUM_CLASSES:
            raise ValueError(f"label {tok!r} is out of range; class indices are 0..27")
        if value in seen:
            raise ValueError(f"label {tok!r} appears twice")
        seen.add(value)
    return tuple(sorted(seen))


def format_target(labels: Iterable[int]) -> str:
    """Class indices as Kaggle writes them: ascending, space-separated."""
    values = sorted(set(int(v) for v in labels))
    for v in values:
        if not 0 <= v < NUM_CLASSES:
            raise ValueError(f"class index {v} is out of range 0..27")
    return " ".join(str(v) for v in values)


def to_multihot(targets: Sequence[Sequence[int] | None]) -> np.ndarray:
    """An ``(n, 28)`` uint8 array; unlabelled samples (``None``) are all zero."""
    import numpy as np

    out = np.zeros((len(targets), NUM_CLASSES), dtype=np.uint8)
    for i, t in enumerate(targets):
        if t:
            out[i, list(t)] = 1
    return out


def from_multihot(row: Sequence[int] | np.ndarray) -> tuple[int, ...]:
    return tuple(int(i) for i, v in enumerate(row) if v)


def label_names(labels: Iterable[int]) -> list[str]:
    return [CLASS_NAMES[i] for i in labels]


@dataclass(frozen=True)
class LabelTable:
    """Rows of a label CSV: ids in file order and their targets (``None`` when unlabelled)."""

    path: Path
    ids: list[str]
    targets: list[tuple[int, ...] | None]
    #: sha256 of the bytes that were parsed (the file is read once)
    sha256: str = ""
    #: the header names of the columns used for the ids and the targets (``None``: no targets)
    id_column: str = "Id"
    target_column: str | None = "Target"
    #: without a Target column: a column that looks like labels (not used; see ``label_hint``)
    label_like: str | None = None

    @property
    def label_hint(self) -> str | None:
        """What to do about a column that looks like labels but was not used, if there is one."""
        if self.label_like is None or self.predictions_column is not None:
            return None
        return (
            f"column {self.label_like!r} looks like labels but was not used (the labels column "
            "must be named Target); rename it to Target and register again"
        )

    @property
    def predictions_column(self) -> str | None:
        """A submission's prediction column (``Predicted``), not used as labels; not worth a
        warning: it is what Kaggle's ``sample_submission.csv`` has."""
        if self.label_like is not None and self.label_like.strip().lower() in _PREDICTION_NAMES:
            return self.label_like
        return None

    @property
    def labelled(self) -> bool:
        return any(t is not None for t in self.targets)


#: header names (lower case) of a column that probably holds labels, best first
_LABEL_NAMES = ("label", "labels", "targets", "class", "classes", "predicted", "prediction")
#: header names (lower case) of a submission's prediction column: never used as labels
_PREDICTION_NAMES = frozenset({"predicted", "prediction", "predictions"})
#: header names (lower case) of a column that probably holds the ids
_ID_NAMES = ("image", "imageid", "image_id", "sample", "sampleid", "sample_id", "name", "file")
#: data rows looked at to guess which column holds labels or ids
_SNIFF_ROWS = 50


def _find_column(header: list[str], name: str) -> int | None:
    """The index of column ``name``, matched case-insensitively and ignoring spaces around it
    (``ID``, ``id`` and `` Id `` are the Id column)."""
    for i, col in enumerate(header):
        if col.strip().lower() == name.lower():
            return i
    return None


def _looks_like_labels(values: list[str]) -> bool:
    """Whether every (non-blank) value is a space-separated list of class indices."""
    seen = False
    for value in values:
        if not value.strip():
            continue
        try:
            parse_target(value)
        except ValueError:
            return False
        seen = True
    return seen


def _label_like_column(header: list[str], skip: int, rows: list[list[str]]) -> str | None:
    """A column (other than ``skip``) that looks like labels: by its name, else by its values."""
    by_name = {col.strip().lower(): col for i, col in enumerate(header) if i != skip}
    for name in _LABEL_NAMES:
        if name in by_name:
            return by_name[name]
    for i, col in enumerate(header):
        if i != skip and _looks_like_labels([r[i] for r in rows if len(r) == len(header)]):
            return col
    return None


def _missing_id_column(name: str, header: list[str], reader: Iterable[list[str]]) -> DataError:
    """The error for a CSV without an Id column, naming a column that looks like the ids."""
    cols = ", ".join(repr(c) for c in header) or "none"
    guess = next((c for c in header if c.strip().lower() in _ID_NAMES), None)
    if guess is None:
        rows = [r for _, r in zip(range(_SNIFF_ROWS), reader, strict=False)]
        for i, col in enumerate(header):
            values = [r[i].strip() for r in rows if len(r) == len(header)]
            if values and all(v and not id_problem(v) and not _INT.match(v) for v in values):
                guess = col
                break
    hint = f"; column {guess!r} looks like the ids: rename it to Id" if guess else ""
    return DataError(
        f"{name}: no 'Id' column (columns: {cols}); the first line must be a header "
        f"such as 'Id,Target'{hint}"
    )


def _check_one_line(
    where: str, fields: list[str], header: list[str], cols: list[int | None]
) -> None:
    """Refuse a line break inside an Id or Target cell: joining or splitting it would register
    a different sample or label than the one in the file."""
    for col in cols:
        if col is not None and ("\n" in fields[col] or "\r" in fields[col]):
            raise DataError(
                f"{where}: line break inside the {header[col].strip()} cell "
                f"{fields[col]!r}; an Id or Target must be on one line: remove the line break "
                "and save the CSV again"
            )


def _read_csv_bytes(path: Path) -> bytes:
    """The bytes of a label CSV, read once; only a regular file is read (a FIFO or a
    ``<(command)`` pipe would hang, or be read empty when hashed a second time)."""
    name = str(path)
    if not path.exists():
        raise NotFound(
            f"{name}: {path_problem(path)}; give the path of a label CSV with an Id column"
        )
    if path.is_dir():
        raise NotFound(f"{name}: is a folder, not a CSV file; give the path of a label CSV")
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise DataError(f"{name}: cannot read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(
                f"{name}: not a regular file (a pipe, FIFO or device); save the CSV to a file "
                "and give its path with --labels"
            )
        try:
            return fh.read()
        except OSError as exc:
            raise DataError(f"{name}: cannot read: {exc.strerror}") from None


def _read_csv_text(path: Path) -> tuple[str, str]:
    """The text of a label CSV and the sha256 of the bytes it was decoded from, or an error
    that says why it is not one."""
    name = str(path)
    data = _read_csv_bytes(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{name}: not UTF-8 text (byte {exc.start}); is this a CSV file? Save it as UTF-8 CSV"
        ) from None
    if "\x00" in text:
        raise DataError(f"{name}: contains NUL bytes; this is not a CSV text file")
    return text, hashlib.sha256(data).hexdigest()


def _checked_id(where: str, sample_id: str, first_seen: dict[str, int]) -> str:
    """``sample_id`` if it is a safe id not seen before (``first_seen``: id → row), else the
    error naming the row."""
    problem = id_problem(sample_id)
    if problem:
        raise DataError(f"{where}: unsafe or invalid Id {sample_id!r}: {problem}")
    if sample_id in first_seen:
        raise DataError(
            f"{where}: duplicate Id {sample_id!r} (first at row {first_seen[sample_id]}); "
            "each sample may appear once"
        )
    return sample_id


def load_label_csv(path: str | Path) -> LabelTable:
    """Read a label CSV (``Id`` column, optional ``Target`` column) with exact error messages.

    Column names are matched case-insensitively (``ID``, ``target``). A CSV without ``Target``
    (such as Kaggle's ``sample_submission.csv``) gives unlabelled rows, and ``label_like`` names
    a column that looks like labels, if one does. Row numbers count data rows from 1; the line
    number in the file is given too.
    """
    path = Path(path)
    name = str(path)
    text, sha256 = _read_csv_text(path)
    # Parsed as CSV, not line by line: a quoted cell may hold a line break (Excel's Alt+Enter).
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{name}: empty file; expected a header line with an Id column") from None
    except csv.Error as exc:
        raise DataError(f"{name}: line 1: malformed CSV header ({exc})") from None
    id_col = _find_column(header, "Id")
    if id_col is None:
        try:
            raise _missing_id_column(name, header, reader)
        except csv.Error:
            raise _missing_id_column(name, header, []) from None
    target_col = _find_column(header, "Target")
    width = len(header)
    ids: list[str] = []
    targets: list[tuple[int, ...] | None] = []
    first_seen: dict[str, int] = {}
    sniffed: list[list[str]] = []  # the first rows, to find a column that looks like labels
    row = 0
    try:
        for fields in reader:
            row += 1
            line = reader.line_num - sum(f.count("\n") for f in fields)
            where = f"{name}: row {row} (line {line})"
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                if width == 1:
                    raise DataError(f"{where}: empty Id; every row needs an Id")
                continue  # a blank line
            if len(fields) != width:
                raise DataError(
                    f"{where}: {len(fields)} fields where the header has {width}; "
                    "check for unquoted commas or a missing column"
                )
            _check_one_line(where, fields, header, [id_col, target_col])
            sample_id = _checked_id(where, fields[id_col].strip(), first_seen)
            first_seen[sample_id] = row
            ids.append(sample_id)
            if target_col is None:
                targets.append(None)
                if len(sniffed) < _SNIFF_ROWS:
                    sniffed.append(fields)
                continue
            raw = fields[target_col]
            try:
                targets.append(parse_target(raw))
            except ValueError as exc:
                raise DataError(
                    f"{where}: bad Target {raw!r} for Id {sample_id!r}: {exc}"
                ) from None
    except csv.Error as exc:
        raise DataError(
            f"{name}: row {row + 1} (line {reader.line_num}): malformed CSV ({exc})"
        ) from None
    if not ids:
        raise DataError(f"{name}: no data rows after the header; nothing to register")
    return LabelTable(
        path=path,
        ids=ids,
        targets=targets,
        sha256=sha256,
        id_column=header[id_col].strip(),
        target_column=None if target_col is None else header[target_col].strip(),
        label_like=None if target_col is not None else _label_like_column(header, id_col, sniffed),
    )
