"""SIGTERM (what schedulers send) stops ``train`` as Ctrl-C does: one line saying how to go on,
the run ``interrupted`` in the registry, its last epoch kept, and ``--resume`` continues it
(issue 9). A real process gets the real signal."""

from __future__ import annotations

import multiprocessing
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hpatool.engine.models.checkpoint import load_checkpoint
from hpatool.engine.training.events import TrainEvent
from hpatool.engine.training.fit import fit
from hpatool.errors import HpaToolError
from hpatool.registry import Registry
from tests.support import ARCH, SIZE, TRAIN, Invoke, leftovers, register, run_cli, start_hpatool


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "code", "why"),
    [(signal.SIGTERM, 143, "terminated (SIGTERM)"), (signal.SIGINT, 130, "interrupted")],
)
def test_a_signal_after_the_first_epoch_ends_the_run_interrupted_and_resumable(
    synth_data: Callable[..., Path], tmp_path: Path, sig: int, code: int, why: str
) -> None:
    home, runs = tmp_path / "home", tmp_path / "runs"
    data = synth_data(24, SIZE, seed=1)
    for args in (
        ("datasets", "add", "syn", "--labels", data / "labels.csv", "--root", data),
        ("split", "syn", "--folds", "2"),
    ):
        assert run_cli(home, *args).exit_code == 0
    last = runs / "t" / "checkpoint-last.pt"
    args = ["train", "--dataset", "syn", *TRAIN, "--epochs", "1000", "--workers", "0"]
    proc = start_hpatool([*args, "--out", str(runs), "--name", "t"], home)
    deadline = time.monotonic() + 120
    while not last.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no epoch finished"
        time.sleep(0.02)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, (stdout, stderr)
    assert stderr.strip().splitlines()[-1] == (
        f"error: {why}: run 't' stopped; continue the run with 'hpatool train --resume --name t'"
    )
    assert "Traceback" not in stderr and leftovers(runs) == []
    with Registry.open(home) as reg:
        record = reg.run("t")
    assert record.status == "interrupted"
    saved = load_checkpoint(last)["epoch"]
    assert saved >= 1 and record.epochs_done <= saved  # the registry follows the checkpoint
    res = run_cli(home, "train", "--resume", "--name", "t", "--epochs", saved + 1)
    assert res.exit_code == 0, res.output
    assert load_checkpoint(last)["epoch"] == saved + 1
    with Registry.open(home) as reg:
        assert reg.run("t").status == "done"


def test_a_stopped_run_shuts_its_loader_workers_down_before_the_error_leaves_fit(
    cli: Invoke, home: Path, synth_data: Callable[..., Path], tmp_path: Path
) -> None:
    """Found on a GPU: the traceback of a stopped run held the persistent DataLoader workers
    (and, on CUDA, the pin-memory thread) until the interpreter exited, where torch skips its
    clean-up, and the process hung after printing its error. ``fit`` now stops them itself."""
    register(cli, synth_data(24, SIZE, seed=1))

    def stop_at_first_step(event: TrainEvent) -> None:
        if event.kind == "step":
            raise KeyboardInterrupt

    options = {"datasets": ["syn"], "arch": ARCH, "crop": 32, "batch_size": 8, "device": "cpu",
               "workers": 2, "epochs": 3, "out": tmp_path / "runs", "name": "w"}  # fmt: skip
    with pytest.raises(HpaToolError) as stopped:
        fit(options, home=home, progress=stop_at_first_step)
    assert "run 'w' stopped" in str(stopped.value)
    assert stopped.value.__traceback__ is not None  # the frames that held the loaders
    assert multiprocessing.active_children() == []


def test_a_signal_while_an_epoch_is_saved_waits_for_the_whole_epoch(
    cli: Invoke,
    home: Path,
    synth_data: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C right after checkpoint-last.pt is written (found walking the docs: the epoch's
    checkpoint-best.pt, thresholds, metrics and registry row were lost): the rest of the epoch
    is still saved, then the run stops, resumable."""
    import os

    from hpatool.engine.training import epochs

    register(cli, synth_data(24, SIZE, seed=1))
    real_save = epochs.save_checkpoint

    def save_then_ctrl_c(path: Path, checkpoint: dict[str, object]) -> None:
        real_save(path, checkpoint)
        if path.name == "checkpoint-last.pt":
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(epochs, "save_checkpoint", save_then_ctrl_c)
    runs = tmp_path / "runs"
    options = {"datasets": ["syn"], "arch": ARCH, "crop": 32, "batch_size": 8, "device": "cpu",
               "workers": 0, "epochs": 3, "out": runs, "name": "s"}  # fmt: skip
    with pytest.raises(HpaToolError, match="--resume --name s"):
        fit(options, home=home)
    run = runs / "s"
    assert load_checkpoint(run / "checkpoint-best.pt")["epoch"] == 1
    assert (run / "thresholds.json").is_file() and (run / "curves.png").is_file()
    assert len((run / "metrics.csv").read_text().splitlines()) == 2
    with Registry.open(home) as reg:
        record = reg.run("s")
    assert record.epochs_done == 1 and record.status == "interrupted"


def test_the_resume_advice_names_a_home_that_is_not_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo trains in its own home: its Ctrl-C advice must say --home, or the command it
    gives finds no run (found walking the docs)."""
    from types import SimpleNamespace

    from hpatool.engine.training.resume import resume_advice

    last = tmp_path / "run" / "checkpoint-last.pt"
    last.parent.mkdir()
    last.write_bytes(b"x")
    target = SimpleNamespace(name="demo-run", run_dir=SimpleNamespace(last=last))
    monkeypatch.setenv("HPATOOL_HOME", str(tmp_path / "usual"))
    assert resume_advice(target, tmp_path / "usual") == (  # type: ignore[arg-type]
        "continue the run with 'hpatool train --resume --name demo-run'"
    )
    demo_home = tmp_path / "hpatool-demo" / "home"
    assert resume_advice(target, demo_home) == (  # type: ignore[arg-type]
        f"continue the run with 'hpatool --home {demo_home} train --resume --name demo-run'"
    )
