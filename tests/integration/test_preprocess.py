"""``hpatool preprocess``: images on disk -> 8-bit greyscale channel PNGs, idempotent, lineage."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpatool.ids import COLOURS
from hpatool.preprocess.registration import carried_folds_line
from hpatool.registry import Registry
from tests.integration.hpa_server import HpaServer, fluorescence, stain_rgb
from tests.support import Invoke, register


def make_sources(src: Path) -> dict[str, Path]:
    """One sample per kind of source, four stains each, plus noise the scan must skip."""
    src.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    for k, colour in enumerate(COLOURS):
        grey = fluorescence(k, 128)
        files[f"jpg_{colour}"] = src / f"10580_1610_C1_1_{colour}.jpg"
        Image.fromarray(stain_rgb(grey, colour)).save(files[f"jpg_{colour}"], quality=92)
        files[f"png8_{colour}"] = src / f"kaggle-a_{colour}.png"
        Image.fromarray(grey).save(files[f"png8_{colour}"])
        files[f"png16_{colour}"] = src / f"deep_{colour}.png"
        Image.fromarray(grey.astype(np.uint16) * 40).save(files[f"png16_{colour}"])
        files[f"rgbpng_{colour}"] = src / f"rgb_{colour}.png"
        Image.fromarray(stain_rgb(grey, colour)).save(files[f"rgbpng_{colour}"])
        files[f"tif_{colour}"] = src / f"tiff_{colour}.tif"
        Image.fromarray(grey.astype(np.uint16) * 200).save(files[f"tif_{colour}"])
    (src / "notes.txt").write_text("not an image")
    (src / "failures.csv").write_text("Id\n")
    (src / ".hidden_red.png").write_bytes(b"x")
    return files


def test_converts_every_kind_of_source(cli: Invoke, tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    make_sources(src)
    result = cli("preprocess", src, "--out", out, "--size", "64", "--workers", "2")
    assert result.exit_code == 0, result.output
    assert "20 converted" in result.stdout
    names = sorted(p.name for p in out.glob("*.png"))
    assert len(names) == 20
    for name in names:
        with Image.open(out / name) as img:
            assert img.mode == "L" and img.size == (64, 64), name
            arr = np.asarray(img)
        assert arr.std() > 5, name  # not black, not flat
    # the stain rule: a yellow JPEG's red band; the RGB PNG the same way
    for stem in ("10580_1610_C1_1", "rgb", "kaggle-a"):
        ref = np.asarray(Image.open(out / "kaggle-a_yellow.png"), dtype=int)
        got = np.asarray(Image.open(out / f"{stem}_yellow.png"), dtype=int)
        assert np.abs(got - ref).mean() < 2.0, stem
    # 16-bit sources are stretched over their range: they look like the 8-bit source
    for stem in ("deep", "tiff"):
        got = np.asarray(Image.open(out / f"{stem}_green.png"), dtype=int)
        ref = np.asarray(Image.open(out / "kaggle-a_green.png"), dtype=int)
        assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.99
    assert not (out / "failures.csv").exists()


def test_real_16_bit_field(portal_field: Path, cli: Invoke, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / portal_field.name).symlink_to(portal_field)
    result = cli("preprocess", src, "--out", tmp_path / "out", "--no-register")
    assert result.exit_code == 0, result.output
    # registered, one channel is no whole sample: said in a warning line (issue 10)
    registered = cli("preprocess", src, "--out", tmp_path / "out")
    assert registered.exit_code == 0 and "warning: 1 of 1 samples" in registered.stderr
    arr = np.asarray(Image.open(tmp_path / "out" / "1000_A12_2_green.png"))
    assert arr.shape == (512, 512) and arr.dtype == np.uint8
    assert arr.std() > 10, "black"
    assert (arr == 255).mean() < 0.05, "saturated"


def test_idempotent_and_reconverts_newer_sources(cli: Invoke, tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    files = make_sources(src)
    assert cli("preprocess", src, "--out", out, "--size", "32").exit_code == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    again = cli("preprocess", src, "--out", out, "--size", "32", "--json")
    assert again.exit_code == 0
    assert '"converted": 0' in again.stdout and '"skipped": 20' in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")} == stamps
    newer = files["jpg_red"]
    later = os.stat(out / "10580_1610_C1_1_red.png").st_mtime + 5
    os.utime(newer, (later, later))
    third = cli("preprocess", src, "--out", out, "--size", "32", "--json")
    assert '"converted": 1' in third.stdout
    # other settings into the same folder are refused, with the fix
    clash = cli("preprocess", src, "--out", out, "--size", "64")
    assert clash.exit_code == 2
    assert "--size 32" in clash.stderr and "another --out" in clash.stderr
    clash = cli("preprocess", src, "--out", out, "--size", "32", "--channel-rule", "luma")
    assert clash.exit_code == 2


def test_bad_files_are_reported_and_the_rest_converted(cli: Invoke, tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    make_sources(src)
    good = (src / "10580_1610_C1_1_red.jpg").read_bytes()
    (src / "broken_red.jpg").write_bytes(good[: len(good) // 3])
    (src / "broken_green.jpg").write_bytes(b"<html>not found</html>")
    (src / "twice_blue.jpg").write_bytes(good)
    (src / "twice_blue.png").write_bytes(good)
    result = cli("preprocess", src, "--out", out, "--size", "32", "--workers", "2")
    assert result.exit_code == 1
    assert "3 files failed" in result.stdout
    with open(out / "failures.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["Id"], r["colour"]) for r in rows] == [
        ("broken", "red"),
        ("broken", "green"),
        ("twice", "blue"),
    ]
    assert "cannot decode" in rows[0]["error"] and "keep one" in rows[2]["error"]
    assert len(list(out.glob("*.png"))) == 20
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]


def test_usage_errors(cli: Invoke, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_sources(src)
    cases = [
        (["preprocess", tmp_path / "nope", "--out", tmp_path / "o"], 2, "no such folder"),
        (["preprocess", src, "--out", src], 2, "source folder"),
        (["preprocess", src, "--out", tmp_path / "o", "--size", "-3"], 2, "--size"),
        (["preprocess", src, "--out", tmp_path / "o", "--channel-rule", "max"], 2, "rule"),
        (["preprocess", src, "--out", tmp_path / "o", "--workers", "0"], 2, "--workers"),
        (
            ["preprocess", src, "--out", tmp_path / "o", "--labels", tmp_path / "l.csv"],
            2,
            "l.csv: no such file",
        ),
        (["preprocess", src, "--out", tmp_path / "o", "--name", "x", "--no-register"], 2, "--name"),
        (["preprocess", src, "--out", tmp_path / "o", "--name", "a b"], 2, "dataset name"),
    ]
    for args, code, fragment in cases:
        result = cli(*args)
        assert result.exit_code == code, (args, result.output)
        assert result.stderr.startswith("error: ") and fragment in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1
    assert not (tmp_path / "o").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli("preprocess", empty, "--out", tmp_path / "o2")
    assert result.exit_code == 1 and "nothing to convert" in result.stderr


def test_registers_output_with_lineage(cli: Invoke, tmp_path: Path, home: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    make_sources(src)
    labels = tmp_path / "labels.csv"
    labels.write_text("Id,Target\n10580_1610_C1_1,0\nkaggle-a,2 5\ndeep,1\n")
    assert cli("datasets", "add", "raw-stuff", "--labels", labels, "--root", src).exit_code == 0
    result = cli("preprocess", src, "--out", out, "--size", "32", "--name", "small")
    assert result.exit_code == 0, result.output
    assert "derived from raw-stuff" in result.stdout
    with Registry.open(home) as reg:
        record = reg.dataset("small")
        samples = reg.samples("small")
    assert record.parent == "raw-stuff" and record.kind == "train"
    assert record.root == out.resolve()
    assert [(s.id, s.target, s.status) for s in samples] == [
        ("10580_1610_C1_1", (0,), "done"),
        ("kaggle-a", (2, 5), "done"),
        ("deep", (1,), "done"),
    ]
    assert record.provenance["source"] == str(src.resolve())
    assert record.provenance["size"] == 32
    show = cli("datasets", "show", "small")
    assert "raw-stuff" in show.stdout and "channel_rule" in show.stdout
    # rerun: idempotent, the dataset is updated, not duplicated
    again = cli("preprocess", src, "--out", out, "--size", "32", "--name", "small")
    assert again.exit_code == 0, again.output
    # the name of another dataset is not taken over
    clash = cli(
        "preprocess", src, "--out", tmp_path / "out2", "--size", "32", "--name", "raw-stuff"
    )
    assert clash.exit_code == 2 and "already exists" in clash.stderr
    # without a registered source: the ids found, unlabelled, or --labels
    other = cli(
        "preprocess",
        out,
        "--out",
        tmp_path / "out3",
        "--size",
        "16",
        "--name",
        "tiny",
        "--labels",
        labels,
    )
    assert other.exit_code == 0, other.output
    with Registry.open(home) as reg:
        tiny = reg.dataset("tiny")
    assert tiny.parent == "small" and tiny.samples == 3 and tiny.labels_sha256


def test_registers_under_a_default_name_without_name(
    cli: Invoke, tmp_path: Path, home: Path
) -> None:
    src = tmp_path / "src"
    make_sources(src)
    # A folder that is no dataset's: the output folder's name.
    assert cli("preprocess", src, "--out", tmp_path / "small imgs", "--size", "16").exit_code == 0
    # A registered dataset's folder: <source>-<size>; the same conversion again reuses it.
    labels = tmp_path / "labels.csv"
    labels.write_text("Id,Target\n10580_1610_C1_1,0\nkaggle-a,2 5\ndeep,1\n")
    assert cli("datasets", "add", "raw", "--labels", labels, "--root", src).exit_code == 0
    for _ in range(2):
        result = cli("preprocess", src, "--out", tmp_path / "a", "--size", "24")
        assert result.exit_code == 0, result.output
    # Another folder of the same name: a free name, never another dataset's.
    result = cli("preprocess", src, "--out", tmp_path / "b" / "a", "--size", "24")
    assert result.exit_code == 0, result.output
    assert cli("preprocess", src, "--out", tmp_path / "c", "--no-register").exit_code == 0
    with Registry.open(home) as reg:
        records = {r.name: r for r in reg.datasets()}
    assert set(records) == {"raw", "small-imgs", "raw-24", "raw-24-2"}
    assert records["raw-24"].parent == "raw" and records["raw-24"].samples == 3
    assert records["raw-24"].root == (tmp_path / "a").resolve()
    assert records["raw-24-2"].root == (tmp_path / "b" / "a").resolve()
    assert records["small-imgs"].parent is None and records["small-imgs"].samples == 5


def test_preprocess_raw_download_keeps_lineage(cli: Invoke, tmp_path: Path, home: Path) -> None:
    ids = ["10580_1610_C1_1", "63683_si35_H1_11"]
    labels = tmp_path / "labels.csv"
    labels.write_text("Id,Target\n" + "".join(f"{i},7\n" for i in ids))
    out = tmp_path / "hpa"
    with HpaServer(image_size=96) as server:
        result = cli(
            "download-external",
            "--labels",
            labels,
            "--out",
            out,
            "--base-url",
            server.base_url,
            "--size",
            "0",
        )
    assert result.exit_code == 0, result.output
    converted = cli(
        "preprocess",
        out / "raw",
        "--out",
        tmp_path / "hpa-48",
        "--size",
        "48",
        "--name",
        "hpa-48",
        "--workers",
        "1",
    )
    assert converted.exit_code == 0, converted.output
    with Registry.open(home) as reg:
        record = reg.dataset("hpa-48")
        assert [s.status for s in reg.samples("hpa-48")] == ["done", "done"]
    assert record.parent == "hpa-v18" and record.kind == "external"
    assert record.labels_sha256 == reg_sha(home, "hpa-v18")
    verify = cli("datasets", "verify", "hpa-48", "--size", "48")
    assert verify.exit_code == 0, verify.output


def reg_sha(home: Path, name: str) -> str | None:
    with Registry.open(home) as reg:
        return reg.dataset(name).labels_sha256


@pytest.mark.parametrize("workers", ["1", "2"])
def test_workers_give_identical_output(cli: Invoke, tmp_path: Path, workers: str) -> None:
    src = tmp_path / "src"
    make_sources(src)
    out = tmp_path / f"out{workers}"
    assert cli("preprocess", src, "--out", out, "--size", "40", "--workers", workers).exit_code == 0
    ref = tmp_path / "ref"
    assert cli("preprocess", src, "--out", ref, "--size", "40", "--workers", "1").exit_code == 0
    for p in ref.glob("*.png"):
        assert np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(out / p.name)))


def test_resized_copy_of_a_split_dataset_keeps_its_folds(
    synth_data: Callable[..., Path], cli: Invoke, tmp_path: Path, home: Path
) -> None:
    data = synth_data(40, 48)
    register(cli, data, name="syn", folds=4)
    out = tmp_path / "syn-24"
    result = cli("preprocess", data, "--out", out, "--size", "24")
    assert result.exit_code == 0, result.output
    with Registry.open(home) as reg:
        parent_folds, parent_split = reg.folds("syn"), reg.split_info("syn")
        copy = reg.dataset("syn-24")
        assert reg.folds("syn-24") == parent_folds and len(parent_folds) == 40
        split = reg.split_info("syn-24")
    assert split is not None and parent_split is not None
    assert (split["folds"], split["seed"]) == (parent_split["folds"], parent_split["seed"])
    assert copy.provenance["folds_from"] == "syn" and copy.provenance["folds_carried"] == 40
    assert carried_folds_line(copy) == (
        "Folds of syn carried over: 40 samples keep their fold (same ids, same folds), so runs "
        "on syn-24 validate on the same samples as on syn"
    )
    listed = cli("datasets", "show", "syn-24", "--samples", "--json")
    assert {r["id"]: r["fold"] for r in json.loads(listed.stdout)} == parent_folds

    # the source is split again: a rerun brings the carried folds up to date
    assert cli("split", "syn", "--folds", "5", "--seed", "3", "--force").exit_code == 0
    assert cli("preprocess", data, "--out", out, "--size", "24").exit_code == 0
    with Registry.open(home) as reg:
        assert reg.folds("syn-24") == reg.folds("syn")
        assert reg.split_info("syn-24")["folds"] == 5  # type: ignore[index]
    # a split of the copy's own is never overwritten by a rerun
    assert cli("split", "syn-24", "--folds", "3", "--force").exit_code == 0
    with Registry.open(home) as reg:
        own = reg.folds("syn-24")
    assert cli("preprocess", data, "--out", out, "--size", "24").exit_code == 0
    with Registry.open(home) as reg:
        assert reg.folds("syn-24") == own and reg.split_info("syn-24")["folds"] == 3  # type: ignore[index]
        assert "folds_from" not in reg.dataset("syn-24").provenance
