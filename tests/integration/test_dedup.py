"""``hpatool dedup`` (issue 11) on the real images of ``../shared/data/hpa/real``: planted
copies (made the way the HPA v18 set was made, and by a brightness change or a PNG re-save)
are found as one cluster each, the distinct real samples form none, reruns hash only what is
new or changed, and bad input is one line."""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpatool.dedup import DEFAULT_MAX_DISTANCE
from hpatool.ids import COLOURS
from hpatool.registry import Registry
from tests.support import SIZE, Invoke, one_line_error

#: The band of an HPA v18 RGB JPEG that holds each stain (yellow: red + green).
BANDS = {"red": (1, 0, 0), "green": (0, 1, 0), "blue": (0, 0, 1), "yellow": (1, 1, 0)}


def _real_ids(real: Path) -> list[tuple[str, str]]:
    lines = (real / "kaggle_train_512" / "labels.csv").read_text().splitlines()[1:]
    return [(line.split(",")[0], line.split(",")[1]) for line in lines]


def _add(cli: Invoke, name: str, folder: Path, kind: str, labels: Path | None = None) -> None:
    labels = labels if labels is not None else folder / "labels.csv"
    result = cli("datasets", "add", name, "--labels", labels, "--root", folder, "--kind", kind)
    assert result.exit_code == 0, result.output


def _external_copies(
    cli: Invoke, real: Path, tmp_path: Path, ids: list[tuple[str, str]]
) -> dict[str, str]:
    """HPA v18-style copies of ``ids``: each stain upscaled to 2048 px, written as an RGB JPEG
    of quality 50 (the server's own) with the stain in its band, converted back to 512 px by
    ``hpatool preprocess``; registered as the external dataset ``ext``. Copy id -> original;
    every other copy gets a different label (a label conflict)."""
    raw = tmp_path / "raw"
    raw.mkdir()
    rows, made = ["Id,Target"], {}
    for k, (sample_id, target) in enumerate(ids):
        copy_id = f"{1000 + k}_{k + 1}_A1_1"
        for colour, band in BANDS.items():
            with Image.open(real / "kaggle_train_512" / f"{sample_id}_{colour}.png") as img:
                big = np.asarray(img.resize((2048, 2048), Image.Resampling.BICUBIC))
            rgb = np.stack([big * b for b in band], axis=-1).astype(np.uint8)
            Image.fromarray(rgb).save(raw / f"{copy_id}_{colour}.jpg", quality=50)
        rows.append(f"{copy_id},{target if k % 2 else '27'}")
        made[copy_id] = sample_id
    (raw / "labels.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "ext512"
    result = cli("preprocess", raw, "--out", out, "--no-register", "--workers", "2")
    assert result.exit_code == 0, result.output
    _add(cli, "ext", out, "external", raw / "labels.csv")
    return made


def _edited_copies(cli: Invoke, real: Path, tmp_path: Path, ids: list[str]) -> dict[str, str]:
    """Copies of ``ids`` registered as the test dataset ``mods``: the first half 30% brighter,
    the others re-saved as PNG (another compression level). Copy id -> original."""
    folder = tmp_path / "mods"
    folder.mkdir()
    made = {}
    half = len(ids) // 2
    for k, sample_id in enumerate(ids):
        copy_id = f"{2000 + k}_{k + 1}_B2_1"
        for colour in COLOURS:
            with Image.open(real / "kaggle_train_512" / f"{sample_id}_{colour}.png") as img:
                pixels = np.asarray(img, dtype=np.float32)
            if k < half:
                pixels = np.clip(pixels * 1.3, 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(
                folder / f"{copy_id}_{colour}.png", compress_level=9
            )
        made[copy_id] = sample_id
    (folder / "labels.csv").write_text("Id\n" + "".join(f"{i}\n" for i in made))
    _add(cli, "mods", folder, "test")
    return made


@pytest.mark.slow
def test_planted_copies_are_one_cluster_each_and_nothing_else(
    real_samples: Path, cli: Invoke, home: Path, tmp_path: Path
) -> None:
    ids = _real_ids(real_samples)
    _add(cli, "ktrain", real_samples / "kaggle_train_512", "train")
    ext = _external_copies(cli, real_samples, tmp_path, ids[:6])
    mods = _edited_copies(cli, real_samples, tmp_path, [i for i, _ in ids[6:12]])
    pairs_csv = tmp_path / "pairs.csv"
    result = cli("dedup", "ktrain", "ext", "mods", "--json", "--out", pairs_csv)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert list(doc) == ["max_distance", "clusters", "label_conflicts"]
    assert doc["max_distance"] == DEFAULT_MAX_DISTANCE
    planted = {("ext", c): o for c, o in ext.items()} | {("mods", c): o for c, o in mods.items()}
    expected = {frozenset({("ktrain", o), copy}) for copy, o in planted.items()}
    found = {frozenset(tuple(m) for m in cluster) for cluster in doc["clusters"]}
    false_positive = found - expected
    missed = expected - found
    print(
        f"planted copies: {len(expected)}, missed: {len(missed)}, other clusters: "
        f"{len(false_positive)}"
    )
    assert not missed and not false_positive
    assert doc["label_conflicts"] == 3  # ext copies 0, 2, 4 were given another label
    with pairs_csv.open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["dataset_a", "id_a", "dataset_b", "id_b", "distance"]
    assert {frozenset({(a, ia), (b, ib)}) for a, ia, b, ib, _ in rows[1:]} == expected
    distances = [int(r[4]) for r in rows[1:]]
    print(f"planted copy distances (bits of 128): max {max(distances)}, {sorted(distances)}")
    assert max(distances) <= DEFAULT_MAX_DISTANCE // 2  # with room to spare

    text = cli("dedup", "ktrain", "ext", "mods")  # the report, everything hashed already
    assert text.exit_code == 0, text.output
    out = text.stdout
    assert "Hashed 0 samples (72 already hashed)" in out
    assert "12 clusters of 24 samples" in out
    assert "ktrain ↔ ext" in out and "train ↔ external" in out
    assert "ktrain ↔ mods" in out and "train ↔ test" in out
    assert "Label conflicts: 3 clusters" in out
    with Registry.open(home) as reg:
        assert reg.dedup_done("ext") and reg.dedup_info("ext")["max_distance"] == 16  # type: ignore[index]
        assert len(reg.clusters(["ktrain", "mods"])) == 6
        assert len(reg.clusters(["ext", "mods"])) == 0


def test_distinct_real_samples_form_no_cluster(real_samples: Path, cli: Invoke, home: Path) -> None:
    _add(cli, "ktrain", real_samples / "kaggle_train_512", "train")
    # three more real fields, at full resolution (2048 px): the hash does not depend on size
    _add(cli, "full", real_samples / "fullres_png", "train")
    result = cli("dedup", "ktrain", "full", "--json")
    assert result.exit_code == 0, result.output
    clusters = json.loads(result.stdout)["clusters"]
    with Registry.open(home) as reg:
        words = [h.words for n in ("ktrain", "full") for h in reg.stored_hashes(n).values()]
    assert len(words) == 63 and all(w is not None for w in words)
    bits = [
        bin(a[0] ^ b[0]).count("1") + bin(a[1] ^ b[1]).count("1")  # type: ignore[index]
        for a, b in combinations(words, 2)
    ]
    print(
        f"false positives among 63 distinct real samples at {DEFAULT_MAX_DISTANCE} bits: "
        f"{len(clusters)} clusters; closest distinct pair: {min(bits)} bits"
    )
    assert clusters == []
    assert min(bits) > 2 * DEFAULT_MAX_DISTANCE


def test_rerun_hashes_only_new_and_changed_samples(
    synth_data: Callable[..., Path], cli: Invoke, home: Path, tmp_path: Path
) -> None:
    a = tmp_path / "a"
    shutil.copytree(synth_data(8, SIZE), a)
    b = tmp_path / "b"
    shutil.copytree(synth_data(6, SIZE, seed=1), b)
    _add(cli, "a", a, "train")
    _add(cli, "b", b, "external")
    first = cli("dedup", "a")
    assert first.exit_code == 0, first.output
    assert "Hashed 8 samples (0 already hashed)" in first.stdout
    second = cli("dedup", "a", "b")
    assert "Hashed 6 samples (8 already hashed)" in second.stdout, second.output
    # one image replaced (another sample's): that sample is hashed again, and now a duplicate
    ids = [line.split(",")[0] for line in (a / "labels.csv").read_text().splitlines()[1:]]
    for colour in ("green", "blue"):
        target = a / f"{ids[0]}_{colour}.png"
        shutil.copyfile(a / f"{ids[1]}_{colour}.png", target)
        os.utime(target, ns=(1, 1))
    third = cli("dedup", "a", "b", "--json")
    assert third.exit_code == 0, third.output
    assert [["a", ids[0]], ["a", ids[1]]] in json.loads(third.stdout)["clusters"]
    text = cli("dedup", "a", "b")
    assert "Hashed 0 samples (14 already hashed)" in text.stdout


def test_unreadable_images_are_listed_and_the_other_hashes_kept(
    synth_data: Callable[..., Path], cli: Invoke, home: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(synth_data(8, SIZE), data)
    ids = [line.split(",")[0] for line in (data / "labels.csv").read_text().splitlines()[1:]]
    (data / f"{ids[2]}_green.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (data / f"{ids[5]}_yellow.png").unlink()  # missing: left out, not a failure
    _add(cli, "syn", data, "train")
    result = cli("dedup", "syn")
    line = one_line_error(result, code=1)
    assert "1 sample could not be hashed" in line and ids[2] in line and "green" in line
    assert "Could not be hashed" in result.stdout and ids[2] in result.stdout
    assert "1 of 8 samples of 'syn' left out (1 without all four image files)" in result.stdout
    with Registry.open(home) as reg:
        stored = reg.stored_hashes("syn")
        assert set(stored) == set(ids) - {ids[2], ids[5]}
        assert reg.dedup_done("syn")


def test_bad_input_is_one_line(
    synth_data: Callable[..., Path], cli: Invoke, home: Path, tmp_path: Path
) -> None:
    data = synth_data(4, SIZE)
    _add(cli, "syn", data, "train")
    assert "unknown dataset 'nope'" in one_line_error(cli("dedup", "syn", "nope"))
    assert "known: syn" in one_line_error(cli("dedup", "nope"))
    for bad in ("25", "-1"):
        line = one_line_error(cli("dedup", "syn", "--max-distance", bad))
        assert f"invalid --max-distance {bad}: give 0 to 24 bits" in line
    assert "--out" in one_line_error(cli("dedup", "syn", "--out", tmp_path))
    assert "--workers" in one_line_error(cli("dedup", "syn", "--workers", "0"))
    # registered from a label CSV alone
    assert cli("datasets", "add", "labels-only", "--labels", data / "labels.csv").exit_code == 0
    line = one_line_error(cli("dedup", "syn", "labels-only"), code=1)
    assert "'labels-only' has no image folder" in line
    # an image folder without the images
    empty = tmp_path / "empty"
    empty.mkdir()
    _add(cli, "no-images", empty, "test", data / "labels.csv")
    line = one_line_error(cli("dedup", "no-images"), code=1)
    assert "'no-images' has no images to hash" in line and "4 without all four image files" in line
    with Registry.open(home) as reg:  # nothing was hashed or stored by the refused runs
        assert reg.stored_hashes("syn") == {} and not reg.dedup_done("syn")


def test_a_stopped_run_keeps_the_hashes_it_made(
    synth_data: Callable[..., Path], cli: Invoke, home: Path, tmp_path: Path
) -> None:
    from hpatool.dedup.job import find_duplicates

    _add(cli, "syn", synth_data(8, SIZE), "train")
    seen: list[int] = []

    def stop_after_five(done: int, total: int) -> None:
        seen.append(done)
        if done == 5:
            raise KeyboardInterrupt

    with Registry.open(home) as reg:
        with pytest.raises(KeyboardInterrupt):
            find_duplicates(reg, ["syn"], workers=1, progress=stop_after_five)
        assert len(reg.stored_hashes("syn")) == 5
        assert not reg.dedup_done("syn")  # no clusters were stored
        result = find_duplicates(reg, ["syn"], workers=1)
    assert (result.reused, result.hashed, result.matched) == (5, 3, 8)
