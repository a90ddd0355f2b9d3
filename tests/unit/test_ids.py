from __future__ import annotations

import csv
from pathlib import Path

import pytest

from hpatool.ids import channel_path, id_kind, id_problem, split_hpav18


def test_every_real_hpav18_id_is_valid_and_recognised(hpav18_csv: Path) -> None:
    with hpav18_csv.open() as fh:
        ids = [row["Id"] for row in csv.DictReader(fh)]
    assert len(ids) == 74606
    kinds = {id_kind(i) for i in ids}
    assert kinds == {"hpav18"}
    assert all(id_problem(i) is None for i in ids)
    # the three forms the README lists
    assert sum("_si" in i for i in ids) == 1574
    assert sum("_cr" in i for i in ids) == 1406


def test_every_real_kaggle_id_is_a_uuid(train_csv: Path) -> None:
    with train_csv.open() as fh:
        ids = [row["Id"] for row in csv.DictReader(fh)]
    assert {id_kind(i) for i in ids} == {"kaggle"}


@pytest.mark.parametrize(
    ("sample_id", "antibody", "rest"),
    [
        ("10580_1610_C1_1", "10580", "1610_C1_1"),
        ("63683_si35_H1_11", "63683", "si35_H1_11"),
        ("11651_1732_F3_13_cr580610dc203b9", "11651", "1732_F3_13_cr580610dc203b9"),
    ],
)
def test_split_hpav18(sample_id: str, antibody: str, rest: str) -> None:
    assert id_kind(sample_id) == "hpav18"
    assert split_hpav18(sample_id) == (antibody, rest)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "..",
        "../x",
        "a/../b",
        "/etc/passwd",
        "a/b",
        "a\\b",
        "a\x00b",
        ".x",
        "~x",
        "C:a",
        "a b",
        "x" * 201,
    ],
)
def test_unsafe_ids_rejected(bad: str) -> None:
    assert id_problem(bad) is not None
    with pytest.raises(ValueError):
        channel_path(Path("/data"), bad, "red")


def test_channel_path() -> None:
    assert channel_path(Path("/data"), "10580_1610_C1_1", "green") == Path(
        "/data/10580_1610_C1_1_green.png"
    )
    with pytest.raises(ValueError, match="unknown colour"):
        channel_path(Path("/data"), "abc", "purple")
