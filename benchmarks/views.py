"""Views compared by the held-out out-of-fold macro F1 (issue 17), and what validating with
the evaluation view costs.

Run: .venv/bin/python benchmarks/views.py [--samples 400] [--size 96] [--crop 48] [--epochs 6]
     [--folds 5] [--arch resnet10t] [--seeds 0,1,2] [--val-view-folds 0,1] [--keep DIR]

Makes a synthetic dataset (``hpatool.synth``, as the demo does) in a temporary folder, splits it
into ``--folds`` folds and trains one run per fold with ``hpatool.engine.training.fit.fit``
(validation
on the centre crop, the default). Each run's best checkpoint then scores its validation fold
with every view below, on the same samples and seed; for each view the script prints the
out-of-fold macro F1 across all folds:

- **held out**: fold k's predictions thresholded with thresholds tuned on the other folds'
  predictions only (``metrics.crossfit``, what ``experiments show`` reports now);
- **in sample**: thresholds tuned on all of them and scored on them (what it reported before);

and the share of each image's pixels the view sees. The views: the centre crop; 8 random crops
(max, mean); the grid of ``--crop`` windows covering the image (max, mean); the grid under 2 and
8 flips/rotations (max, mean). The image is ``--size`` px and the crop ``--crop`` px: 96 / 48
has the geometry of a 512 px Kaggle image scored with 256 px windows (a 2x2 grid).

``--seeds`` repeats everything (data, split, training) per seed and prints the mean held-out
figure of each view. ``--val-view-folds`` trains those folds of the first seed again with
``--val-view eval`` (validation on the run's evaluation view, the default view) and prints
the training and validation seconds per epoch of both, the best epochs they chose and the
held-out OOF macro F1 of those folds' final ``oof.csv`` both ways.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hpatool.catalog import add_dataset  # noqa: E402
from hpatool.data.split import split_dataset  # noqa: E402
from hpatool.engine.metrics import crossfit, macro_f1, tune_thresholds  # noqa: E402
from hpatool.engine.views import View, view_windows  # noqa: E402
from hpatool.registry import Registry  # noqa: E402
from hpatool.synth import synth_dataset  # noqa: E402

VIEWS = [
    ("centre crop", 1, "max", "crops"),
    ("8 random crops", 8, "max", "crops"),
    ("8 random crops", 8, "mean", "crops"),
    ("grid", 8, "max", "grid"),
    ("grid", 8, "mean", "grid"),
    ("grid x 2 flips", 2, "max", "grid+flips"),
    ("grid x 2 flips", 2, "mean", "grid+flips"),
    ("grid x 8 flips", 8, "max", "grid+flips"),
    ("grid x 8 flips", 8, "mean", "grid+flips"),
]


def coverage(view: View, size: int, samples: int = 200) -> float:
    """The mean share of an image's pixels that the view's windows cover."""
    shares = []
    for index in range(samples):
        seen = np.zeros((size, size), dtype=bool)
        for top, left, _ in view_windows(index, size, size, view.crop, view.crops, 0, view.tta):
            seen[top : top + view.crop, left : left + view.crop] = True
        shares.append(seen.mean())
    return float(np.mean(shares))


def score_fold(run_dir: Path, reg: Registry, ids: list[str], views: list[View]) -> list[np.ndarray]:
    """The best checkpoint's probabilities of ``ids`` under each view (seed 0, CPU)."""
    import torch

    from hpatool.engine.models.checkpoint import build_model_from_checkpoint
    from hpatool.engine.scoring.score import ScoreItem, score

    model, spec = build_model_from_checkpoint(run_dir / "checkpoint-best.pt")
    root = reg.dataset("syn").image_root()
    pos = {s.id: i for i, s in enumerate(reg.samples("syn"))}
    items = [ScoreItem(pos[sid], root, sid) for sid in ids]
    out = []
    for view in views:
        scores = score(
            model, items, view, mean=spec.mean, std=spec.std, batch_size=16, workers=0,
            device=torch.device("cpu"), seed=0, strict=True,
        )  # fmt: skip
        out.append(np.stack([scores.probs[it.index] for it in items]))
    return out


def train(
    base: Path, home: Path, args: argparse.Namespace, fold: int, val_view: str, seed: int
) -> Path:
    from hpatool.engine.config import TrainConfig
    from hpatool.engine.training.fit import fit

    config = TrainConfig(
        datasets=["syn"], arch=args.arch, fold=fold, epochs=args.epochs, batch_size=16,
        crop=args.crop, lr=3e-3, workers=0, device="cpu", out=str(base / "runs"),
        name=f"views-{val_view}-f{fold}", seed=seed, val_view=val_view,
    )  # fmt: skip
    run_dir = base / "runs" / config.name  # type: ignore[operator]
    if not (run_dir / "oof.csv").is_file():  # a kept folder's runs are reused
        fit(config, home=home)
    return run_dir


def heldout_and_in_sample(
    y: np.ndarray, probs: np.ndarray, folds: np.ndarray
) -> tuple[float, float]:
    pred, _ = crossfit(y, probs, folds)
    return macro_f1(y, pred), macro_f1(y, probs >= tune_thresholds(y, probs))


def views_table(args: argparse.Namespace, base: Path, seed: int) -> list[tuple[float, float]]:
    """One seed: the data, the folds, one run per fold; (held out, in sample) per view."""
    from hpatool.engine.runs.oof import OOF_FILE, read_oof
    from hpatool.labels import to_multihot

    home, data = base / "home", base / "data"
    if not home.is_dir():
        synth_dataset(data, samples=args.samples, size=args.size, seed=seed)
        with Registry.open(home) as reg:
            add_dataset(reg, "syn", labels=data / "labels.csv", root=data)
            split_dataset(reg, "syn", folds=args.folds, seed=seed)
    views = [View(args.crop, n, agg, tta) for _, n, agg, tta in VIEWS]
    per_view: list[list[np.ndarray]] = [[] for _ in views]
    ys, fold_of = [], []
    for fold in range(args.folds):
        run_dir = train(base, home, args, fold, "centre", seed)
        ids, _ = read_oof(run_dir / OOF_FILE)
        with Registry.open(home) as reg:
            targets = {s.id: s.target for s in reg.samples("syn")}
            for k, probs in enumerate(score_fold(run_dir, reg, ids, views)):
                per_view[k].append(probs)
        ys.append(to_multihot([targets[i] for i in ids]))
        fold_of += [fold] * len(ids)
    y, folds = np.concatenate(ys), np.asarray(fold_of)
    return [heldout_and_in_sample(y, np.concatenate(parts), folds) for parts in per_view]


def val_view_part(args: argparse.Namespace, base: Path, seed: int) -> None:
    """--val-view centre vs eval on ``--val-view-folds`` of seed ``seed``'s data."""
    from hpatool.engine.runs.oof import OOF_FILE, read_oof
    from hpatool.engine.runs.run_dir import read_metrics_csv
    from hpatool.labels import to_multihot

    home = base / "home"
    chosen = [int(f) for f in args.val_view_folds.split(",") if f.strip()]
    print(f"--val-view centre vs eval (the default view), seed {seed}, folds {chosen}:")
    print(
        f"{'fold':>4} {'train s/epoch':>14} {'val s centre':>13} {'val s eval':>11} "
        f"{'best epoch c / e':>17}"
    )
    oof: dict[str, list[tuple[np.ndarray, np.ndarray, int]]] = {"centre": [], "eval": []}
    for fold in chosen:
        rows = {}
        for how in ("centre", "eval"):
            run_dir = train(base, home, args, fold, how, seed)
            metrics = read_metrics_csv(run_dir / "metrics.csv")
            train_s = float(np.mean([float(r["seconds"]) for r in metrics]))
            val_s = float(np.mean([float(r["val_seconds"]) for r in metrics]))
            best_row = max(metrics, key=lambda r: float(r["macro_f1"]))
            rows[how] = (train_s, val_s, int(best_row["epoch"]))
            ids, probs = read_oof(run_dir / OOF_FILE)
            with Registry.open(home) as reg:
                targets = {s.id: s.target for s in reg.samples("syn")}
            oof[how].append((to_multihot([targets[i] for i in ids]), probs, fold))
        print(
            f"{fold:>4} {rows['centre'][0]:>14.2f} {rows['centre'][1]:>13.2f} "
            f"{rows['eval'][1]:>11.2f} {rows['centre'][2]:>8} / {rows['eval'][2]}"
        )
    if len(chosen) > 1:
        for how, parts in oof.items():
            yy = np.concatenate([p[0] for p in parts])
            pp = np.concatenate([p[1] for p in parts])
            ff = np.concatenate([[p[2]] * len(p[0]) for p in parts])
            held, in_sample = heldout_and_in_sample(yy, pp, ff)
            print(
                f"--val-view {how}: OOF (default view) of folds {args.val_view_folds} held out "
                f"{held:.4f}, in sample {in_sample:.4f}"
            )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--crop", type=int, default=48)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--arch", default="resnet10t")
    ap.add_argument("--seeds", default="0", help="data, split and training seeds, e.g. 0,1,2")
    ap.add_argument("--val-view-folds", default="0,1", help="'' to skip the --val-view part")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (reruns reuse it)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]

    with tempfile.TemporaryDirectory(prefix="hpatool-views-") as tmp:
        root = args.keep if args.keep is not None else Path(tmp)
        print(
            f"synthetic {args.samples} samples of {args.size}px, {args.folds} folds; {args.arch}, "
            f"crop {args.crop}, {args.epochs} epochs, seeds {seeds}"
        )
        started = time.perf_counter()
        results = [views_table(args, root / f"seed{seed}", seed) for seed in seeds]
        print(f"trained and scored in {time.perf_counter() - started:.0f} s")
        cols = " ".join(f"{'seed ' + str(s):>13}" for s in seeds)
        print("held out / in sample OOF macro F1 per seed, then the mean held out")
        print(f"{'view':<15} {'agg':>4} {'views':>5} {'pixels':>6} {cols} {'mean':>7}")
        best = None
        for k, ((name, _, agg, _), view) in enumerate(
            zip(VIEWS, [View(args.crop, n, a, t) for _, n, a, t in VIEWS], strict=True)
        ):
            pairs = [r[k] for r in results]
            mean = float(np.mean([p[0] for p in pairs]))
            cells = " ".join(f"{h:.4f}/{i:.4f}" for h, i in pairs)
            n = view.windows((args.size, args.size))
            print(
                f"{name:<15} {agg:>4} {n:>5} {coverage(view, args.size):>6.0%} {cells} {mean:>7.4f}"
            )
            if best is None or mean > best[0]:
                best = (mean, f"{name}, {agg}")
        assert best is not None
        print(f"best mean held out: {best[1]} ({best[0]:.4f})")
        if args.val_view_folds.strip():
            val_view_part(args, root / f"seed{seeds[0]}", seeds[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
