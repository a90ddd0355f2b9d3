"""Crop TTA: 8 crops of an image in one batched forward pass vs. 8 passes of one crop each.

Run: python benchmarks/predict.py                 (a sweep: resnet50 at 256, resnet18 at 128,
                                                   resnet10t at 64, as the demo scores)
     python benchmarks/predict.py --arch resnet50 --crop 256 --images 8 --crops 8
Target: batching is at least 1.5x faster on CPU.

Both paths score the same crops with the same model in eval mode under ``inference_mode``; the
batched path is what ``hpatool predict`` does (``hpatool.engine.scoring.score.score``, images read
from
PNGs on disk), the separate path calls the model once per crop. The images are synthetic
512x512 HPA-like samples written by ``hpatool.synth``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from hpatool.data.transforms import HPA_MEAN, HPA_STD, to_tensor
from hpatool.engine.models.factory import create_model
from hpatool.engine.scoring.score import ScoreItem, score
from hpatool.engine.views import View, crop_windows
from hpatool.imaging import read_sample
from hpatool.synth import synth_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default=None, help="one model (default: the sweep)")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--crops", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=1, help="images per batched pass")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    if args.arch is not None:
        bench(args)
        return
    for arch, crop, size, images in SWEEP:
        bench(
            argparse.Namespace(
                **{**vars(args), "arch": arch, "crop": crop, "size": size, "images": images}
            )
        )


SWEEP = [("resnet50", 256, 512, 6), ("resnet18", 128, 512, 12), ("resnet10t", 64, 128, 32)]


def bench(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = create_model(args.arch).eval().to(device, memory_format=torch.channels_last)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "imgs"
        result = synth_dataset(root, samples=args.images, size=args.size, seed=0)
        items = [ScoreItem(i, root, sid) for i, sid in enumerate(result.ids)]

        def batched() -> dict[int, np.ndarray]:
            return score(
                model,
                items,
                View(args.crop, args.crops, "max", "crops"),
                mean=HPA_MEAN,
                std=HPA_STD,
                batch_size=args.batch_size,
                workers=0,
                device=device,
                seed=0,
            ).probs

        def separate() -> dict[int, np.ndarray]:
            out = {}
            with torch.inference_mode():
                for t in items:
                    img = read_sample(t.root, t.id)
                    windows = crop_windows(t.index, args.size, args.size, args.crop, args.crops, 0)
                    probs = []
                    for top, left in windows:
                        x = to_tensor(img[:, top : top + args.crop, left : left + args.crop])
                        x = x.unsqueeze(0).to(device, memory_format=torch.channels_last)
                        with torch.autocast(device.type, enabled=device.type == "cuda"):
                            probs.append(torch.sigmoid(model(x).float())[0])
                    out[t.index] = torch.stack(probs).max(dim=0).values.cpu().numpy()
            return out

        batched()  # warm-up, both shapes
        separate()
        times = {"batched": [], "separate": []}
        for _ in range(args.repeat):
            for name, fn in (("separate", separate), ("batched", batched)):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                fn()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
        a, b = batched(), separate()
        diff = max(float(np.abs(a[i] - b[i]).max()) for i in a)
    best = {k: min(v) for k, v in times.items()}
    print(
        f"{args.arch}, {args.images} images of {args.size}px, {args.crops} crops of "
        f"{args.crop}px, torch threads {torch.get_num_threads()}, {device}"
    )
    for name in ("batched", "separate"):
        print(
            f"  {name:9s} {args.images / best[name]:6.2f} images/s "
            f"({best[name]:.2f} s, best of {args.repeat})"
        )
    print(
        f"  batched / separate speed-up: {best['separate'] / best['batched']:.2f}x "
        f"(target >= 1.5x); max |probability difference| {diff:.2e}"
    )


if __name__ == "__main__":
    main()
