"""``hpatool runs compare RUN RUN ... [--plot FILE] [--json]`` (issue 8): runs side by side
from the registry and each run's ``metrics.csv``, and their curves in one figure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from hpatool.engine.runs.run_dir import write_metrics_csv
from hpatool.registry import Registry
from tests.support import TRAIN, Invoke, Workspace, one_line_error


def _row(epoch: int, f1: float, f1_05: float, val_loss: float, **extra: Any) -> dict[str, Any]:
    return {
        "epoch": epoch, "step": 12 * epoch, "partial": 0, "train_loss": 0.5 / epoch,
        "val_loss": val_loss, "macro_f1": f1, "macro_f1_at_0.5": f1_05, "lr": 1e-3,
        "images_per_s": 100.0 * epoch, "seconds": 6.0, **extra,
    }  # fmt: skip


def _add_run(home: Path, name: str, folder: Path, rows: list[dict[str, Any]] | None) -> None:
    """A finished run's registry row and, unless ``rows`` is None, its ``metrics.csv``."""
    folder.mkdir(parents=True)
    if rows is not None:
        write_metrics_csv(folder / "metrics.csv", rows)
    with Registry.open(home) as reg:
        reg.create_run(
            name, arch="resnet18", datasets=["kaggle", "v18"], fold=1, config={}, out_dir=folder
        )
        reg.update_run(
            name, status="done", best_f1=0.123, best_epoch=1, epochs_done=len(rows or [])
        )


@pytest.fixture
def runs(home: Path, tmp_path: Path) -> Path:
    """Runs ``a`` (best at epoch 2 of 3), ``b`` (one epoch, stopped part-way) and ``c`` (no
    ``metrics.csv``)."""
    a = [_row(1, 0.30, 0.20, 0.40), _row(2, 0.55, 0.41, 0.31), _row(3, 0.52, 0.45, 0.29)]
    _add_run(home, "a", tmp_path / "runs" / "a", a)
    _add_run(home, "b", tmp_path / "runs" / "b", [_row(1, 0.25, 0.1, 0.6, partial=1)])
    _add_run(home, "c", tmp_path / "runs" / "c", None)
    return tmp_path / "runs"


def test_runs_compare_prints_the_runs_side_by_side(cli: Invoke, runs: Path) -> None:
    res = cli("runs", "compare", "a", "b", "c")
    assert res.exit_code == 0, res.output
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in res.stdout.splitlines() if line.startswith("│")}  # fmt: skip
    assert rows["best val. macro F1 (held out)"] == ["0.5500", "0.2500", "0.1230"]
    assert rows["OOF macro F1, held out"] == ["-"] * 3  # no out-of-fold step yet
    assert rows["best epoch"] == ["2", "1", "1"]
    assert rows["macro F1 at 0.5 (that epoch)"] == ["0.4100", "0.1000", "-"]
    assert rows["val loss (that epoch)"] == ["0.3100", "0.6000", "-"]
    assert rows["images/s (mean of epochs)"] == ["200.0", "100.0", "-"]
    assert rows["epochs done"] == ["3", "1 (+ part of epoch 1)", "0"]
    assert rows["datasets"] == ["kaggle, v18"] * 3 and rows["status"] == ["done"] * 3
    assert f"note: run c: no metrics.csv in {runs / 'c'} (no epoch finished yet?)" in res.stdout
    doc = json.loads(cli("runs", "compare", "b", "a", "--json").stdout)
    assert [d["name"] for d in doc] == ["b", "a"]
    assert doc[1]["best_f1"] == 0.55 and doc[1]["macro_f1_at_0.5"] == 0.41
    assert [r["epoch"] for r in doc[1]["metrics"]] == [1, 2, 3]


def test_runs_compare_plot(cli: Invoke, runs: Path, tmp_path: Path) -> None:
    plot = tmp_path / "compare.png"
    res = cli("runs", "compare", "a", "b", "c", "--plot", plot)
    assert res.exit_code == 0, res.output
    assert res.stdout.rstrip().endswith(f"Plot written to {plot}")
    with Image.open(plot) as img:
        assert img.format == "PNG" and img.size[0] > 1000
    assert one_line_error(cli("runs", "compare", "c", "--plot", tmp_path / "none.png"), 1) == (
        "error: none of the runs has finished an epoch (no metrics.csv): nothing to plot"
    )
    assert not (tmp_path / "none.png").exists()


def test_runs_compare_refuses_unknown_and_repeated_runs(cli: Invoke, runs: Path) -> None:
    assert one_line_error(cli("runs", "compare", "a", "bb"), 2) == (
        "error: unknown run 'bb' (did you mean 'b'?); 'hpatool runs list' shows the runs"
    )
    assert one_line_error(cli("runs", "compare", "a", "zzz"), 2) == (
        "error: unknown run 'zzz'; 'hpatool runs list' shows the runs"
    )
    assert one_line_error(cli("runs", "compare", "a", "b", "a"), 2) == (
        "error: run 'a' is named twice; name each run once"
    )


def test_runs_compare_plot_never_overwrites_a_run_file(cli: Invoke, runs: Path) -> None:
    curves = runs / "a" / "curves.png"
    curves.write_bytes(b"a run's picture")
    assert one_line_error(cli("runs", "compare", "a", "b", "--plot", curves), 2) == (
        f"error: --plot {curves} is a file of run 'a'; write the output to another file"
    )
    assert curves.read_bytes() == b"a run's picture"


@pytest.mark.slow
def test_runs_compare_on_trained_runs(cli: Invoke, trained_run: Workspace, tmp_path: Path) -> None:
    runs = trained_run.runs  # holds r1, two epochs
    args = ("train", "--dataset", "syn", *TRAIN, "--workers", "0", "--out", runs)
    part = ("--epochs", "2", "--batch-size", "4", "--max-steps", "1", "--name", "part")
    assert cli(*args, *part).exit_code == 0  # 4 steps an epoch: stopped in epoch 1
    plot = tmp_path / "compare.png"
    res = cli("runs", "compare", "r1", "part", "--json", "--plot", plot)
    assert res.exit_code == 0, res.output
    two, part = json.loads(res.stdout)
    with Registry.open(trained_run.home) as reg:
        for doc in (two, part):
            record = reg.run(doc["name"])
            assert doc["best_f1"] == pytest.approx(record.best_f1, abs=1e-6)
            assert doc["best_epoch"] == record.best_epoch
    assert [r["epoch"] for r in two["metrics"]] == [1, 2] and two["epochs_done"] == 2
    assert [r["partial"] for r in part["metrics"]] == [1] and part["epochs_done"] == 0
    assert plot.is_file()
    # each run's out-of-fold step: its view and the macro F1 of thresholds tuned on it
    for doc in (two, part):
        stored = json.loads((runs / doc["name"] / "thresholds.json").read_text())
        assert stored["tuned_on"] == "oof"
        assert doc["oof_macro_f1"] == stored["oof_macro_f1"] and doc["oof_view"] == stored["view"]
        # the held-out figure: thresholds tuned on one half of oof.csv, scored on the other
        assert doc["oof_macro_f1_heldout"] == stored["oof_macro_f1_heldout"]
        assert 0 <= doc["oof_macro_f1_heldout"] <= 1
    shown = json.loads(cli("runs", "show", "r1", "--json").stdout)
    assert shown["oof_macro_f1"] == two["oof_macro_f1"]
    assert shown["oof_macro_f1_heldout"] == two["oof_macro_f1_heldout"]
    table = cli("runs", "compare", "r1", "part").stdout
    assert f"{two['oof_macro_f1_heldout']:.4f} (mean grid)" in table
    assert f"{two['oof_macro_f1']:.4f}" in table
