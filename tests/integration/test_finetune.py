"""``train --pretrained RUN/checkpoint-best.pt``: fine-tuning from a run, its 28-class head kept,
and said so in one line."""

from __future__ import annotations

import pytest
import torch

from hpatool.engine.models.checkpoint import load_checkpoint
from tests.support import ARCH, TRAIN, Invoke, Workspace, one_line_error


@pytest.mark.slow  # one short CPU run: about 5 s
def test_fine_tune_from_a_runs_checkpoint(cli: Invoke, trained_run: Workspace) -> None:
    out = trained_run.runs  # holds run r1
    common = ("--dataset", "syn", *TRAIN, "--workers", "0", "--out", out)
    best = out / "r1" / "checkpoint-best.pt"
    epoch = load_checkpoint(best)["epoch"]
    tuned = cli("train", *common, "--epochs", "1", "--max-steps", "1", "--lr", "1e-9",
                "--pretrained", best, "--name", "r2")  # fmt: skip
    assert tuned.exit_code == 0, tuned.output
    warnings = [line for line in tuned.stderr.splitlines() if line.startswith("note: ")]
    assert warnings == [
        f"note: --pretrained {best}: loaded {len(load_checkpoint(best)['model'])} tensors "
        f"of an hpatool checkpoint (run 'r1', --arch {ARCH}, epoch {epoch}); its classifier head "
        "was kept (fine-tuning from these weights)"
    ], tuned.stderr
    # one step at a learning rate of 1e-9: the head is still the first run's
    before = load_checkpoint(best)["model"]["fc.weight"]
    after = load_checkpoint(out / "r2" / "checkpoint-last.pt")["model"]["fc.weight"]
    assert torch.allclose(before, after, atol=1e-5)
    # a checkpoint of another architecture names the --arch it needs
    text = one_line_error(
        cli("train", "--dataset", "syn", "--arch", "resnet18", "--crop", "32", "--batch-size", "8",
            "--device", "cpu", "--workers", "0", "--out", out, "--pretrained", best,
            "--name", "r3"),
        code=1,
    )  # fmt: skip
    assert f"is a checkpoint of --arch {ARCH} ({ARCH}), not --arch resnet18" in text
    assert '"r3"' not in cli("runs", "list", "--json").stdout  # refused before registering
