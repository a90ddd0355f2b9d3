"""The 1024 px path on this machine's CPU (issue 19): what a sample costs to read and what a
training step costs, at 512 and 1024 px, from the real full-resolution fields.

Run: .venv/bin/python benchmarks/highres.py [--arch resnet50] [--batch 2] [--steps 3]

1. ``preprocess`` the three real 2048 px Kaggle fields of ``../shared/data/hpa/real/fullres_png``
   to 512 and to 1024 px (the library function ``preprocess --size`` calls);
2. the mean time to read one sample (its four PNGs: ``imaging.read_sample``) and one decoded
   cache array (``np.load`` with ``mmap_mode``, what ``datasets cache`` gives) at each size;
3. for each crop (256, 512, 1024): a training step of ``--arch`` on ``--batch`` random 4-channel
   images on the CPU (forward, backward, AdamW), in a fresh process each: seconds per image and
   the process's peak resident memory (``ru_maxrss``).

The GPU figures of the same sizes come from ``benchmarks/gpu.py`` (its table's crop 1024).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
FULLRES = REPO.parent / "shared" / "data" / "hpa" / "real" / "fullres_png"


def read_costs(work: Path) -> dict[int, dict[str, float]]:
    from hpatool.imaging import read_sample
    from hpatool.options import PreprocessConfig
    from hpatool.preprocess import preprocess_images

    ids = sorted({p.name.rsplit("_", 1)[0] for p in FULLRES.glob("*.png")})
    out: dict[int, dict[str, float]] = {}
    for size in (512, 1024):
        folder = work / str(size)
        config = PreprocessConfig(size=size, workers=1)
        preprocess_images(FULLRES, folder, config, register=False)
        started = time.perf_counter()
        arrays = [read_sample(folder, i) for _ in range(5) for i in ids]
        png_ms = (time.perf_counter() - started) / len(arrays) * 1000
        for i in ids:
            np.save(folder / f"{i}.npy", read_sample(folder, i))
        started = time.perf_counter()
        for _ in range(20):
            for i in ids:
                np.array(np.load(folder / f"{i}.npy", mmap_mode="r"))
        npy_ms = (time.perf_counter() - started) / (20 * len(ids)) * 1000
        out[size] = {"png_ms": png_ms, "npy_ms": npy_ms, "mib": arrays[0].nbytes / 2**20}
    return out


def step_cost(arch: str, crop: int, batch: int, steps: int) -> dict[str, float]:
    """Run in a fresh process: seconds per image of a training step and peak RSS."""
    import torch

    from hpatool.engine.models.factory import create_model

    torch.manual_seed(0)
    model = create_model(arch, in_chans=4, num_classes=28)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 4, crop, crop)
    y = (torch.rand(batch, 28) < 0.1).float()

    def step() -> None:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    started = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - started) / (steps * batch)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    return {"s_per_image": seconds, "peak_rss_gib": peak}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--crops", default="256,512,1024")
    ap.add_argument("--step", help=argparse.SUPPRESS)  # internal: one crop, in this process
    args = ap.parse_args()
    if args.step:
        print(json.dumps(step_cost(args.arch, int(args.step), args.batch, args.steps)))
        return 0
    if not FULLRES.is_dir():
        print(f"needs the real full-resolution fields: {FULLRES} is absent")
        return 0
    with tempfile.TemporaryDirectory(prefix="hpatool-highres-") as tmp:
        costs = read_costs(Path(tmp))
    print("reading one sample (4 channels), real fields resized from 2048 px:")
    for size, c in costs.items():
        print(
            f"  {size:>4} px: {c['mib']:.1f} MiB decoded, PNGs {c['png_ms']:.1f} ms, "
            f"decoded cache {c['npy_ms']:.2f} ms"
        )
    print(f"a training step of {args.arch} on the CPU, batch {args.batch}:")
    for crop in [int(c) for c in args.crops.split(",")]:
        cmd = [sys.executable, __file__, "--step", str(crop), "--arch", args.arch,
               "--batch", str(args.batch), "--steps", str(args.steps)]  # fmt: skip
        doc = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        print(
            f"  crop {crop:>4}: {doc['s_per_image']:.2f} s/image, "
            f"peak RSS {doc['peak_rss_gib']:.2f} GiB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
