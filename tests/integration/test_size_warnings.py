"""A model applied to images of another size than it trained on says so; ``--crops`` on a
whole-image model (one window) says so too (issue 20)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.support import SIZE, Invoke, register


def test_scale_and_single_window_warnings(
    cli: Invoke, home: Path, synth_data: Callable[..., Path], tmp_path: Path
) -> None:
    register(cli, synth_data(24, SIZE, seed=6))
    big = synth_data(12, 64, seed=7)
    assert cli("datasets", "add", "big", "--labels", big / "labels.csv", "--root", big,
               "--kind", "test").exit_code == 0  # fmt: skip
    out = tmp_path / "runs"
    trained = cli("train", "--dataset", "syn", "--arch", "resnet10t", "--crop", str(SIZE),
                  "--batch-size", "8", "--epochs", "1", "--device", "cpu", "--workers", "0",
                  "--out", out, "--name", "whole")  # fmt: skip
    assert trained.exit_code == 0, trained.output
    other = cli("predict", "--run", "whole", "--dataset", "big", "--workers", "0",
                "--out", tmp_path / "a.csv")  # fmt: skip
    assert other.exit_code == 0, other.output
    lines = [ln for ln in other.stderr.splitlines() if ln.startswith("warning: ")]
    assert any(
        f"whole trained on {SIZE}x{SIZE} images and scores dataset 'big''s 64x64 ones" in ln
        and "--size 48" in ln
        for ln in lines
    ), other.stderr
    same = cli("predict", "--run", "whole", "--dataset", "syn", "--workers", "0",
               "--out", tmp_path / "b.csv", "--crops", "4", "--tta", "crops")  # fmt: skip
    assert same.exit_code == 0, same.output
    assert "trained on" not in same.stderr
    assert (
        f"warning: --crops 4: whole's {SIZE}px crop is the whole {SIZE}x{SIZE} image, so every "
        "crop is the same window"
    ) in same.stderr.replace("\n", " ")
