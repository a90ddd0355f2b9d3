from __future__ import annotations

import os
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


# ---- issue 9: a label CSV is parsed as CSV, read once, and only from a regular file


def test_line_break_inside_a_quoted_target_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, 'Id,Target\nok1,3\nabc,"0\n16"\n', "excel.csv")
    with pytest.raises(DataError) as info:
        load_label_csv(path)
    assert str(info.value) == (
        f"{path}: row 2 (line 3): line break inside the Target cell '0\\n16'; an Id or Target "
        "must be on one line: remove the line break and save the CSV again"
    )


def test_line_break_inside_a_quoted_id_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, 'Id,Target\n"a\r\nb",0\n', "crlf.csv")
    with pytest.raises(DataError) as info:
        load_label_csv(path)
    assert str(info.value) == (
        f"{path}: row 1 (line 2): line break inside the Id cell 'a\\r\\nb'; an Id or Target "
        "must be on one line: remove the line break and save the CSV again"
    )


def test_line_break_in_another_column_is_kept_and_line_numbers_stay_right(tmp_path: Path) -> None:
    path = write(tmp_path, 'Id,Note,Target\na1,"two\nlines",1\na2,x,28\n', "note.csv")
    with pytest.raises(DataError, match=r"row 2 \(line 4\): bad Target '28' for Id 'a2'"):
        load_label_csv(path)
    path.write_text('Id,Note,Target\na1,"two\nlines",1\na2,,0 2\n')
    table = load_label_csv(path)
    assert table.ids == ["a1", "a2"] and table.targets == [(1,), (0, 2)]


def test_quoted_comma_in_a_cell_is_one_field(tmp_path: Path) -> None:
    table = load_label_csv(write(tmp_path, 'Id,Note,Target\na1,"x, y",1\n', "comma.csv"))
    assert table.ids == ["a1"] and table.targets == [(1,)]


def test_sha256_is_of_the_bytes_read(tmp_path: Path) -> None:
    import hashlib

    path = write(tmp_path, "Id,Target\na1,1\n", "h.csv")
    assert load_label_csv(path).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.timeout(30)
def test_fifo_is_refused_without_waiting(tmp_path: Path) -> None:
    from hpatool.errors import UsageError

    fifo = tmp_path / "labels.csv"
    os.mkfifo(fifo)
    with pytest.raises(UsageError) as info:
        load_label_csv(fifo)
    assert str(info.value) == (
        f"{fifo}: not a regular file (a pipe, FIFO or device); save the CSV to a file and give "
        "its path with --labels"
    )


@pytest.mark.timeout(30)
def test_pipe_path_is_refused(tmp_path: Path) -> None:
    from hpatool.errors import UsageError

    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"Id,Target\na1,1\n")
        os.close(write_end)
        with pytest.raises(UsageError, match=r"^/dev/fd/\d+: not a regular file"):
            load_label_csv(f"/dev/fd/{read_end}")
    finally:
        os.close(read_end)


def test_columns_are_matched_case_insensitively(tmp_path: Path) -> None:
    table = load_label_csv(write(tmp_path, "ID,target\na1,0 2\n"))
    assert table.ids == ["a1"] and table.targets == [(0, 2)]
    assert (table.id_column, table.target_column, table.label_like) == ("ID", "target", None)


@pytest.mark.parametrize("column", ["Label", "Labels", "classes"])
def test_a_label_like_column_is_named_not_used(tmp_path: Path, column: str) -> None:
    table = load_label_csv(write(tmp_path, f"ID,{column}\na1,0 2\na2,5\n"))
    assert table.targets == [None, None] and table.target_column is None
    assert table.label_like == column
    assert table.label_hint is not None and "rename it to Target" in table.label_hint


def test_a_column_of_class_numbers_is_named(tmp_path: Path) -> None:
    table = load_label_csv(write(tmp_path, "Id,Whatever,Note\na1,0 2,x\na2,5,y\n"))
    assert table.label_like == "Whatever"


def test_predicted_stays_unlabelled(submission_csv: Path) -> None:
    table = load_label_csv(submission_csv)
    assert not table.labelled and table.label_like == "Predicted"
    assert table.predictions_column == "Predicted" and table.label_hint is None  # no warning


def test_no_label_hint_without_such_a_column(tmp_path: Path) -> None:
    table = load_label_csv(write(tmp_path, "Id,Note\na1,hello\n"))
    assert table.label_like is None and table.label_hint is None


@pytest.mark.parametrize("column", ["Image", "ImageId", "Sample"])
def test_missing_id_column_names_the_likely_one(tmp_path: Path, column: str) -> None:
    path = write(tmp_path, f"{column},Target\na1,0\n")
    with pytest.raises(DataError, match=rf"column '{column}' looks like the ids: rename it to Id"):
        load_label_csv(path)


def test_missing_id_column_guessed_from_values(tmp_path: Path) -> None:
    uuid = "00008af0-bad0-11e8-b2b8-ac1f6b6435d0"
    path = write(tmp_path, f"Target,Key\n0,{uuid}\n")
    with pytest.raises(DataError, match=r"column 'Key' looks like the ids"):
        load_label_csv(path)
