"""The 28 HPA classes, ``Target`` strings, multi-hot arrays and label-CSV loading.

Loading is done with the ``csv`` module (no pandas) so that registering a 75k-row CSV is fast
and every error names the exact row, line and value.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hpatool.errors import DataError, NotFound
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

    @property
    def labelled(self) -> bool:
        return any(t is not None for t in self.targets)


def _find_column(header: list[str], name: str) -> int | None:
    for i, col in enumerate(header):
        if col.strip().lower() == name.lower():
            return i
    return None


def _read_csv_text(path: Path) -> str:
    """The text of a label CSV, or an error that says why it is not one."""
    name = str(path)
    if not path.exists():
        raise NotFound(f"{name}: no such file; give the path of a label CSV with an Id column")
    if path.is_dir():
        raise NotFound(f"{name}: is a folder, not a CSV file; give the path of a label CSV")
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as fh:
            text = fh.read()
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{name}: not UTF-8 text (byte {exc.start}); is this a CSV file? Save it as UTF-8 CSV"
        ) from None
    except OSError as exc:
        raise DataError(f"{name}: cannot read: {exc.strerror}") from None
    if "\x00" in text:
        raise DataError(f"{name}: contains NUL bytes; this is not a CSV text file")
    return text


def load_label_csv(path: str | Path) -> LabelTable:
    """Read a label CSV (``Id`` column, optional ``Target`` column) with exact error messages.

    A CSV without ``Target`` (such as Kaggle's ``sample_submission.csv``) gives unlabelled rows.
    Row numbers count data rows from 1; the line number in the file is given too.
    """
    path = Path(path)
    name = str(path)
    reader = csv.reader(_read_csv_text(path).splitlines(), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{name}: empty file; expected a header line with an Id column") from None
    except csv.Error as exc:
        raise DataError(f"{name}: line 1: malformed CSV header ({exc})") from None
    id_col = _find_column(header, "Id")
    if id_col is None:
        cols = ", ".join(repr(c) for c in header) or "none"
        raise DataError(
            f"{name}: no 'Id' column (columns: {cols}); the first line must be a header "
            "such as 'Id,Target'"
        )
    target_col = _find_column(header, "Target")
    width = len(header)
    ids: list[str] = []
    targets: list[tuple[int, ...] | None] = []
    first_seen: dict[str, int] = {}
    row = 0
    try:
        for fields in reader:
            row += 1
            line = reader.line_num
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
            sample_id = fields[id_col].strip()
            problem = id_problem(sample_id)
            if problem:
                raise DataError(f"{where}: unsafe or invalid Id {sample_id!r}: {problem}")
            if sample_id in first_seen:
                raise DataError(
                    f"{where}: duplicate Id {sample_id!r} (first at row {first_seen[sample_id]}); "
                    "each sample may appear once"
                )
            first_seen[sample_id] = row
            ids.append(sample_id)
            if target_col is None:
                targets.append(None)
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
    return LabelTable(path=path, ids=ids, targets=targets)
