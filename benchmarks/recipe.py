"""The winners' recipe measured by the held-out out-of-fold macro F1 (issue 19).

Run: .venv/bin/python benchmarks/recipe.py [--losses bce,focal,lovasz,focal+lovasz,bce@prior]
     [--seeds 0,1] [--samples 400] [--size 96] [--crop 48] [--epochs 6] [--keep DIR]

For each seed: synthesise ``--samples`` samples (``hpatool.synth``), split them into 5 folds,
and train one 5-fold experiment per ``--losses`` entry with ``hpatool.engine.train.fit`` (resnet10t,
the default view, ``--head-bias zero`` unless the entry ends in ``@prior``), every experiment on
the same folds and seeds; then print each experiment's
held-out out-of-fold macro F1 (each fold thresholded as tuned on the other four, what
``experiments show`` reports) and, beside it, the in-sample one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hpatool.catalog import add_dataset  # noqa: E402
from hpatool.data.split import split_dataset  # noqa: E402
from hpatool.engine.oof import summarize_oof  # noqa: E402
from hpatool.registry import Registry  # noqa: E402
from hpatool.synth import synth_dataset  # noqa: E402


def experiment(
    base: Path, args: argparse.Namespace, seed: int, variant: str
) -> tuple[float, float]:
    from hpatool.engine.config import TrainConfig
    from hpatool.engine.train import fit

    home = base / "home"
    loss, _, head_bias = variant.partition("@")
    names = []
    for fold in range(5):
        name = f"{variant.replace('*', 'x').replace('+', '-').replace('@', '-')}-f{fold}"
        names.append(name)
        if (base / "runs" / name / "oof.csv").is_file():
            continue
        config = TrainConfig(
            datasets=["syn"], arch="resnet10t", fold=fold, epochs=args.epochs, batch_size=16,
            crop=args.crop, lr=3e-3, workers=0, device="cpu", out=str(base / "runs"), name=name,
            seed=seed, loss=loss, head_bias=head_bias or "zero",
        )  # fmt: skip
        fit(config, home=home)
    with Registry.open(home) as reg:
        summary = summarize_oof(reg, [reg.run(n) for n in names])
    assert summary.heldout_macro_f1 is not None
    return summary.heldout_macro_f1, summary.macro_f1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--losses", default="bce,focal,lovasz,focal+lovasz,bce+lovasz")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--crop", type=int, default=48)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (reruns reuse it)")
    args = ap.parse_args()
    losses = [x for x in args.losses.split(",") if x]
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.perf_counter()
    results: dict[str, list[tuple[float, float]]] = {loss: [] for loss in losses}
    with tempfile.TemporaryDirectory(prefix="hpatool-recipe-") as tmp:
        root = args.keep if args.keep is not None else Path(tmp)
        for seed in seeds:
            base = root / f"seed{seed}"
            if not (base / "home").is_dir():
                synth_dataset(base / "data", samples=args.samples, size=args.size, seed=seed)
                with Registry.open(base / "home") as reg:
                    add_dataset(reg, "syn", labels=base / "data/labels.csv", root=base / "data")
                    split_dataset(reg, "syn", folds=5, seed=seed)
            for loss in losses:
                results[loss].append(experiment(base, args, seed, loss))
    print(
        f"synthetic {args.samples} samples of {args.size}px, 5 folds, resnet10t, crop {args.crop}, "
        f"{args.epochs} epochs, seeds {seeds}; {time.perf_counter() - started:.0f} s"
    )
    print("held out / in sample OOF macro F1 per seed, then the mean held out")
    for loss, pairs in results.items():
        cells = "  ".join(f"{h:.4f}/{i:.4f}" for h, i in pairs)
        mean = sum(h for h, _ in pairs) / len(pairs)
        print(f"{loss:<16} {cells}  mean {mean:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
