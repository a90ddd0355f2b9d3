"""Datasets and their folders: ``datasets set-root`` (attach or move a dataset's images, keeping
what is still valid) and ``preprocess`` of the HPA server's ``<antibody>/`` layout, ``--kind``."""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from hpatool.ids import COLOURS
from hpatool.registry import Registry
from tests.support import SIZE, Invoke, one_line_error


def _ids(data: Path) -> list[str]:
    return [line.split(",")[0] for line in (data / "labels.csv").read_text().splitlines()[1:]]


def _add(cli: Invoke, name: str, data: Path, *, root: bool = False) -> None:
    """Register ``data/labels.csv`` as ``name`` (with ``root``: and ``data`` as its folder)."""
    args = ["--root", data] if root else []
    result = cli("datasets", "add", name, "--labels", data / "labels.csv", *args)
    assert result.exit_code == 0, result.output


def _show(cli: Invoke, name: str) -> dict:
    result = cli("datasets", "show", name, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _set_root(cli: Invoke, name: str, folder: Path) -> dict:
    result = cli("datasets", "set-root", name, folder, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# ---------------------------------------------------------------------------- set-root


def test_set_root_attaches_images_to_a_labels_only_dataset(
    synth_data: Callable[..., Path], cli: Invoke
) -> None:
    data = synth_data(8)
    added = cli("datasets", "add", "syn", "--labels", data / "labels.csv")
    assert added.exit_code == 0, added.output
    # the hints name the command that attaches the images
    assert "datasets set-root syn DIR" in one_line_error(cli("datasets", "verify", "syn"))
    assert "datasets set-root syn DIR" in one_line_error(cli("dedup", "syn"), code=1)
    result = cli("datasets", "set-root", "syn", data)
    assert result.exit_code == 0, result.output
    assert "was: none (labels only)" in result.stdout
    assert "8 of 8 samples have their four images there" in result.stdout
    assert result.stderr == ""
    doc = _show(cli, "syn")
    assert doc["root"] == str(data.resolve())
    assert doc["samples"] == 8 and doc["labelled"] == 8
    verified = cli("datasets", "verify", "syn", "--json")
    assert verified.exit_code == 0, verified.output
    report = json.loads(verified.stdout)
    assert report["checked"] == 8 and report["ok"] == 8
    assert report["sizes"] == {f"{SIZE}x{SIZE}": 8}


def test_set_root_keeps_samples_labels_and_folds(
    synth_data: Callable[..., Path], cli: Invoke, tmp_path: Path
) -> None:
    data = synth_data(12)
    _add(cli, "syn", data)
    split = cli("split", "syn", "--folds", "3")
    assert split.exit_code == 0, split.output
    before = cli("datasets", "export", "syn").stdout
    doc = _set_root(cli, "syn", data)
    assert doc["folds"] == 3 and doc["with_images"] == 12 and doc["previous_root"] is None
    assert cli("datasets", "export", "syn").stdout == before  # ids, labels, folds
    shown = _show(cli, "syn")
    assert shown["folds"]["n"] == 3 and sum(shown["folds"]["sizes"]) == 12
    # moved again (a copy): the same
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)
    text = cli("datasets", "set-root", "syn", moved)
    assert text.exit_code == 0, text.output
    assert "its 3 folds kept" in text.stdout and f"was: {data.resolve()}" in text.stdout
    assert cli("datasets", "export", "syn").stdout == before


def test_set_root_keeps_the_hashes_of_unchanged_files_only(
    synth_data: Callable[..., Path], cli: Invoke, home: Path, tmp_path: Path
) -> None:
    first = tmp_path / "first"
    shutil.copytree(synth_data(8), first)
    ids = _ids(first)
    for name in ("syn", "twin"):  # two datasets over one folder: every sample has a duplicate
        _add(cli, name, first, root=True)
    dedup = cli("dedup", "syn", "twin")
    assert dedup.exit_code == 0, dedup.output
    assert _show(cli, "twin")["duplicates"]["samples_with_duplicates"] == 8
    # moved with copy2 (sizes and modification times kept): every hash is still valid
    moved = tmp_path / "moved"
    shutil.copytree(first, moved)
    doc = _set_root(cli, "twin", moved)
    assert doc["hashes"] == {"kept": 8, "dropped": 0}
    assert doc["root"] == str(moved.resolve()) and doc["previous_root"] == str(first.resolve())
    again = cli("dedup", "syn", "twin")
    assert "Hashed 0 samples (16 already hashed)" in again.stdout, again.output
    # a folder where one sample's images differ: its hash and its cluster place are dropped
    changed = tmp_path / "changed"
    shutil.copytree(moved, changed)
    for colour in ("green", "blue"):
        target = changed / f"{ids[0]}_{colour}.png"
        shutil.copyfile(changed / f"{ids[1]}_{colour}.png", target)
        os.utime(target, ns=(1, 1))
    (changed / f"{ids[2]}_green.png").unlink()  # and one sample's image is gone
    result = cli("datasets", "set-root", "twin", changed)
    assert result.exit_code == 0, result.output
    flat = " ".join(result.stdout.split())
    assert "Dedup hashes: 6 kept (same files), 2 dropped" in flat
    assert "run 'hpatool dedup syn twin' again" in flat
    assert "7 of 8 samples have their four images there" in flat
    with Registry.open(home) as reg:
        assert set(reg.stored_hashes("twin")) == set(ids) - {ids[0], ids[2]}
        assert set(reg.stored_hashes("syn")) == set(ids)  # the other dataset: untouched
        assert set(reg.cluster_ids("twin")) == set(ids) - {ids[0], ids[2]}
    assert _show(cli, "twin")["duplicates"]["samples_with_duplicates"] == 6
    # dedup hashes only the changed sample again (the one without all its images is left out)
    rerun = cli("dedup", "syn", "twin")
    assert rerun.exit_code == 0, rerun.output
    assert "Hashed 1 samples (14 already hashed)" in rerun.stdout, rerun.stdout


def test_set_root_reports_the_decoded_cache(
    synth_data: Callable[..., Path], cli: Invoke, tmp_path: Path
) -> None:
    first = tmp_path / "first"
    shutil.copytree(synth_data(6), first)
    ids = _ids(first)
    _add(cli, "syn", first, root=True)
    cached = cli("datasets", "cache", "syn", "--workers", "1")
    assert cached.exit_code == 0, cached.output
    same = tmp_path / "same"
    shutil.copytree(first, same)
    assert _set_root(cli, "syn", same)["cache"] == {"samples": 6, "current": 6, "stale": 0}
    other = tmp_path / "other"
    shutil.copytree(first, other)
    os.utime(other / f"{ids[3]}_red.png", ns=(1, 1))
    result = cli("datasets", "set-root", "syn", other)
    assert result.exit_code == 0, result.output
    flat = " ".join(result.stdout.split())
    assert "Decoded cache: 6 samples, 1 of them with other files" in flat
    assert "'hpatool datasets cache syn'" in flat


def test_set_root_bad_folders(synth_data: Callable[..., Path], cli: Invoke, tmp_path: Path) -> None:
    data = synth_data(8)
    _add(cli, "syn", data)
    line = one_line_error(cli("datasets", "set-root", "syn", tmp_path / "nope"))
    assert "nope: no such folder" in line
    line = one_line_error(cli("datasets", "set-root", "syn", data / "labels.csv"))
    assert "labels.csv: is not a folder" in line
    line = one_line_error(cli("datasets", "set-root", "ghost", data))
    assert "unknown dataset 'ghost'" in line
    assert _show(cli, "syn")["root"] is None  # refused: nothing changed
    # a folder holding none of its images: accepted, with one warning line
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli("datasets", "set-root", "syn", empty)
    assert result.exit_code == 0, result.output
    warning = result.stderr.strip()
    assert warning.startswith("warning: none of the 8 samples of 'syn'") and "\n" not in warning
    assert _show(cli, "syn")["root"] == str(empty.resolve())


def test_a_moved_folder_is_named_with_the_fix(
    synth_data: Callable[..., Path], cli: Invoke, tmp_path: Path
) -> None:
    old = tmp_path / "old"
    shutil.copytree(synth_data(8), old)
    _add(cli, "syn", old, root=True)
    new = tmp_path / "new"
    old.rename(new)
    line = one_line_error(cli("datasets", "verify", "syn"), code=1)
    assert "does not exist" in line and "datasets set-root syn DIR" in line
    assert _set_root(cli, "syn", new)["with_images"] == 8
    assert cli("datasets", "verify", "syn").exit_code == 0


# ------------------------------------------------------------- preprocess: sub-folders, --kind


def test_preprocess_reads_the_hpa_server_layout(
    real_samples: Path, cli: Invoke, tmp_path: Path
) -> None:
    src = real_samples / "hpav18_jpg" / "images"
    labels = real_samples / "hpav18_jpg" / "labels.csv"
    out = tmp_path / "hpav18-64"
    result = cli(
        "preprocess", src, "--out", out, "--size", "64", "--labels", labels,
        "--kind", "external", "--name", "hpav18", "--workers", "2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    flat = " ".join(result.stdout.split())
    assert "Preprocessed 16 files" in flat and "(2 sub-folders)" in flat
    assert "Registered hpav18 (external, 4 samples)" in flat
    wanted = [row["Id"] for row in csv.DictReader(labels.open(encoding="utf-8"))]
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".png") == sorted(
        f"{i}_{c}.png" for i in wanted for c in COLOURS
    )  # flat, named by the HPA ids (<antibody>_<plate>_<well>_<field>)
    doc = _show(cli, "hpav18")
    assert doc["kind"] == "external" and doc["samples"] == 4 and doc["labelled"] == 4
    assert doc["status"] == {"done": 4}
    listing = cli("datasets", "show", "hpav18", "--samples", "--json")
    assert [s["id"] for s in json.loads(listing.stdout)] == wanted
    assert cli("datasets", "verify", "hpav18", "--size", "64").exit_code == 0
    # a rerun converts nothing and keeps the kind
    again = cli("preprocess", src, "--out", out, "--size", "64", "--labels", labels, "--json")
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert summary["skipped"] == 16 and summary["subfolders"] == 2
    assert _show(cli, "hpav18")["kind"] == "external"


def _write_sample(folder: Path, stem: str, colours: tuple[str, ...] = COLOURS) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(stem))
    for colour in colours:
        Image.fromarray(rng.integers(0, 255, (80, 80), dtype=np.uint8)).save(
            folder / f"{stem}_{colour}.png"
        )


def test_two_sources_for_one_output_fail_naming_both(cli: Invoke, tmp_path: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    _write_sample(src / "batch-a", "x")
    _write_sample(src / "batch-b", "x", ("red",))  # x_red.png twice
    _write_sample(src / "10580", "1610_C1_1")  # the server's layout: 10580_1610_C1_1
    _write_sample(src / "copies", "10580_1610_C1_1", ("green",))  # the same output again
    result = cli("preprocess", src, "--out", out, "--size", "64", "--workers", "1")
    assert result.exit_code == 1, result.output
    assert "2 files failed" in result.stdout
    with open(out / "failures.csv", encoding="utf-8", newline="") as fh:
        rows = {(r["Id"], r["colour"]): r["error"] for r in csv.DictReader(fh)}
    assert set(rows) == {("x", "red"), ("10580_1610_C1_1", "green")}
    assert "batch-a/x_red.png, batch-b/x_red.png" in rows[("x", "red")]
    assert (
        "10580/1610_C1_1_green.png, copies/10580_1610_C1_1_green.png"
        in rows[("10580_1610_C1_1", "green")]
    )
    made = sorted(p.name for p in out.glob("*.png"))
    assert "x_red.png" not in made and "10580_1610_C1_1_green.png" not in made
    assert "x_green.png" in made and "10580_1610_C1_1_red.png" in made  # the others converted


def test_sub_folders_only_without_top_level_sources_and_never_the_output(
    cli: Invoke, tmp_path: Path
) -> None:
    # files of its own: a flat folder as before (a download's raw/ beside its PNGs is not read)
    flat = tmp_path / "flat"
    _write_sample(flat, "top")
    _write_sample(flat / "raw", "top")
    result = cli("preprocess", flat, "--out", tmp_path / "flat-out", "--size", "64", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["files"] == 4 and json.loads(result.stdout)["subfolders"] == 0
    # sub-folders only, with the output inside the source: the output is never a source
    src = tmp_path / "src"
    _write_sample(src / "a", "one")
    _write_sample(src / "b", "two")
    out = src / "png"
    for _ in range(2):
        run = cli("preprocess", src, "--out", out, "--size", "64", "--json")
        assert run.exit_code == 0, run.output
        doc = json.loads(run.stdout)
        assert doc["files"] == 8 and doc["subfolders"] == 2
    assert doc["skipped"] == 8
    # nothing anywhere: the message says where it looked
    (tmp_path / "deep" / "a" / "b").mkdir(parents=True)
    _write_sample(tmp_path / "deep" / "a" / "b", "deep")
    line = one_line_error(cli("preprocess", tmp_path / "deep", "--out", tmp_path / "o"), code=1)
    assert "sub-folders one level down" in line and "nothing to convert" in line


def test_preprocess_kind(cli: Invoke, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _write_sample(src, "s1")
    labels = tmp_path / "labels.csv"
    labels.write_text("Id,Target\ns1,0 25\n")
    out = tmp_path / "out"
    line = one_line_error(cli("preprocess", src, "--out", out, "--kind", "holdout"))
    assert "invalid --kind 'holdout'" in line and "external" in line
    line = one_line_error(cli("preprocess", src, "--out", out, "--kind", "test", "--no-register"))
    assert "--kind" in line
    assert not out.exists()
    base = ("preprocess", src, "--out", out, "--size", "64", "--labels", labels, "--name", "p")
    assert cli(*base).exit_code == 0
    assert _show(cli, "p")["kind"] == "train"  # the default, as before: labels with a Target
    assert cli(*base, "--kind", "external").exit_code == 0
    assert _show(cli, "p")["kind"] == "external"  # a rerun with --kind changes it
