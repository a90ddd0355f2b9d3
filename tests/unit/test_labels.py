from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hpatool.errors import DataError, NotFound
from hpatool.labels import (
    CLASS_NAMES,
    format_target,
    from_multihot,
    load_label_csv,
    parse_target,
    to_multihot,
)


def test_class_names_in_competition_order() -> None:
    assert len(CLASS_NAMES) == 28
    assert CLASS_NAMES[0] == "Nucleoplasm"
    assert CLASS_NAMES[18] == "Microtubule organizing center"
    assert CLASS_NAMES[25] == "Cytosol"
    assert CLASS_NAMES[27] == "Rods & rings"


def test_parse_target_sorts_unsorted_input() -> None:
    assert parse_target("16 0") == (0, 16)
    assert parse_target(" 7 1  2 0 ") == (0, 1, 2, 7)
    assert parse_target("27") == (27,)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("28", "out of range"),
        ("x", "not a class index"),
        ("1 1", "appears twice"),
        ("", "empty Target"),
        ("-1", "not a class index"),
        ("1.0", "not a class index"),
        ("1;2", "not a class index"),
    ],
)
def test_parse_target_rejects(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_target(text)


def test_format_target_roundtrip() -> None:
    assert format_target([16, 0]) == "0 16"
    assert format_target(parse_target("25 0 21")) == "0 21 25"
    with pytest.raises(ValueError):
        format_target([28])


def test_multihot_roundtrip() -> None:
    arr = to_multihot([(0, 16), None, (27,)])
    assert arr.shape == (3, 28)
    assert arr.dtype == np.uint8
    assert arr[1].sum() == 0
    assert from_multihot(arr[0]) == (0, 16)
    assert from_multihot(arr[2]) == (27,)


def test_load_real_train_csv(train_csv: Path) -> None:
    table = load_label_csv(train_csv)
    assert len(table.ids) == 31072
    assert table.ids[0] == "00070df0-bbc3-11e8-b2bc-ac1f6b6435d0"
    assert table.targets[0] == (0, 16)  # "16 0" in the file
    counts = np.bincount([c for t in table.targets if t for c in t], minlength=28)
    assert counts[27] == 11 and counts[0] == 12885


def test_load_real_submission_is_unlabelled(submission_csv: Path) -> None:
    table = load_label_csv(submission_csv)
    assert len(table.ids) == 11702
    assert not table.labelled


def test_load_real_hpav18(hpav18_csv: Path) -> None:
    table = load_label_csv(hpav18_csv)
    assert len(table.ids) == 74606
    assert all(t for t in table.targets)


def write(tmp_path: Path, text: str, name: str = "labels.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_errors_name_file_row_and_value(tmp_path: Path) -> None:
    path = write(tmp_path, "Id,Target\na1,0\na2,28 1\n")
    with pytest.raises(DataError) as exc:
        load_label_csv(path)
    msg = str(exc.value)
    assert str(path) in msg and "row 2 (line 3)" in msg and "'28 1'" in msg and "0..27" in msg


def test_missing_id_column(tmp_path: Path) -> None:
    path = write(tmp_path, "Name,Target\na1,0\n")
    with pytest.raises(DataError, match=r"no 'Id' column \(columns: 'Name', 'Target'\)"):
        load_label_csv(path)


def test_duplicate_id(tmp_path: Path) -> None:
    path = write(tmp_path, "Id,Target\na1,0\na2,1\na1,2\n")
    with pytest.raises(DataError, match=r"row 3 \(line 4\): duplicate Id 'a1' \(first at row 1\)"):
        load_label_csv(path)


@pytest.mark.parametrize("bad_id", ["../etc", "a/b", "/abs", "..", ".hidden", "a\\b", "C:x"])
def test_unsafe_id(tmp_path: Path, bad_id: str) -> None:
    path = write(tmp_path, f"Id,Target\nok1,0\n{bad_id},1\n")
    with pytest.raises(DataError, match=r"row 2 \(line 3\): unsafe or invalid Id"):
        load_label_csv(path)


def test_nul_in_file(tmp_path: Path) -> None:
    path = tmp_path / "nul.csv"
    path.write_bytes(b"Id,Target\na\x001,0\n")
    with pytest.raises(DataError, match="NUL"):
        load_label_csv(path)


def test_malformed_rows(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"row 1 \(line 2\): 3 fields where the header has 2"):
        load_label_csv(write(tmp_path, "Id,Target\na,1,2\n"))
    with pytest.raises(DataError, match="malformed CSV"):
        load_label_csv(write(tmp_path, 'Id,Target\n"a,1\nb,2\n', "q.csv"))
    with pytest.raises(DataError, match="no data rows"):
        load_label_csv(write(tmp_path, "Id,Target\n", "h.csv"))
    with pytest.raises(DataError, match="empty file"):
        load_label_csv(write(tmp_path, "", "e.csv"))


def test_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "img.csv"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataError):
        load_label_csv(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no such file"):
        load_label_csv(tmp_path / "nope.csv")


def test_bom_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffId,Target\r\na1,3 1\r\n\r\na2,0\r\n".encode())
    table = load_label_csv(path)
    assert table.ids == ["a1", "a2"]
    assert table.targets == [(1, 3), (0,)]
