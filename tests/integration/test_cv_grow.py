"""``cv --name EXP --epochs N`` continues every fold of an existing experiment to N epochs (or
says precisely why not), and ``experiments show`` names a fold trained differently from the
others (issue 20)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from hpatool.engine.models.checkpoint import load_checkpoint
from hpatool.registry import Registry
from tests.support import SIZE, TRAIN, Invoke, one_line_error, register


def test_cv_with_more_epochs_continues_every_fold(
    cli: Invoke, home: Path, synth_data: Callable[..., Path], tmp_path: Path
) -> None:
    register(cli, synth_data(16, SIZE, seed=2), folds=2)
    runs = tmp_path / "runs"
    base = ("cv", "--dataset", "syn", "--name", "g", *TRAIN, "--batch-size", "4",
            "--workers", "0", "--out", runs)  # fmt: skip
    first = cli(*base, "--epochs", "1")
    assert first.exit_code == 0, first.output
    grown = cli("cv", "--name", "g", "--epochs", "2", "--workers", "0", "--json")
    assert grown.exit_code == 0, grown.output
    doc = json.loads(grown.stdout)
    assert [r["action"] for r in doc["runs"]] == ["resume", "resume"]
    for fold in (0, 1):
        checkpoint = load_checkpoint(runs / f"g-f{fold}" / "checkpoint-last.pt")
        assert checkpoint["epoch"] == 2 and checkpoint["config"]["options"]["epochs"] == 2
        assert (runs / f"g-f{fold}" / "oof.csv").is_file()
    with Registry.open(home) as reg:
        assert reg.experiment("g").options["epochs"] == 2
        assert all(r.epochs_done == 2 and r.status == "done" for r in reg.experiment_runs("g"))
    shown = cli("experiments", "show", "g", "--json")
    assert json.loads(shown.stdout)["trained_differently"] == {}

    # one fold extended on its own: experiments show says so
    extended = cli("train", "--resume", "--name", "g-f0", "--epochs", "3", "--workers", "0")
    assert extended.exit_code == 0, extended.output
    shown = cli("experiments", "show", "g")
    assert "note: g-f0 trained differently from the other folds: --epochs 3, the " \
        "experiment's 2" in shown.stdout.replace("\n", " ")  # fmt: skip
    doc = json.loads(cli("experiments", "show", "g", "--json").stdout)
    assert doc["trained_differently"] == {"g-f0": {"epochs": {"run": 3, "experiment": 2}}}
    # and cv cannot shorten it
    text = one_line_error(cli("cv", "--name", "g", "--epochs", "1", "--workers", "0"))
    assert text == (
        "error: --epochs 1 is fewer than the 3 epochs fold 0 (run 'g-f0') of experiment 'g' "
        "trained: a run is not shortened; give --epochs 3 or more, or start a new experiment "
        "with another --name"
    )
