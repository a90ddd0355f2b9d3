"""Thresholds tuned on the view they are applied to (issue 12): centre crop vs max of 8 crops.

Run: .venv/bin/python benchmarks/views.py [--samples 320] [--size 64] [--crop 48] [--epochs 6]
     [--folds 0,1,2] [--crops 8] [--agg max] [--arch resnet10t] [--seed 0]
     [--keep DIR [--reuse]] [--shrink K]

Makes a synthetic dataset (``hpatool.synth``, as the demo does) in a temporary folder, splits it
into 5 folds and trains one run per ``--folds`` entry with ``hpatool.engine.train.fit`` (the run
ends by writing ``oof.csv`` with ``--crops`` crops and ``--agg``, and ``thresholds.json`` tuned
on it). For each run's best checkpoint, on its validation fold, it prints the macro F1 of:

- (a) the centre-crop thresholds (tuned on the validation predictions during training: what
  ``predict`` applied before issue 12) applied to the max of ``--crops`` random crops;
- (b) the thresholds tuned on that max-of-crops view (``oof.csv``: what ``thresholds.json``
  holds now);
- (c) the centre crop with its own thresholds (the per-epoch validation figure);

and the labels per image each gives (the true mean beside them). Thresholds tuned on the same
predictions they are scored on flatter every figure alike, so each is also given "held out":
thresholds tuned on one half of the fold (a seeded random half) scored on the other, both ways,
averaged (20 random halvings). Finally ``summarize_oof`` over all the runs: the OOF macro F1
across folds, and, held out, three treatments of classes with few positives (no shrinkage,
towards 0.5 as ``tune_thresholds`` does, towards the best single threshold for all classes).
``--shrink 0`` measures without the few-positives shrinkage of the thresholds
(``metrics.SHRINK_POSITIVES``), as before issue 12; ``--keep DIR`` then ``--keep DIR --reuse``
measures the same runs both ways without training again.
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
from hpatool.engine.metrics import macro_f1, tune_thresholds  # noqa: E402
from hpatool.engine.oof import OOF_FILE, read_oof, summarize_oof  # noqa: E402
from hpatool.registry import Registry  # noqa: E402
from hpatool.synth import synth_dataset  # noqa: E402


def _held_out(
    y: np.ndarray, tune_on: np.ndarray, apply_to: np.ndarray, seed: int
) -> tuple[float, float]:
    """Macro F1 and labels per image of thresholds tuned on ``tune_on`` of one half, applied
    to ``apply_to`` of the other half; both ways, averaged."""
    rng = np.random.default_rng(seed)
    f1s, labels = [], []
    for _ in range(20):
        order = rng.permutation(len(y))
        halves = (order[: len(y) // 2], order[len(y) // 2 :])
        for a, b in (halves, halves[::-1]):
            thr = tune_thresholds(y[a], tune_on[a])
            pred = apply_to[b] >= thr
            f1s.append(macro_f1(y[b], pred))
            labels.append(pred.sum(axis=1).mean())
    return float(np.mean(f1s)), float(np.mean(labels))


def _shrink_policies(y: np.ndarray, probs: np.ndarray, seed: int) -> dict[str, float]:
    """Held-out macro F1 (halves as in ``_held_out``) of three ways to treat classes with few
    positives: no shrinkage, towards 0.5, and towards the one threshold best for all classes
    together (the pooled threshold: what ``tune_thresholds`` does)."""

    def tuned(yy: np.ndarray, pp: np.ndarray, policy: str) -> np.ndarray:
        if policy == "none":
            return tune_thresholds(yy, pp, shrink=0)
        if policy == "0.5":
            return tune_thresholds(yy, pp, anchor=0.5)
        return tune_thresholds(yy, pp)

    rng = np.random.default_rng(seed)
    scores: dict[str, list[float]] = {"none": [], "0.5": [], "global": []}
    for _ in range(20):
        order = rng.permutation(len(y))
        halves = (order[: len(y) // 2], order[len(y) // 2 :])
        for a, b in (halves, halves[::-1]):
            for policy, got in scores.items():
                got.append(macro_f1(y[b], probs[b] >= tuned(y[a], probs[a], policy)))
    return {k: float(np.mean(v)) for k, v in scores.items()}


def _centre_probs(run_dir: Path, reg: Registry, dataset: str, ids: list[str]) -> np.ndarray:
    """The best checkpoint's probabilities on the centre crop (``crops 1``) of ``ids``."""
    import torch

    from hpatool.engine.checkpoint import build_model_from_checkpoint
    from hpatool.engine.scoring import ScoreItem, score

    model, spec = build_model_from_checkpoint(run_dir / "checkpoint-best.pt")
    root = reg.dataset(dataset).image_root()
    pos = {s.id: i for i, s in enumerate(reg.samples(dataset))}
    items = [ScoreItem(pos[sid], root, sid) for sid in ids]
    scores = score(
        model,
        items,
        crop=spec.crop,
        crops=1,
        agg="max",
        mean=spec.mean,
        std=spec.std,
        batch_size=16,
        workers=0,
        device=torch.device("cpu"),
        seed=0,
        strict=True,
    )
    return np.stack([scores.probs[it.index] for it in items])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=320)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--crop", type=int, default=48)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--folds", default="0,1,2")
    ap.add_argument("--crops", type=int, default=8)
    ap.add_argument("--agg", default="max")
    ap.add_argument("--arch", default="resnet10t")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, help="work in this new folder and keep it")
    ap.add_argument("--reuse", action="store_true", help="with --keep: use the runs already in it")
    ap.add_argument(
        "--shrink",
        type=int,
        default=None,
        help="metrics.SHRINK_POSITIVES for this measurement (0: no shrinkage, as before)",
    )
    args = ap.parse_args()
    if args.shrink is not None:
        from hpatool.engine import metrics

        metrics.SHRINK_POSITIVES = args.shrink

    from hpatool.engine.config import TrainConfig
    from hpatool.engine.train import fit

    folds = [int(f) for f in args.folds.split(",")]
    with tempfile.TemporaryDirectory(prefix="hpatool-views-") as tmp:
        base = args.keep if args.keep is not None else Path(tmp)
        home, data = base / "home", base / "data"
        if not args.reuse:
            synth_dataset(data, samples=args.samples, size=args.size, seed=args.seed)
            with Registry.open(home) as reg:
                add_dataset(reg, "syn", labels=data / "labels.csv", root=data)
                split_dataset(reg, "syn", folds=5, seed=args.seed)
        from hpatool.engine import metrics

        print(f"thresholds shrunk with SHRINK_POSITIVES = {metrics.SHRINK_POSITIVES}")
        print(
            f"synthetic {args.samples} samples of {args.size}px, 5 folds; {args.arch}, crop "
            f"{args.crop}, {args.epochs} epochs; view: {args.agg} of {args.crops} crops (seed 0)"
        )
        header = (
            f"{'fold':>4} {'(a) centre thr on ' + args.agg:>20} {'(b) own thr':>12} "
            f"{'(c) centre':>11} {'b - c':>7} {'a - c':>7}   labels/img a / b / c (true)"
        )
        rows = []
        policies: list[dict[str, float]] = []
        for fold in folds:
            started = time.perf_counter()
            config = TrainConfig(
                datasets=["syn"],
                arch=args.arch,
                fold=fold,
                epochs=args.epochs,
                batch_size=16,
                crop=args.crop,
                lr=3e-3,
                workers=0,
                device="cpu",
                out=str(base / "runs"),
                name=f"views-f{fold}",
                seed=args.seed,
                eval_crops=args.crops,
                eval_agg=args.agg,
            )
            run_dir = base / "runs" / f"views-f{fold}"
            oof_f1 = None
            if not args.reuse:
                result = fit(config, home=home)
                run_dir, oof_f1 = result.run_dir, result.oof_macro_f1
            ids, p_view = read_oof(run_dir / OOF_FILE)
            with Registry.open(home) as reg:
                targets = {s.id: s.target for s in reg.samples("syn")}
                p_centre = _centre_probs(run_dir, reg, "syn", ids)
            y = np.zeros((len(ids), 28), np.uint8)
            for i, sid in enumerate(ids):
                y[i, list(targets[sid] or ())] = 1
            thr_c = tune_thresholds(y, p_centre)
            thr_v = tune_thresholds(y, p_view)
            f1 = (
                macro_f1(y, p_view >= thr_c),
                macro_f1(y, p_view >= thr_v),
                macro_f1(y, p_centre >= thr_c),
            )
            labels = (
                (p_view >= thr_c).sum(1).mean(),
                (p_view >= thr_v).sum(1).mean(),
                (p_centre >= thr_c).sum(1).mean(),
            )
            held = (
                _held_out(y, p_centre, p_view, fold),
                _held_out(y, p_view, p_view, fold),
                _held_out(y, p_centre, p_centre, fold),
            )
            rows.append((fold, f1, labels, held, y.sum(1).mean(), time.perf_counter() - started))
            policies.append(_shrink_policies(y, p_view, fold))
            if oof_f1 is not None:
                assert abs(oof_f1 - f1[1]) < 1e-12  # thresholds.json's figure
        print(header)
        for fold, f1, labels, _held, true, secs in rows:
            print(
                f"{fold:>4} {f1[0]:>20.4f} {f1[1]:>12.4f} {f1[2]:>11.4f} {f1[1] - f1[2]:>+7.4f} "
                f"{f1[0] - f1[2]:>+7.4f}   {labels[0]:.2f} / {labels[1]:.2f} / {labels[2]:.2f} "
                f"({true:.2f})  [{secs:.0f} s]"
            )
        print("held out (thresholds tuned on one half of the fold, scored on the other):")
        for fold, _, _, held, _, _ in rows:
            (a, la), (b, lb), (c, lc) = held
            print(
                f"{fold:>4} {a:>20.4f} {b:>12.4f} {c:>11.4f} {b - c:>+7.4f} {a - c:>+7.4f}   "
                f"{la:.2f} / {lb:.2f} / {lc:.2f}"
            )
        mean = np.mean([r[1] for r in rows], axis=0)
        held_mean = np.mean([[h[0] for h in r[3]] for r in rows], axis=0)
        print(
            f"mean: in-sample a {mean[0]:.4f} b {mean[1]:.4f} c {mean[2]:.4f} "
            f"(b - c {mean[1] - mean[2]:+.4f}, a - c {mean[0] - mean[2]:+.4f}); held out "
            f"a {held_mean[0]:.4f} b {held_mean[1]:.4f} c {held_mean[2]:.4f} "
            f"(b - c {held_mean[1] - held_mean[2]:+.4f}, a - c {held_mean[0] - held_mean[2]:+.4f})"
        )
        print(
            f"few-positives shrinkage, held out, {args.agg} of {args.crops} crops "
            "(none / towards 0.5 / towards the best single threshold):"
        )
        for fold, pol in zip(folds, policies, strict=True):
            print(f"{fold:>4} {pol['none']:.4f} / {pol['0.5']:.4f} / {pol['global']:.4f}")
        with Registry.open(home) as reg:
            summary = summarize_oof(reg, [reg.run(f"views-f{f}") for f in folds])
        print(
            f"summarize_oof over {len(folds)} folds: {len(summary.ids)} of "
            f"{summary.dataset_samples} samples, OOF macro F1 {summary.macro_f1:.4f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
