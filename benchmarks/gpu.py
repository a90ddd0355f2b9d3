"""The CUDA paths of hpatool, end to end, on one GPU: one prepared script for a short lease.

Run (on a machine with a GPU; without one it says so and exits 0):
    python benchmarks/gpu.py --out OUT [--only table,resume,...] [--budget 420]

Each step is a real ``hpatool`` command (``python -m hpatool``) or benchmark script, run in a
subprocess with its own time limit; a step that fails is recorded and the next one still runs.
Steps:

0. the table (``--only table``): resnet50 and inceptionresnetv2 trained a few steps at crop 1024
   (whole 1024 px images: ``preprocess --size 1024``), 512 and 256 with AMP and channels_last,
   then scored with 8 crops, from tensors in memory:
   images/s of both, peak GPU memory, bf16 or fp16;
1. ``synth`` a dataset, ``datasets add`` it, ``split`` it;
2. ``train`` resnet50 on CUDA (AMP bf16 + channels_last, the defaults there), 2 epochs, timed;
3. the same run stopped by SIGTERM after its first checkpoint, then ``--resume`` (CUDA RNG state,
   GradScaler and optimizer state restored on the GPU), and its metrics compared with (2);
4. ``torchrun --nproc-per-node 1 -m hpatool train`` (DDP over NCCL);
5. ``train --arch inceptionresnetv2`` for a few steps;
6. ``evaluate`` and ``predict`` on CUDA (8 crops, max);
7. ``cv`` of two folds, a third fold by a 1-GPU ``torchrun ... cv``, ``experiments show``, and
   ``predict --experiment`` (the fold ensemble);
8. ``benchmarks/train.py --device cuda`` (pipeline vs memory, both archs, AMP + channels_last)
   and ``benchmarks/predict.py --device cuda``.

Writes ``OUT/gpu.log`` (every command and its output) and ``OUT/gpu.json`` (per step: command,
exit code, seconds, and the figures parsed from it).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the table runs hpatool in this process


class Runner:
    def __init__(self, out: Path, work: Path, budget: float) -> None:
        self.out, self.work = out, work
        self.deadline = time.monotonic() + budget
        self.log = (out / "gpu.log").open("w")
        self.steps: list[dict[str, Any]] = []
        self.env = {
            **os.environ,
            "HPATOOL_HOME": str(work / "home"),
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
            ),
        }

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def note(self, text: str) -> None:
        print(text, flush=True)
        self.log.write(text + "\n")
        self.log.flush()

    def run(self, name: str, cmd: list[str], limit: float, **extra: Any) -> dict[str, Any]:
        limit = min(limit, self.left())
        step: dict[str, Any] = {"step": name, "cmd": " ".join(cmd), **extra}
        if limit < 5:
            step.update(rc=None, skipped="out of time")
            self.note(f"### {name}: skipped, out of time")
            self.steps.append(step)
            return step
        self.note(f"### {name}: {' '.join(cmd)}  (limit {limit:.0f} s)")
        t0 = time.monotonic()
        try:
            proc = subprocess.run(
                cmd,
                cwd=self.work,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=limit,
            )
            rc, output = proc.returncode, proc.stdout
        except subprocess.TimeoutExpired as exc:
            rc = "timeout"
            output = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode()
        step.update(rc=rc, seconds=round(time.monotonic() - t0, 1))
        self.log.write(output)
        self.note(f"### {name}: rc={rc} in {step['seconds']} s\n")
        step["tail"] = output[-1500:]
        self.steps.append(step)
        return step

    def hpatool(self, name: str, args: list[str], limit: float, **extra: Any) -> dict[str, Any]:
        return self.run(name, [sys.executable, "-m", "hpatool", *args], limit, **extra)

    def save(self) -> None:
        (self.out / "gpu.json").write_text(json.dumps(self.steps, indent=1))


def metrics(run: Path) -> list[dict[str, str]]:
    path = run / "metrics.csv"
    if not path.exists():
        return []
    with path.open() as fh:
        return list(csv.DictReader(fh))


def stopped_then_resumed(r: Runner, train: list[str], name: str, limit: float) -> None:
    """Start a run, SIGTERM it once its first checkpoint exists, then --resume it."""
    last = r.work / "runs" / name / "checkpoint-last.pt"
    cmd = [sys.executable, "-m", "hpatool", *train, "--name", name]
    r.note(f"### stop-after-epoch-1: {' '.join(cmd)}")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=r.work,
        env={**r.env, "PYTHONFAULTHANDLER": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    step: dict[str, Any] = {"step": "stop-after-epoch-1", "cmd": " ".join(cmd)}
    while not last.exists() and proc.poll() is None and time.monotonic() - t0 < limit:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    try:
        output, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        # still alive 20 s after SIGTERM: show what it waits for (faulthandler prints every
        # thread's stack on SIGABRT), then kill it
        ps = subprocess.run(
            ["ps", "-o", "pid,ppid,stat,wchan:20,etime,cmd", "-g", str(os.getpgid(proc.pid))],
            capture_output=True,
            text=True,
        )
        r.note(f"### still running 20 s after SIGTERM:\n{ps.stdout}")
        proc.send_signal(signal.SIGABRT)
        try:
            output, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
    step["exit_after_sigterm_s"] = round(time.monotonic() - stopped_at, 1)
    r.log.write(output)
    step.update(rc=proc.returncode, seconds=round(time.monotonic() - t0, 1), tail=output[-800:])
    r.note(
        f"### stop-after-epoch-1: rc={proc.returncode} in {step['seconds']} s, "
        f"{step['exit_after_sigterm_s']} s after SIGTERM\n"
    )
    r.steps.append(step)
    r.hpatool("resume", ["train", "--resume", "--name", name, "--out", "runs"], limit)


# ------------------------------------------------------------------ the figures (issue 12)


def amp_choice() -> str:
    """What ``train`` uses on this GPU (``engine.training.build``): bf16 where supported, else
    fp16."""
    import torch

    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_gib(device: Any) -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0


def reset_peak(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def train_figures(
    model: Any, crop: int, batch: int, steps: int, dtype: Any, device: Any
) -> tuple[float, float]:
    """Images/s of ``steps`` training steps (after 3 warm-up steps) of ``model`` with the run's
    own loop ``train_one_epoch`` over one batch held on the GPU, and the peak GiB allocated."""
    import torch

    from hpatool.engine.training.optim import create_loss, create_optimizer, create_scheduler
    from hpatool.engine.training.steps import train_one_epoch

    opt = create_optimizer(model, 1e-3, 1e-4)
    sched = create_scheduler(opt, 10 * steps)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    x = torch.randn(batch, 4, crop, crop, device=device)
    y = (torch.rand(batch, 28, device=device) < 0.1).float()
    loss = create_loss("bce")
    seconds = []
    for n in (3, steps):  # the first turn warms up: cudnn picks its kernels
        sync(device)
        t0 = time.perf_counter()
        train_one_epoch(
            model, loss, opt, sched, scaler, [(x, y)] * n, device,
            amp_dtype=dtype, channels_last=True,
        )  # fmt: skip
        sync(device)
        seconds.append(time.perf_counter() - t0)
    return batch * steps / seconds[-1], peak_gib(device)


def one_config(
    arch: str, crop: int, batch: int, steps: int, pred_batch: int, device_name: str = "cuda"
) -> dict[str, Any]:
    """Training figures (``train_figures``) of ``arch`` at ``crop`` with AMP as ``train`` picks
    it and channels_last, then scoring ``pred_batch``-image batches of 8 crops each
    (``engine.scoring.score``'s forward pass, as ``predict`` runs it)."""
    import torch

    from hpatool.engine.models.factory import create_model
    from hpatool.engine.scoring.score import _forward as score_forward

    device = torch.device(device_name)
    amp = amp_choice() if device.type == "cuda" else "bf16"
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    row: dict[str, Any] = {"arch": arch, "crop": crop, "amp": amp}
    reset_peak(device)
    model = create_model(arch).to(device).to(memory_format=torch.channels_last)
    img_s, peak = train_figures(model, crop, batch, steps, dtype, device)
    row["train_img_s"], row["train_peak_gib"] = round(img_s, 1), round(peak, 2)
    model.eval()
    reset_peak(device)
    stacks = [torch.randn(8, 4, crop, crop) for _ in range(pred_batch)]
    reps = 3
    with torch.inference_mode():
        score_forward(model, stacks, device, dtype)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            score_forward(model, stacks, device, dtype)
        sync(device)
    row["predict8_img_s"] = round(reps * pred_batch / (time.perf_counter() - t0), 1)
    row["predict_peak_gib"] = round(peak_gib(device), 2)
    # predict's forward pass autocasts with the dtype the run trained in (issue 17)
    row["predict_amp"] = str(dtype).replace("torch.", "")
    return row


def table(
    r: Runner, archs: list[str], crops: list[int], batch: int, steps: int, pred_batch: int
) -> None:
    """Each arch at each crop (``one_config``): images/s and peak GPU memory of training and of
    8-crop prediction. From memory: the GPU's speed, not the decoding's."""
    import torch

    torch.backends.cudnn.benchmark = True
    rows: list[dict[str, Any]] = []
    r.note(f"### table: AMP {amp_choice()}, channels_last, batch {batch}, {steps} timed steps")
    for arch in archs:
        for crop in crops:
            if r.left() < 20:
                r.note(f"### table {arch} {crop}: skipped, out of time")
                continue
            try:
                row = one_config(arch, crop, batch, steps, pred_batch)
            except Exception as exc:  # recorded (out of memory at 1024, say); the next runs
                row = {"arch": arch, "crop": crop, "amp": amp_choice()}
                row["error"] = f"{type(exc).__name__}: {exc}"[:500]
                torch.cuda.empty_cache()
            r.note(f"### table {json.dumps(row)}")
            rows.append(row)
    r.steps.append({"step": "table", "batch": batch, "steps": steps, "rows": rows})
    head = ["arch", "crop", "AMP", "train img/s", "train peak GiB", "8-crop predict img/s"]
    r.note("| " + " | ".join([*head, "predict peak GiB", "predict AMP"]) + " |")
    r.note("|---" * (len(head) + 2) + "|")
    keys = ["arch", "crop", "amp", "train_img_s", "train_peak_gib", "predict8_img_s"]
    for row in rows:
        cells = [str(row.get(k, "-")) for k in [*keys, "predict_peak_gib", "predict_amp"]]
        r.note("| " + " | ".join(cells) + " |" + (f" {row['error']}" if "error" in row else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=384)
    parser.add_argument("--budget", type=float, default=420, help="seconds for all steps")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated: table,train,resume,ddp,irv2,score,cv,bench (default: all; the CLI"
        " steps after synth/datasets add/split)",
    )
    parser.add_argument("--archs", default="resnet50,inceptionresnetv2", help="for the table")
    parser.add_argument(
        "--crops", default="1024,512,256", help="for the table (1024: the high-resolution path)"
    )
    parser.add_argument("--table-batch", type=int, default=32)
    parser.add_argument("--table-steps", type=int, default=10)
    parser.add_argument("--predict-batch", type=int, default=16, help="images (x 8 crops)")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device here: nothing to measure (run it on a GPU machine)")
        return
    only = {x.strip() for x in args.only.split(",") if x.strip()}

    def want(group: str) -> bool:
        return not only or group in only

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / "hpatool-gpu"
    work.mkdir(parents=True, exist_ok=True)
    r = Runner(args.out, work, args.budget)
    w = str(args.workers)
    try:
        r.run(
            "environment",
            [
                sys.executable,
                "-c",
                "import torch, timm, sys; print(sys.version); print('torch', torch.__version__,"
                " 'cuda', torch.version.cuda, 'timm', timm.__version__);"
                " print(torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0));"
                " print('bf16', torch.cuda.is_bf16_supported())",
            ],
            60,
        )
        if want("table"):
            table(
                r,
                [a for a in args.archs.split(",") if a],
                [int(c) for c in args.crops.split(",") if c],
                args.table_batch,
                args.table_steps,
                args.predict_batch,
            )
        if only and only <= {"table"}:
            return
        r.hpatool("synth", ["synth", "data", "--samples", str(args.samples), "--workers", w], 120)
        r.hpatool(
            "datasets add",
            ["datasets", "add", "syn", "--labels", "data/labels.csv", "--root", "data"],
            60,
        )
        r.hpatool("split", ["split", "syn", "--folds", "4"], 60)
        train = [
            "train",
            "--dataset",
            "syn",
            "--device",
            "cuda",
            "--epochs",
            "2",
            "--batch-size",
            str(args.batch_size),
            "--crop",
            str(args.crop),
            "--workers",
            w,
            "--out",
            "runs",
        ]
        if want("train") or want("score"):
            r.hpatool("train resnet50", [*train, "--name", "r50"], 150)
        if want("resume"):
            stopped_then_resumed(r, [*train, "--checkpoint-every", "3"], "r50-resumed", 150)
            full = metrics(work / "runs" / "r50")
            resumed = metrics(work / "runs" / "r50-resumed")
            r.steps.append({"step": "compare", "uninterrupted": full, "resumed": resumed})
            r.note(f"### metrics uninterrupted: {full}\n### metrics resumed: {resumed}\n")
        if want("ddp"):
            ddp = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1"]
            r.run(
                "torchrun 1 GPU",
                [sys.executable, *ddp, "-m", "hpatool", *train, "--epochs", "1", "--name", "ddp"],
                150,
            )
        if want("irv2"):
            irv2 = ["--arch", "inceptionresnetv2", "--max-steps", "12", "--name", "irv2"]
            r.hpatool("train inceptionresnetv2", [*train, *irv2], 150)
        if want("score"):
            score = ["--dataset", "syn", "--run", "r50", "--device", "cuda", "--crops", "8"]
            r.hpatool("evaluate", ["evaluate", *score, "--workers", w], 120)
            r.hpatool("predict", ["predict", *score, "--workers", w, "--out", "sub.csv"], 120)
        if want("cv"):
            # issue 12 on CUDA: two folds through `cv`, a third through a 1-GPU torchrun `cv`
            # (the same experiment), the experiment's OOF summary, and an ensemble submission
            cv = [*train[: train.index("--out")], "--out", "runs", "--epochs", "1"]
            cv[0] = "cv"
            r.hpatool("cv 2 folds", [*cv, "--name", "gcv", "--fold", "0", "--fold", "1"], 150)
            ddp = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1"]
            r.run(
                "torchrun 1 GPU cv fold 2",
                [sys.executable, *ddp, "-m", "hpatool", *cv, "--name", "gcv", "--fold", "2"],
                150,
            )
            r.hpatool("experiments show", ["experiments", "show", "gcv", "--json"], 60)
            ensemble = ["--dataset", "syn", "--experiment", "gcv", "--device", "cuda"]
            r.hpatool(
                "predict --experiment",
                ["predict", *ensemble, "--workers", w, "--out", "ens.csv", "--probs", "ens-p.csv"],
                120,
            )
        if want("bench"):
            common = ["--device", "cuda", "--crop", str(args.crop)]
            bench_train = ["--batch-size", str(args.batch_size), "--steps", "16", "--repeats", "2"]
            r.run(
                "benchmarks/train.py",
                [
                    sys.executable,
                    str(REPO / "benchmarks" / "train.py"),
                    *common,
                    *bench_train,
                    "--workers",
                    f"{max(1, args.workers // 2)},{w}",
                    "--samples",
                    "96",
                ],
                200,
            )
            bench_predict = ["--arch", "resnet50", "--images", "32", "--crops", "8"]
            r.run(
                "benchmarks/predict.py",
                [
                    sys.executable,
                    str(REPO / "benchmarks" / "predict.py"),
                    *common,
                    *bench_predict,
                    "--batch-size",
                    "8",
                ],
                90,
            )
    finally:
        r.save()


if __name__ == "__main__":
    main()
