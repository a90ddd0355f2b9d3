"""Draft-mode JPEG decode vs full decode + LANCZOS, and ``preprocess --workers 2`` vs 1.

Run: .venv/bin/python benchmarks/preprocess.py [--images 8] [--size 512]

Makes synthetic HPA-like 2048x2048 RGB JPEGs (fluorescence-like fields: smooth cells, finer
texture, sensor noise; one stain per file in its own band, quality 90), then times per image:

- full: ``Image.open`` + full decode + take the stain's band + ``resize(LANCZOS)`` to --size;
- draft: ``hpatool.imaging.convert_channel`` (libjpeg decodes at 1/2, 1/4 or 1/8 scale, then
  LANCZOS to --size),

and reports the speed-up and the mean absolute difference (grey levels) between the two; then
the wall time of ``preprocess_images`` over the folder with 1 and 2 worker processes.
Targets: draft >= 2.5x faster, MAD <= 2 grey levels.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hpatool.imaging import STAIN_BANDS, convert_channel  # noqa: E402
from hpatool.options import PreprocessConfig  # noqa: E402
from hpatool.preprocess import preprocess_images  # noqa: E402
from tests.integration.hpa_server import fluorescence, stain_rgb  # noqa: E402

COLOURS = ("red", "green", "blue", "yellow")


def full_decode(path: Path, colour: str, size: int, rule: str) -> np.ndarray:
    with Image.open(path) as img:
        img.load()
        channel = img.convert("L") if rule == "luma" else img.getchannel(STAIN_BANDS[colour])
        return np.asarray(channel.resize((size, size), Image.Resampling.LANCZOS))


def per_image(fn, files: list[tuple[Path, str]], repeat: int) -> tuple[float, list[np.ndarray]]:  # type: ignore[no-untyped-def]
    """Median over ``repeat`` passes of the mean seconds per image; the outputs of one pass."""
    outs = [fn(p, c) for p, c in files]  # warm-up (file cache, imports)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for p, c in files:
            fn(p, c)
        times.append((time.perf_counter() - t0) / len(files))
    return statistics.median(times), outs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=8, help="2048x2048 JPEGs to make")
    parser.add_argument("--source-size", type=int, default=2048)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument(
        "--folder-images",
        type=int,
        default=48,
        help="files in the folder for the --workers comparison (copies)",
    )
    args = parser.parse_args()
    print(
        f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"Pillow {Image.__version__}; load average {os.getloadavg()[0]:.1f} before the run"
    )
    with tempfile.TemporaryDirectory(prefix="hpatool-bench-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        files: list[tuple[Path, str]] = []
        for k in range(args.images):
            colour = COLOURS[k % 4]
            path = src / f"{1000 + k // 4}_1_A1_{k // 4}_{colour}.jpg"
            grey = fluorescence(k, args.source_size)
            Image.fromarray(stain_rgb(grey, colour)).save(path, quality=args.quality)
            files.append((path, colour))
        mb = sum(p.stat().st_size for p, _ in files) / len(files) / 1e6
        print(
            f"{len(files)} synthetic {args.source_size}x{args.source_size} RGB JPEGs "
            f"(quality {args.quality}, {mb:.2f} MB each) -> {args.size}x{args.size}"
        )
        for rule in ("stain", "luma"):
            t_full, ref = per_image(
                lambda p, c, rule=rule: full_decode(p, c, args.size, rule), files, args.repeat
            )
            t_draft, got = per_image(
                lambda p, c, rule=rule: convert_channel(p, c, args.size, rule), files, args.repeat
            )
            mad = float(
                np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(ref, got, strict=True)])
            )
            worst = max(int(np.abs(a.astype(int) - b).max()) for a, b in zip(ref, got, strict=True))
            print(
                f"rule {rule}: full decode + LANCZOS {t_full * 1000:.1f} ms/image, draft "
                f"{t_draft * 1000:.1f} ms/image: {t_full / t_draft:.2f}x faster; mean abs "
                f"difference {mad:.3f} grey levels (max {worst})"
            )
        folder = Path(tmp) / "folder"
        folder.mkdir()
        for k in range(args.folder_images):
            path, colour = files[k % len(files)]
            os.link(path, folder / f"{2000 + k // 4}_1_B1_{k // 4}_{COLOURS[k % 4]}.jpg")
        walls = {}
        for workers in (1, 2):
            out = Path(tmp) / f"out{workers}"
            t0 = time.perf_counter()
            summary = preprocess_images(
                folder, out, PreprocessConfig(size=args.size, workers=workers)
            )
            walls[workers] = time.perf_counter() - t0
            n = args.folder_images
            assert summary.converted == n, summary
            print(
                f"preprocess --workers {workers}: {walls[workers]:.2f} s for {n} images "
                f"({walls[workers] / n * 1000:.1f} ms/image: decode, resize, PNG write; "
                "pool start-up included)"
            )
        print(f"speed-up of --workers 2 over --workers 1: {walls[1] / walls[2]:.2f}x")


if __name__ == "__main__":
    main()
