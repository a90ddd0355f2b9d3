"""Time ``hpatool datasets add`` (whole command, start-up included) on the real label CSVs.

Run: python benchmarks/register.py [--repeat 3]
Target: the 74,606-row HPAv18 CSV registers in well under 5 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HPA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hpa"
FILES = [
    ("hpa-v18", "HPAv18RBGY_wodpl.csv", "external"),
    ("train", "train.csv", "train"),
    ("test", "sample_submission.csv", "test"),
]
TARGET_S = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for name, file, kind in FILES:
        times = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as home:
                env = {**os.environ, "HPATOOL_HOME": home}
                cmd = [
                    sys.executable,
                    "-m",
                    "hpatool",
                    "datasets",
                    "add",
                    name,
                    "--labels",
                    str(HPA / file),
                    "--kind",
                    kind,
                ]
                start = time.perf_counter()
                subprocess.run(cmd, env=env, check=True, capture_output=True)
                times.append(time.perf_counter() - start)
        best = min(times)
        print(
            f"{file:24s} best {best:5.2f} s of {args.repeat}  "
            f"({best / TARGET_S:.0%} of the {TARGET_S:.0f} s budget)"
        )


if __name__ == "__main__":
    main()
