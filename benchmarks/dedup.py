"""``hpatool dedup``: hashing speed on real 512 px samples, and matching time at scale.

Run: .venv/bin/python benchmarks/dedup.py [--hashes 200000] [--planted 2000]
     [--distances 16,24] [--repeat 3]

- Hashing: ``hash_sample`` (read the green and blue PNGs, two 64-bit pHashes) over the 60 real
  Kaggle samples of ``../shared/data/hpa/real/kaggle_train_512`` in one process: samples/s
  per core (the median of ``--repeat`` passes after a warm-up pass; files are in the page
  cache, as on a rerun).
- Matching: ``find_pairs`` + ``clusters`` over ``--hashes`` 128-bit hashes: random ones whose
  bits are set as often as in the real hashes (a pHash bit is not a fair coin: the DC bit is
  always set, low frequencies lean one way, which fills some buckets of the multi-index more),
  plus ``--planted`` near-duplicates of them, each with 0..D bits flipped. Reports the time
  and whether every planted pair was found.

Targets: matching 200,000 hashes at the default distance in <= 60 s; every planted pair found.
Exit status 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hpatool.dedup import DEFAULT_MAX_DISTANCE  # noqa: E402
from hpatool.dedup.hashing import hash_sample  # noqa: E402
from hpatool.dedup.matching import clusters, find_pairs  # noqa: E402

REAL = REPO.parent / "shared" / "data" / "hpa" / "real" / "kaggle_train_512"
LIMIT_S = 60.0


def hashing(repeat: int) -> tuple[float, np.ndarray]:
    """Samples hashed per second in one process, and the (n, 2) hashes of the real samples."""
    ids = sorted(p.name[: -len("_green.png")] for p in REAL.glob("*_green.png"))
    if not ids:
        sys.exit(f"needs the real samples in {REAL}")
    words = [hash_sample(str(REAL), i).words for i in ids]  # warm-up: imports, page cache
    rates = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for i in ids:
            hash_sample(str(REAL), i)
        rates.append(len(ids) / (time.perf_counter() - t0))
    return statistics.median(rates), np.array(words, dtype=np.uint64)


def bit_shares(real: np.ndarray) -> np.ndarray:
    """How often each of the 128 bits is set in the real hashes, kept within 5-95%."""
    bits = (real[:, :, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
    return np.clip(bits.reshape(len(real), 128).mean(axis=0), 0.05, 0.95)


def synthetic(n: int, planted: int, d: int, shares: np.ndarray, seed: int = 0):  # type: ignore[no-untyped-def]
    """``n`` hashes with the real bits' shares, then ``planted`` copies of the first ones with
    0..d bits flipped."""
    rng = np.random.default_rng(seed)
    bits = rng.random((n, 128)) < shares
    weights = np.left_shift(np.uint64(1), np.arange(64, dtype=np.uint64))
    hashes = np.stack(
        [(bits[:, w * 64 : (w + 1) * 64] * weights).sum(axis=1, dtype=np.uint64) for w in (0, 1)],
        axis=1,
    )
    copies = hashes[:planted].copy()
    for k in range(planted):
        for bit in rng.choice(128, int(rng.integers(0, d + 1)), replace=False):
            copies[k, bit // 64] ^= np.uint64(1) << np.uint64(bit % 64)
    return np.concatenate([hashes, copies])


def matching(n: int, planted: int, d: int, shares: np.ndarray) -> tuple[float, int, int, int]:
    """Seconds for pairs + clusters, pairs found, planted pairs found, clusters."""
    hashes = synthetic(n, planted, d, shares)
    t0 = time.perf_counter()
    pairs = find_pairs(hashes, d)
    groups = clusters(len(hashes), pairs)
    seconds = time.perf_counter() - t0
    found = set(zip(pairs.i.tolist(), pairs.j.tolist(), strict=True))
    hit = sum((k, n + k) in found for k in range(planted))
    return seconds, len(pairs), hit, len(groups)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hashes", type=int, default=200_000)
    parser.add_argument("--planted", type=int, default=2_000)
    parser.add_argument("--distances", default=f"{DEFAULT_MAX_DISTANCE},24")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rate, real = hashing(args.repeat)
    print(f"hashing: {rate:,.0f} samples/s per core ({2 * rate:,.0f} channel PNGs/s), 512 px")
    ok = True
    shares = bit_shares(real)
    for d in (int(x) for x in args.distances.split(",")):
        seconds, n_pairs, hit, n_groups = matching(args.hashes, args.planted, d, shares)
        n = args.hashes + args.planted
        print(
            f"matching {n:,} hashes at --max-distance {d}: {seconds:.1f} s, {n_pairs:,} pairs "
            f"in {n_groups:,} clusters, planted pairs found {hit:,} of {args.planted:,}"
        )
        ok = ok and hit == args.planted and (d != DEFAULT_MAX_DISTANCE or seconds <= LIMIT_S)
    print("targets met" if ok else "TARGET MISSED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
