"""Time ``hpatool --help`` against a bare ``python -c pass`` (start-up cost of the CLI).

Run: python benchmarks/startup.py [--repeat 10]
Target: ``hpatool --help`` takes at most 3x as long as ``python -c pass`` (medians of --repeat
runs each, alternating, so that load on the machine affects both alike).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

TARGET_RATIO = 3.0
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import typer'": [sys.executable, "-c", "import typer"],
    "hpatool --help": [sys.executable, "-m", "hpatool", "--help"],
}


def _time(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}; {args.repeat} runs of each, medians")
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for cmd in COMMANDS.values():
        _time(cmd)  # warm the file cache
    for _ in range(args.repeat):
        for name, cmd in COMMANDS.items():
            times[name].append(_time(cmd))
    bare = statistics.median(times["python -c pass"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:26s} {median * 1000:6.0f} ms  {median / bare:4.1f}x python -c pass")
    ratio = statistics.median(times["hpatool --help"]) / bare
    verdict = "within" if ratio <= TARGET_RATIO else "over"
    target = f"{TARGET_RATIO:.0f}x"
    print(f"ratio hpatool --help / python -c pass: {ratio:.2f} ({verdict} the {target} target)")


if __name__ == "__main__":
    main()
