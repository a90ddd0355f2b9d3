"""Check the demo's figures quoted in the docs against a fresh ``hpatool demo`` (issue 20).

Run: .venv/bin/python benchmarks/docs_figures.py      # about 50 s; exit 1 on a stale quote

Runs ``hpatool demo`` (its defaults) in a temporary folder, reads the figures it prints (the
held-out and in-sample out-of-fold macro F1, fold 0's, and evaluate's held-out max/mean,
in-sample and at-0.5 figures) and checks that every one of them appears in ``docs/index.md``,
``docs/workflow.md`` and ``docs/benchmarks.md`` where those quote it. The figures depend on the
CPU's floating point (the docs say so); on the development machine they match exactly.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PATTERNS = {
    "OOF held out": r"Out-of-fold over 3 folds: macro F1 (\d\.\d{4}) held out",
    "OOF in sample": r"the figure to compare options by\); (\d\.\d{4}) in sample",
    "fold 0 alone": r"Fold 0 alone: (\d\.\d{4})",
    "evaluate max": r"max (\d\.\d{4}), mean \d\.\d{4} \(reported\)",
    "evaluate mean": r"max \d\.\d{4}, mean (\d\.\d{4}) \(reported\)",
    "evaluate in sample": r"macro F1 (\d\.\d{4}) with the thresholds applied",
    "evaluate at 0.5": r"at a 0\.5 threshold: (\d\.\d{4})",
}
#: where each figure is quoted
QUOTED = {
    "OOF held out": ("docs/index.md", "docs/workflow.md", "docs/benchmarks.md"),
    "OOF in sample": ("docs/index.md", "docs/workflow.md", "docs/benchmarks.md"),
    "fold 0 alone": ("docs/index.md", "docs/workflow.md"),
    "evaluate max": ("docs/workflow.md", "docs/benchmarks.md"),
    "evaluate mean": ("docs/workflow.md", "docs/benchmarks.md"),
    "evaluate in sample": ("docs/workflow.md", "docs/benchmarks.md"),
    "evaluate at 0.5": ("docs/workflow.md",),
}


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="hpatool-docs-") as tmp:
        done = subprocess.run(
            [sys.executable, "-m", "hpatool", "demo", "--out", str(Path(tmp) / "demo")],
            capture_output=True, text=True, cwd=REPO, check=True,
        )  # fmt: skip
    text = " ".join(done.stdout.split())
    stale = 0
    for name, pattern in PATTERNS.items():
        match = re.search(pattern, text)
        if match is None:
            print(f"{name:<20} not in the demo's output")
            stale += 1
            continue
        figure = match.group(1)
        for doc in QUOTED[name]:
            found = figure in (REPO / doc).read_text(encoding="utf-8")
            stale += not found
            print(f"{name:<20} {figure}  {doc:<20} {'quoted' if found else 'STALE'}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
