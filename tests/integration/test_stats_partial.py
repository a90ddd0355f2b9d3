"""``hpatool stats`` on partial datasets (issue 1) and its picture options (issue 7): it
describes the samples that can be used, says how many were left out and why, and counts a
labels-only dataset whole."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from hpatool.registry import Registry
from tests.support import SIZE, Invoke, one_line_error


def _partial_copy(data: Path, tmp_path: Path, drop: int) -> tuple[Path, list[str]]:
    """A copy of the synthetic dataset ``data`` whose first ``drop`` samples lost a channel."""
    folder = tmp_path / "data"
    shutil.copytree(data, folder)
    ids = [line.split(",")[0] for line in (folder / "labels.csv").read_text().splitlines()[1:]]
    for sample_id in ids[:drop]:
        (folder / f"{sample_id}_green.png").unlink()
    return folder, ids[:drop]


def _counts(home: Path, name: str, leave_out: set[str]) -> list[int]:
    with Registry.open(home) as reg:
        counts = Counter(
            c for s in reg.samples(name) if s.id not in leave_out for c in s.target or ()
        )
    return [counts[c] for c in range(28)]


def test_stats_counts_only_the_samples_whose_images_are_there(
    synth_data: Callable[..., Path], cli: Invoke, home: Path, tmp_path: Path
) -> None:
    folder, dropped = _partial_copy(synth_data(24, SIZE), tmp_path, drop=3)
    assert (
        cli("datasets", "add", "syn", "--labels", folder / "labels.csv", "--root", folder).exit_code
        == 0
    )
    (ds,) = json.loads(cli("stats", "syn", "--json").stdout)["datasets"]
    assert (ds["samples"], ds["labelled"], ds["registered"]) == (21, 21, 24)
    assert ds["left_out"] == {"without all four image files": 3}
    assert ds["class_counts"] == _counts(home, "syn", set(dropped))
    res = cli("stats", "syn")
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[0] == (
        "note: 3 of 24 samples of 'syn' left out (3 without all four image files); "
        "--all-samples counts all registered labels"
    )
    (ds,) = json.loads(cli("stats", "syn", "--json", "--all-samples").stdout)["datasets"]
    assert (ds["samples"], ds["registered"], ds["left_out"]) == (24, 24, {})
    assert ds["class_counts"] == _counts(home, "syn", set())
    assert "left out" not in cli("stats", "syn", "--all-samples").stdout


def test_stats_leaves_out_samples_by_their_download_status(
    synth_data: Callable[..., Path], cli: Invoke, home: Path, tmp_path: Path
) -> None:
    data = synth_data(24, SIZE)
    assert (
        cli("datasets", "add", "syn", "--labels", data / "labels.csv", "--root", data).exit_code
        == 0
    )
    with Registry.open(home) as reg:
        ids = [s.id for s in reg.samples("syn")]
        statuses = ["missing", "missing", "failed", None] + ["done"] * 20
        reg.set_status("syn", zip(ids, statuses, strict=True))
    (ds,) = json.loads(cli("stats", "syn", "--json").stdout)["datasets"]
    assert ds["left_out"] == {
        "failed to download or convert": 1,
        "missing on the server (404)": 2,
        "not downloaded or converted yet": 1,
    }
    assert ds["samples"] == 20 and ds["class_counts"] == _counts(home, "syn", set(ids[:4]))


def test_stats_on_a_labels_only_dataset_counts_every_row(
    train_csv: Path, cli: Invoke, tmp_path: Path
) -> None:
    cli("datasets", "add", "train", "--labels", train_csv)
    res = cli("stats", "train", "--pairs", "0")
    assert res.exit_code == 0, res.output
    assert "left out" not in res.stdout and res.stderr == ""
    assert "31,072" in res.stdout
    (ds,) = json.loads(cli("stats", "train", "--json").stdout)["datasets"]
    assert (ds["samples"], ds["registered"], ds["left_out"]) == (31072, 31072, {})


def test_stats_of_a_dataset_without_any_image_says_so(
    synth_data: Callable[..., Path], cli: Invoke, home: Path, tmp_path: Path
) -> None:
    data, empty = synth_data(24, SIZE), tmp_path / "empty"
    empty.mkdir()
    assert (
        cli("datasets", "add", "syn", "--labels", data / "labels.csv", "--root", empty).exit_code
        == 0
    )
    # labels registered before their images (none there, no statuses): all of them counted,
    # as split splits them all
    res = cli("stats", "syn", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["datasets"][0]["samples"] == 24
    # a download none of whose samples is done: nothing to count, and it says so
    with Registry.open(home) as reg:
        reg.set_status("syn", [(s.id, "failed") for s in reg.samples("syn")])
    res = cli("stats", "syn")
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == (
        "dataset 'syn': none of its 24 labelled samples has its images; pass --all-samples to "
        "count all registered labels"
    )
    plot = tmp_path / "c.png"
    assert "none of its 24 labelled samples" in one_line_error(
        cli("stats", "syn", "--plot", plot), 1
    )
    assert not plot.exists()
    assert cli("stats", "syn", "--all-samples", "--plot", plot).exit_code == 0 and plot.is_file()


def test_stats_share_plot_on_real_labels(train_csv: Path, cli: Invoke, tmp_path: Path) -> None:
    small = tmp_path / "small.csv"
    small.write_text("".join(train_csv.read_text().splitlines(keepends=True)[:301]))
    cli("datasets", "add", "train", "--labels", train_csv)
    cli("datasets", "add", "small", "--labels", small)
    plot = tmp_path / "shares.png"
    res = cli("stats", "train", "small", "--plot", plot, "--share", "--pairs", "0")
    assert res.exit_code == 0, res.output
    assert f"Plot written to {plot}" in res.stdout
    with Image.open(plot) as img:
        assert img.format == "PNG" and img.size[0] > 1000
    line = one_line_error(cli("stats", "train", "--share"), 2)
    assert line == "error: --share changes the --plot picture; add --plot FILE"
