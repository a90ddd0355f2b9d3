"""Training throughput: the real data pipeline vs the same steps on tensors already in memory.

Run: .venv/bin/python benchmarks/train.py [--arch resnet50] [--crop 256] [--batch-size 8] [--cache]
     [--steps 5] [--repeats 4] [--workers 0,2] [--samples 64] [--size 512] [--device cpu|cuda]

Writes ``--samples`` synthetic 512x512 HPA-like samples (``hpatool.synth``), then times the
training step loop of ``hpatool train`` (forward, BCE, backward, fused AdamW) two ways:

- pipeline: ``HpaDataset`` (four PNG decodes, random crop, dihedral transform, normalisation)
  behind the run's ``WeightedEpochSampler`` and a ``DataLoader`` with ``--workers`` processes;
- memory: the first batches of that pipeline, prepared beforehand and held as tensors.

Each mode runs ``--repeats`` times ``--steps`` timed steps (after one warm-up step; with N
workers after 1 + 2N, the batches the workers make at once before the steady state), the modes
taking turns in a rotating order; reported are images/s from the median step time (robust to
other processes briefly taking the CPU) and over all timed steps, and the ratio pipeline /
memory. Target: the pipeline costs at most 10% (ratio >= 0.90) with ``--workers`` >= 2.
On CUDA it also reports both archs with AMP + channels_last.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hpatool.data.samples import HpaDataset, Item  # noqa: E402
from hpatool.data.sampling import WeightedEpochSampler, auto_multipliers, sample_weights  # noqa: E402
from hpatool.data.transforms import normalize  # noqa: E402
from hpatool.engine.models.factory import create_model  # noqa: E402
from hpatool.engine.training.optim import create_optimizer  # noqa: E402
from hpatool.synth import synth_dataset  # noqa: E402


def make_loader(
    items: list[Item], crop: int, batch: int, workers: int, seed: int, pin: bool
) -> DataLoader[tuple[torch.Tensor, torch.Tensor]]:
    ds = HpaDataset(items, crop)
    weights = sample_weights(ds.targets, auto_multipliers(ds.targets))
    sampler = WeightedEpochSampler(weights, num_samples=10_000, seed=seed)
    sampler.set_epoch(0)
    return DataLoader(
        ds,
        batch_size=batch,
        sampler=sampler,
        drop_last=True,
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=workers > 0,
    )


def run_steps(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    device: torch.device,
    amp: bool,
    channels_last: bool,
    warmup: int = 1,
) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds (this process, all threads) of each of ``steps`` training steps
    (data wait included), after ``warmup`` untimed steps."""
    model.train()
    times: list[float] = []
    cpu: list[float] = []
    last = last_cpu = 0.0
    for done, (xb, yb) in enumerate(batches):
        x = normalize(xb.to(device, non_blocking=True))  # uint8 from the loader, as in train
        y = yb.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        now, now_cpu = time.perf_counter(), time.process_time()
        if done >= warmup:
            times.append(now - last)
            cpu.append(now_cpu - last_cpu)
        last, last_cpu = now, now_cpu
        if done + 1 >= warmup + steps:
            break
    return times, cpu


def bench(
    arch: str,
    items: list[Item],
    args: argparse.Namespace,
    device: torch.device,
    amp: bool,
    channels_last: bool,
    workers_list: list[int],
) -> dict[str, tuple[float, float, float]]:
    """Per mode: (images/s from the median step time, images/s over all timed steps, CPU
    seconds per image in this process)."""
    torch.manual_seed(0)
    model = create_model(arch).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = create_optimizer(model, 1e-4, 0.01)
    pin = device.type == "cuda"
    n = args.steps + 1
    # the exact batches the pipeline will produce, held in memory
    held = []
    for i, batch in enumerate(make_loader(items, args.crop, args.batch_size, 0, 0, False)):
        held.append(batch)
        if i + 1 >= n:
            break
    modes: dict[str, Iterable[tuple[torch.Tensor, torch.Tensor]]] = {"memory": held}
    for w in workers_list:
        modes[f"pipeline workers={w}"] = make_loader(items, args.crop, args.batch_size, w, 0, pin)
    times: dict[str, list[float]] = {k: [] for k in modes}
    cpu: dict[str, list[float]] = {k: [] for k in modes}
    order = list(modes)
    for r in range(args.repeats):
        # rotate the order, so that no mode always runs first (or after another one)
        for key in order[r % len(order) :] + order[: r % len(order)]:
            # every worker makes its first batches at once, while the first step runs: time
            # the steps after those (up to prefetch_factor 2 per worker), the steady state
            w = int(key.rsplit("=", 1)[1]) if key != "memory" else 0
            wall, used = run_steps(
                model, optimizer, modes[key], args.steps, device, amp, channels_last, 1 + 2 * w
            )
            times[key] += wall
            cpu[key] += used
    b = args.batch_size
    return {
        k: (b / statistics.median(v), b * len(v) / sum(v), sum(cpu[k]) / (b * len(v)))
        for k, v in times.items()
    }


def report(title: str, res: dict[str, tuple[float, float, float]], pipeline_cpu: float) -> None:
    print(f"\n{title}")
    print(f"  {'':<22} {'median step':>12} {'all steps':>10}   ratio to memory (median, all)")
    mem_med, mem_all, mem_cpu = res["memory"]
    for key, (med, total, _) in res.items():
        label = "in-memory tensors" if key == "memory" else key
        line = f"  {label:<22} {med:8.2f} im/s {total:6.2f} im/s"
        if key != "memory":
            line += (
                f"   {med / mem_med:.3f}, {total / mem_all:.3f}  "
                f"(pipeline cost {100 * (1 - med / mem_med):+.1f}%)"
            )
        print(line)
    share = pipeline_cpu / (pipeline_cpu + mem_cpu)
    print(
        f"  CPU per image: training step {mem_cpu:.3f} s, data pipeline {pipeline_cpu:.3f} s: "
        f"the pipeline is {100 * share:.1f}% of the CPU work (its wall-clock cost with workers "
        "when every core is busy training; less with spare cores)"
    )


def cached_items(items: list[Item], data: Path, home: Path) -> list[Item]:
    """``items`` pointed at a decoded cache of ``data``, built in registry home ``home``."""
    from hpatool.catalog import add_dataset
    from hpatool.data.cache import use_cache
    from hpatool.data.cache_build import build_cache
    from hpatool.registry import Registry

    t0 = time.perf_counter()
    with Registry.open(home) as reg:
        add_dataset(reg, "bench", labels=data / "labels.csv", root=data)
        build_cache(reg, "bench", workers=2)
        view = use_cache(reg, "bench")
    assert view is not None
    print(f"decoded cache of {len(items)} samples built in {time.perf_counter() - t0:.1f} s")
    return [Item(it.dataset, it.root, it.id, it.target, view.path(it.id)) for it in items]


def per_sample_costs(crop: int, batch: int, repeats: int = 5) -> None:
    """CPU ms per training sample (read + random crop + dihedral transform + collate into a
    uint8 batch) on the 60 real Kaggle samples: the PNGs through Pillow (the fast decoder
    switched off), through pyspng (the default), and from the decoded cache. Best of
    ``repeats`` passes; the cache is built in a temporary registry home first."""
    from torch.utils.data import default_collate

    from hpatool import imaging
    from hpatool.catalog import add_dataset
    from hpatool.data.cache import use_cache
    from hpatool.data.cache_build import build_cache
    from hpatool.registry import Registry

    root = REPO.parent / "shared" / "data" / "hpa" / "real" / "kaggle_train_512"
    if not root.is_dir():
        print(f"no real samples at {root}: nothing to measure")
        return
    with tempfile.TemporaryDirectory() as tmp, Registry.open(Path(tmp)) as reg:
        add_dataset(reg, "real", labels=root / "labels.csv", root=root)
        build_cache(reg, "real", workers=1)
        view = use_cache(reg, "real")
        assert view is not None
        with (root / "labels.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        items = [
            Item("real", root, r["Id"], tuple(int(v) for v in r["Target"].split())) for r in rows
        ]
        cached = [Item(it.dataset, it.root, it.id, it.target, view.path(it.id)) for it in items]

        def cost(ds: HpaDataset) -> float:
            best = float("inf")
            for rep in range(repeats):
                t0 = time.process_time()
                for start in range(0, len(ds), batch):
                    default_collate(
                        [
                            ds[(i, 1000 * rep + i)]
                            for i in range(start, start + batch)
                            if i < len(ds)
                        ]
                    )
                best = min(best, (time.process_time() - t0) / len(ds))
            return best * 1000

        fast = imaging._decode_fast
        imaging._decode_fast = lambda path: None  # type: ignore[assignment]
        try:
            pillow = cost(HpaDataset(items, crop))
        finally:
            imaging._decode_fast = fast  # type: ignore[assignment]
        spng = cost(HpaDataset(items, crop))
        cache = cost(HpaDataset(cached, crop))
    print(f"CPU ms per training sample, crop {crop}, batches of {batch}, 60 real 512 px samples:")
    print(f"  PNGs, Pillow        {pillow:7.3f}")
    print(f"  PNGs, pyspng        {spng:7.3f}  ({pillow / spng:.2f}x)")
    print(f"  decoded cache       {cache:7.3f}  ({pillow / cache:.1f}x; target <= 1 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--workers", default="0,2", help="comma-separated worker counts")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data", type=Path, default=None, help="reuse a synth folder")
    parser.add_argument(
        "--cache",
        action="store_true",
        help="read the samples from a decoded cache ('hpatool datasets cache') built first",
    )
    parser.add_argument(
        "--per-sample",
        action="store_true",
        help="only the CPU cost per training sample on the real 512 px samples in ../shared: "
        "PNGs through Pillow, through the fast decoder, and from the decoded cache",
    )
    args = parser.parse_args()
    if args.per_sample:
        per_sample_costs(args.crop, args.batch_size)
        return
    workers_list = [int(w) for w in args.workers.split(",") if w.strip()]
    device = torch.device(args.device)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    )
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or Path(tmp) / "synth"
        if not (data / "labels.csv").exists():
            t0 = time.perf_counter()
            synth_dataset(data, samples=args.samples, size=args.size, seed=0, workers=2)
            print(
                f"synthesised {args.samples} samples of {args.size}px in "
                f"{time.perf_counter() - t0:.1f} s"
            )
        with (data / "labels.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        items = [
            Item("bench", data, r["Id"], tuple(int(v) for v in r["Target"].split())) for r in rows
        ]
        if args.cache:
            items = cached_items(items, data, Path(tmp) / "home")
        ds = HpaDataset(items, args.crop)
        n = min(32, len(ds))
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(n):
            ds[(i, i)]
        per_sample = (time.perf_counter() - t0) / n
        per_sample_cpu = (time.process_time() - c0) / n
        source = "the decoded cache" if args.cache else "4 PNG decodes"
        print(
            f"one sample through the pipeline ({source} + crop + transform): "
            f"{1000 * per_sample:.1f} ms wall, {1000 * per_sample_cpu:.1f} ms CPU"
        )

        title = (
            f"{args.arch}, crop {args.crop}, batch {args.batch_size}, {args.steps} steps "
            f"x {args.repeats} repeats, fp32 on {device}"
        )
        res = bench(args.arch, items, args, device, False, False, workers_list)
        report(title, res, per_sample_cpu)
        if device.type == "cuda":
            for arch in ("resnet50", "inceptionresnetv2"):
                res = bench(arch, items, args, device, True, True, workers_list)
                report(
                    f"{arch}, crop {args.crop}, batch {args.batch_size}, AMP bf16 + "
                    f"channels_last on {device}",
                    res,
                    per_sample_cpu,
                )


if __name__ == "__main__":
    main()
