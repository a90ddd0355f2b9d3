"""What a person sees in a terminal: the progress bars rendered at 80 columns keep their counts
and ETA, log lines printed while a bar is live stay whole on their own lines, the download bar's
files/s is the summary's, and the end-of-run line does not contradict itself."""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpatool.cli.download import _download_bar
from hpatool.cli.train import _epoch_line, _result_line, _train_progress
from hpatool.download import download_external
from hpatool.download.tracker import DownloadProgress
from hpatool.engine.training.events import TrainEvent
from hpatool.engine.training.fit import FitResult
from hpatool.options import DownloadConfig
from hpatool.registry import Registry
from tests.integration.hpa_server import HpaServer
from tests.support import write_labels

_STYLE = re.compile(r"\x1b\[[0-9;]*m")  # colours and bold
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # cursor moves, erased lines


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Terminal:
    """A fake terminal ``width`` columns wide on both stdout and stderr."""

    def __init__(self, width: int) -> None:
        self.stderr = _Tty()
        self.stdout = _Tty()
        self.width = width

    def __enter__(self) -> _Terminal:
        """Be stdout and stderr (in the test itself: pytest sets its own capture again
        between a fixture's setup and the test)."""
        self._saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = self.stdout, self.stderr
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stdout, sys.stderr = self._saved

    def lines(self) -> list[str]:
        """What the screen showed, line by line (each redraw of the bar is a line)."""
        text = _STYLE.sub("", self.stderr.getvalue())
        text = _CONTROL.sub("\n", text).replace("\r", "\n")
        return [line.rstrip() for line in text.split("\n") if line.strip()]


@pytest.fixture(params=[80, 160])
def terminal(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> _Terminal:
    term = _Terminal(request.param)
    monkeypatch.setenv("COLUMNS", str(term.width))
    monkeypatch.setenv("TERM", "xterm")
    for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(name, raising=False)
    return term


def _event(kind: str, step: int, **kw: Any) -> TrainEvent:
    return TrainEvent(kind, "demo-run", Path("/r"), 1, 3, step, 90, steps_per_epoch=30, **kw)


def _train_events() -> Iterator[TrainEvent]:
    info = {"train_samples": 808, "val_samples": 202, "device": "cpu", "world_size": 1}
    yield _event("start", 0, info=info)
    for step in range(1, 16):
        yield _event("step", step, loss=0.6931, images_per_s=1234.5)
    yield _event("validate", 15)
    metrics = {
        "train_loss": 0.6931,
        "val_loss": 0.7012,
        "macro_f1": 0.1043,
        "macro_f1_at_0.5": 0.05,
        "images_per_s": 1234.5,
    }
    yield _event("epoch", 15, metrics=metrics, best=True)


def test_train_bar_keeps_counts_and_eta_and_lines_stay_whole(terminal: _Terminal) -> None:
    with terminal, _train_progress(enabled=True) as callback:
        events = list(_train_events())
        for event in events:
            callback(event)
    lines = terminal.lines()
    bars = [line for line in lines if "steps" in line]
    assert bars and all(len(line) <= terminal.width for line in bars), bars
    assert any("15/90" in line and re.search(r"eta \d+:\d\d", line) for line in bars), bars
    assert bars[-1].startswith("epoch 1/3 done"), bars
    # The log lines went through the bar's console: whole, on lines of their own, nothing of
    # the bar mixed in (a line longer than the terminal is wrapped between words).
    run_line = "Run demo-run: 808 training, 202 validation samples on cpu; files in /r"
    assert run_line in lines
    epoch_line = _epoch_line(events[-1]).replace("[green]best[/]", "best")
    logged = [line for line in lines if "━" not in line and "steps" not in line]
    assert " ".join(logged) == f"{run_line} {epoch_line}", logged
    assert terminal.stdout.getvalue() == ""


def _snapshot(done: int, failed: int, retries: int) -> DownloadProgress:
    return DownloadProgress(
        samples_total=74_606,
        samples_done=done,
        samples_failed=failed,
        files_total=4 * 74_606,
        files_done=4 * done,
        files_failed=failed,
        bytes=done * 400_000,
        requests=4 * done + retries,
        retries=retries,
        elapsed_s=60.0,
        files_fetched=4 * done,
    )


def test_download_bar_keeps_counts_and_eta(terminal: _Terminal) -> None:
    with terminal, _download_bar() as update:
        update(_snapshot(1_200, 0, 0))
        update(_snapshot(1_245, 6, 12))
    bars = [line for line in terminal.lines() if "download" in line]
    assert bars and all(len(line) <= terminal.width for line in bars), bars
    last = bars[-1]
    assert "1251/74606 samples" in last and re.search(r"eta \d+:\d\d", last), last
    assert "83 files/s" in last  # 4 * 1,245 files fetched in 60 s


def test_piped_lines_stay_plain_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    with _train_progress(enabled=True) as callback:
        for event in _train_events():
            callback(event)
    out = capsys.readouterr()
    assert out.out.startswith("Run demo-run: 808 training")
    assert "epoch 1/3: train loss 0.6931" in out.out and out.err == ""


def test_download_bar_files_per_s_is_the_summarys(
    server: HpaServer, tmp_path: Path, home: Path
) -> None:
    """404s and conversions are not downloads: the bar counted every finished file from its own
    start (31 files/s) while the summary said 20; both now count downloaded files since the
    download began."""
    ids = [f"1000_1_A{i}_1" for i in range(1, 9)]
    for sample_id in ids[:4]:
        for colour in ("red", "green"):
            server.fault(sample_id, colour, "404!")
    snapshots: list[DownloadProgress] = []
    config = DownloadConfig(
        base_url=server.base_url, size=32, timeout=0.5, backoff=0.01, workers=2, name="v18"
    )
    with Registry.open(home) as reg:
        summary = download_external(
            reg,
            write_labels(tmp_path / "labels.csv", ids),
            tmp_path / "out",
            config,
            progress=snapshots.append,
        )
    last = snapshots[-1]
    assert last.files_fetched == summary.files_fetched == 24
    assert last.files_done == 32
    assert last.elapsed_s <= summary.elapsed_s
    assert last.files_per_s == pytest.approx(summary.files_per_s, rel=0.1)
    assert last.mb_per_s == pytest.approx(summary.mb_per_s, rel=0.1)


def _result(epochs_done: int, steps: int, best_epoch: int | None, status: str) -> FitResult:
    return FitResult(
        name="resnet50-f0",
        run_dir=Path("/runs/resnet50-f0"),
        epochs_done=epochs_done,
        steps=steps,
        best_f1=0.1043 if best_epoch else None,
        best_epoch=best_epoch,
        status=status,
        history=[],
        config={},
    )


def test_the_end_of_run_line_does_not_contradict_itself() -> None:
    assert _result_line(_result(0, 3, 1, "stopped")) == (
        "Run [bold]resnet50-f0[/] stopped after 3 steps in epoch 1 (no full epoch yet); "
        "best held-out macro F1 0.1043 on the partial epoch 1. Files in /runs/resnet50-f0"
    )
    assert _result_line(_result(2, 60, 2, "done")).startswith(
        "Run [bold]resnet50-f0[/] done: 2 epochs, 60 steps, best held-out macro F1 0.1043 "
        "(epoch 2)."
    )
    assert "(epoch 3 partial)" in _result_line(_result(2, 70, 3, "stopped"))
