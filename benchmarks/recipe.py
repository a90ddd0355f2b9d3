"""The winners' recipe measured by the held-out out-of-fold macro F1 (issue 19).

Run: .venv/bin/python benchmarks/recipe.py [--variants focal,bce,focal;ema=0.99,...]
     [--seeds 0,1] [--samples 400] [--size 96] [--crop 48] [--epochs 6] [--keep DIR] [--prior]

For each seed: synthesise ``--samples`` samples (``hpatool.synth``), split them into 5 folds,
and train one 5-fold experiment per ``--variants`` entry with ``hpatool.engine.training.fit.fit``
(resnet10t, the default view), every experiment on the same folds and seeds; then print each
experiment's held-out out-of-fold macro F1 (each fold thresholded as tuned on the other four,
what ``experiments show`` reports) and, beside it, the in-sample one.

An entry is a ``--loss`` (``focal``, ``bce*0.5+lovasz*1``, ...), optionally ``@prior``
(``--head-bias prior``; otherwise ``zero``), then ``;KEY=VALUE`` options: ``ema=DECAY`` (``--ema``),
``augment=light|strong`` (``--augment``), ``swa=K`` (train with ``--keep-checkpoints K``, then
``hpatool runs average --last K`` every fold: the averaged runs are what is scored; the runs
they came from are scored too, as ``...;swa-source``).

``--prior``: beside each figure, the out-of-fold macro F1 with prior-matched thresholds
(``predict --threshold prior``): each fold's thresholds set so that each class's predicted
share of that fold equals its share in the other four folds' labels (nothing tuned on the
scored fold's labels, so it is held out too).
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
from hpatool.engine.runs.oof import summarize_oof  # noqa: E402
from hpatool.registry import Registry  # noqa: E402
from hpatool.synth import synth_dataset  # noqa: E402


def parse_variant(variant: str) -> tuple[str, str, dict[str, str]]:
    head, *extra = variant.split(";")
    loss, _, head_bias = head.partition("@")
    options = dict(e.split("=", 1) for e in extra if e)
    return loss, head_bias or "zero", options


def run_name(variant: str, fold: int) -> str:
    safe = "".join(c if c.isalnum() or c in "-." else "-" for c in variant.replace("*", "x"))
    return f"{safe}-f{fold}"


def experiment(
    base: Path, args: argparse.Namespace, seed: int, variant: str
) -> dict[str, tuple[float, float, float | None]]:
    """``{label: (held out, in sample, prior-matched)}`` of the variant's runs (and, for
    ``swa=K``, of the runs it averaged)."""
    from hpatool.engine.config import TrainConfig
    from hpatool.engine.training.average import average_run
    from hpatool.engine.training.fit import fit

    home = base / "home"
    loss, head_bias, options = parse_variant(variant)
    swa = int(options.get("swa", 0))
    names, averaged = [], []
    for fold in range(5):
        name = run_name(variant, fold)
        names.append(name)
        if not (base / "runs" / name / "oof.csv").is_file():
            config = TrainConfig(
                datasets=["syn"], arch="resnet10t", fold=fold, epochs=args.epochs, batch_size=16,
                crop=args.crop, lr=3e-3, workers=0, device="cpu", out=str(base / "runs"),
                name=name, seed=seed, loss=loss, head_bias=head_bias,
                augment=options.get("augment", "dihedral"),
                ema=float(options.get("ema", 0)),
                keep_checkpoints=swa or None,
            )  # fmt: skip
            fit(config, home=home)
        if swa:
            avg = f"{name}-avg"
            averaged.append(avg)
            if not (base / "runs" / avg / "oof.csv").is_file():
                with Registry.open(home) as reg:
                    average_run(reg, name, last=swa, name=avg, device="cpu", workers=0)
    out = {}
    with Registry.open(home) as reg:
        for label, runs in ((variant, averaged or names), (f"{variant};swa-source", names)):
            summary = summarize_oof(reg, [reg.run(n) for n in runs])
            assert summary.heldout_macro_f1 is not None
            prior = prior_oof_f1(reg, runs) if args.prior else None
            out[label] = (summary.heldout_macro_f1, summary.macro_f1, prior)
            if not swa:
                break
    return out


def prior_oof_f1(reg: Registry, runs: list[str]) -> float:
    """The OOF macro F1 with each fold thresholded by prior matching: its predicted share of
    each class equal to that class's share among the other folds' labels."""
    from hpatool.engine.metrics import macro_f1
    from hpatool.engine.runs.oof import read_oof
    from hpatool.engine.scoring.prior import prior_thresholds
    from hpatool.labels import to_multihot

    targets = {s.id: s.target for s in reg.samples("syn")}
    parts = []
    for name in runs:
        ids, probs = read_oof(reg.run(name).out_dir / "oof.csv")
        parts.append((ids, probs, to_multihot([targets[i] for i in ids]).astype(np.float64)))
    y_all, pred_all = [], []
    for k, (_, probs, y) in enumerate(parts):
        others = np.concatenate([p[2] for j, p in enumerate(parts) if j != k])
        thresholds = prior_thresholds(probs, others.mean(axis=0), np.full(probs.shape[1], 0.5))
        y_all.append(y)
        pred_all.append(probs >= thresholds)
    return macro_f1(np.concatenate(y_all), np.concatenate(pred_all))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", "--losses", default="bce,focal,lovasz,focal+lovasz")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--crop", type=int, default=48)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (reruns reuse it)")
    ap.add_argument("--prior", action="store_true", help="also score prior-matched thresholds")
    args = ap.parse_args()
    variants = [x for x in args.variants.split(",") if x]
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.perf_counter()
    results: dict[str, list[tuple[float, float, float | None]]] = {}
    with tempfile.TemporaryDirectory(prefix="hpatool-recipe-") as tmp:
        root = args.keep if args.keep is not None else Path(tmp)
        for seed in seeds:
            base = root / f"seed{seed}"
            if not (base / "home").is_dir():
                synth_dataset(base / "data", samples=args.samples, size=args.size, seed=seed)
                with Registry.open(base / "home") as reg:
                    add_dataset(reg, "syn", labels=base / "data/labels.csv", root=base / "data")
                    split_dataset(reg, "syn", folds=5, seed=seed)
            for variant in variants:
                for label, figures in experiment(base, args, seed, variant).items():
                    results.setdefault(label, []).append(figures)
    print(
        f"synthetic {args.samples} samples of {args.size}px, 5 folds, resnet10t, crop {args.crop}, "
        f"{args.epochs} epochs, seeds {seeds}; {time.perf_counter() - started:.0f} s"
    )
    print(
        "held out / in sample OOF macro F1 per seed, then the mean held out"
        + (" and the mean with prior-matched thresholds" if args.prior else "")
    )
    for label, rows in results.items():
        cells = "  ".join(f"{h:.4f}/{i:.4f}" for h, i, _ in rows)
        mean = sum(h for h, _, _ in rows) / len(rows)
        line = f"{label:<24} {cells}  mean {mean:.4f}"
        if args.prior:
            priors = [p for _, _, p in rows if p is not None]
            line += f"  prior {sum(priors) / len(priors):.4f}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
