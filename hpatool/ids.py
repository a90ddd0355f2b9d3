"""Sample ids: what they look like, and resolving their files safely under an image root.

Kaggle ids are UUIDs (``00070df0-bbc3-11e8-b2bc-ac1f6b6435d0``). HPAv18 ids are
``<antibody>_<plate>_<well>_<field>`` with plates either numeric or ``si<N>`` and an optional
``_cr<hex>`` suffix (``10580_1610_C1_1``, ``63683_si35_H1_11``,
``11651_1732_F3_13_cr580610dc203b9``).
Any other id made of safe characters is accepted too (folders of one's own images); anything that
could name a file outside the image root is rejected.
"""

from __future__ import annotations

import re
from pathlib import Path

COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow")

KAGGLE_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
HPAV18_ID = re.compile(
    r"^(?P<antibody>[0-9]+)_(?P<rest>(?:si)?[0-9]+_[A-Z][0-9]+_[0-9]+(?:_cr[0-9a-f]+)?)$"
)
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MAX_ID_LENGTH = 200


def id_kind(sample_id: str) -> str:
    """``"kaggle"``, ``"hpav18"`` or ``"other"`` (a safe id of another form)."""
    if KAGGLE_ID.match(sample_id):
        return "kaggle"
    if HPAV18_ID.match(sample_id):
        return "hpav18"
    return "other"


def id_problem(sample_id: str) -> str | None:
    """Why ``sample_id`` is not a usable id, or ``None`` if it is."""
    if not sample_id:
        return "empty Id"
    if "\x00" in sample_id:
        return "contains a NUL byte"
    if "/" in sample_id or "\\" in sample_id:
        return "contains a path separator; ids name files inside the image root"
    if ".." in sample_id:
        return "contains '..'; ids may not point outside the image root"
    if sample_id.startswith(("~", ".")) or re.match(r"^[A-Za-z]:", sample_id):
        return "looks like a path; ids may not be absolute or hidden"
    if len(sample_id) > MAX_ID_LENGTH:
        return f"longer than {MAX_ID_LENGTH} characters"
    if not _SAFE.match(sample_id):
        return "has characters other than letters, digits, '_', '-' and '.'"
    return None


def is_valid_id(sample_id: str) -> bool:
    return id_problem(sample_id) is None


def split_hpav18(sample_id: str) -> tuple[str, str]:
    """``(antibody, rest)``: the id split at its first ``_``, as the HPA image server wants."""
    antibody, sep, rest = sample_id.partition("_")
    if not sep or not antibody or not rest:
        raise ValueError(f"id {sample_id!r} has no '_' to split into antibody and image name")
    return antibody, rest


def channel_path(root: Path, sample_id: str, colour: str, ext: str = "png") -> Path:
    """``<root>/<id>_<colour>.<ext>``, refusing ids that would leave ``root``."""
    problem = id_problem(sample_id)
    if problem:
        raise ValueError(f"unsafe id {sample_id!r}: {problem}")
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; use one of {', '.join(COLOURS)}")
    # id_problem() has ruled out separators, '..' and absolute forms, so this stays in root.
    return root / f"{sample_id}_{colour}.{ext}"
