"""``preprocess --labels`` whose CSV lists samples with no images in the source folder: the
dataset is registered, but the command says how many samples are left out and exits 1
(issue 10, item 5: it used to register an incomplete dataset with exit 0 and no word)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from hpatool.availability import usable_samples
from hpatool.registry import Registry
from tests.support import SIZE, Invoke, one_line_error


def test_labels_without_source_images_register_but_fail_with_the_count(
    cli: Invoke, home: Path, synth_data: Callable[..., Path], tmp_path: Path
) -> None:
    src = tmp_path / "src"
    shutil.copytree(synth_data(10, SIZE, seed=4), src)
    ids = [line.split(",")[0] for line in (src / "labels.csv").read_text().splitlines()[1:]]
    for path in src.glob(f"{ids[2]}_*.png"):
        path.unlink()
    args = ("preprocess", src, "--out", tmp_path / "out", "--size", "32", "--name", "pp",
            "--labels", src / "labels.csv")  # fmt: skip
    line = one_line_error(cli(*args), 1)
    assert "1 of 10 samples of 'pp' left out" in line and str(src) in line
    with Registry.open(home) as reg:
        usable = usable_samples(reg, "pp")
    assert len(usable.samples) == 9 and ids[2] not in {s.id for s in usable.samples}
    # once the images are there, the same command completes with exit 0
    for path in synth_data(10, SIZE, seed=4).glob(f"{ids[2]}_*.png"):
        shutil.copy(path, src / path.name)
    again = cli(*args)
    assert again.exit_code == 0, again.output


def test_a_rerun_keeps_its_parent_when_another_dataset_shares_the_source_folder(
    cli: Invoke, home: Path, synth_data: Callable[..., Path], tmp_path: Path
) -> None:
    """Found walking the docs: a test set registered over the same folder made the rerun
    derive the output from it (first by name), losing the parent and its folds."""
    src = synth_data(10, SIZE, seed=4)
    assert cli("datasets", "add", "zeta", "--labels", src / "labels.csv", "--root", src)
    args = ("preprocess", src, "--out", tmp_path / "out", "--size", "32", "--name", "small")
    assert cli(*args).exit_code == 0
    assert cli("datasets", "add", "alpha", "--root", src, "--kind", "test").exit_code == 0
    again = cli(*args)
    assert again.exit_code == 0, again.output
    with Registry.open(home) as reg:
        record = reg.dataset("small")
    assert record.parent == "zeta" and record.provenance["source_dataset"] == "zeta"
