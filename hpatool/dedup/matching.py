"""Near-duplicate pairs among many 128-bit hashes, and the clusters they form.

A sample's hash is two 64-bit words (``hashing.HASHED``: green, blue); the distance of two
samples is the Hamming distance of the 128 bits. ``find_pairs`` finds every pair within
``max_distance`` without a Python loop over pairs, by multi-index hashing (Norouzi et al.):

- the 128 bits are cut into 8 blocks of 16 (interleaved, see ``_blocks``), and block ``j``
  gets a search radius ``r_j`` with ``sum(r_j + 1) > max_distance``, so (pigeonhole) a pair
  within ``max_distance`` differs in at most ``r_j`` bits of some block ``j``;
- per block, the samples are sorted by the block's value; for each flip mask of at most
  ``r_j`` bits, every sample is joined with the samples whose value is its own flipped by
  the mask: the candidates;
- each candidate's 128-bit distance is checked with a vectorised popcount
  (``np.bitwise_count`` on numpy 2), one 64-bit word at a time, and a pair found through
  several blocks is kept once.

The work grows with ``max_distance``: up to 15 every block is searched at radius 1 (17
lookups per sample and block), at 16 one block at radius 2 (137). 200,000 hashes take about
5-7 s at the default 16 and under a minute at 24 on 2 CPUs (``benchmarks/dedup.py``).
``clusters`` joins the pairs transitively (connected components).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import combinations

import numpy as np

#: Bits per hash, blocks and bits per block of the multi-index.
BITS = 128
BLOCKS = 8
BLOCK_BITS = BITS // BLOCKS
#: Candidates checked at a time (bounds the memory: about 40 bytes each).
_CHUNK = 1_000_000


_BYTE_BITS = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)


def popcount(words: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 (uint8): ``np.bitwise_count`` (numpy 2), else a byte table."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(words)
    as_bytes = np.ascontiguousarray(words, dtype=np.uint64).view(np.uint8)
    return _BYTE_BITS[as_bytes].reshape(*words.shape, 8).sum(axis=-1, dtype=np.uint8)


@dataclass
class Pairs:
    """Pairs ``(i[k], j[k])`` of row numbers (``i < j``) and their ``distance``, sorted by
    ``(i, j)``."""

    i: np.ndarray
    j: np.ndarray
    distance: np.ndarray

    def __len__(self) -> int:
        return len(self.i)


def radii(max_distance: int, blocks: int = BLOCKS) -> list[int]:
    """The search radius of each block, ``sum(r + 1) > max_distance`` (pigeonhole), the wider
    ones last; below ``blocks - 1`` only the last ``max_distance + 1`` blocks are searched
    (exactly)."""
    if max_distance < blocks:
        return [-1] * (blocks - max_distance - 1) + [0] * (max_distance + 1)
    extra = max_distance + 1 - blocks
    return [extra // blocks + (1 if blocks - b <= extra % blocks else 0) for b in range(blocks)]


def _masks(radius: int) -> np.ndarray:
    """Every ``BLOCK_BITS``-bit value with at most ``radius`` bits set."""
    masks = [0]
    for r in range(1, radius + 1):
        masks += [sum(1 << b for b in bits) for bits in combinations(range(BLOCK_BITS), r)]
    return np.array(masks, dtype=np.int64)


def _blocks(hashes: np.ndarray) -> np.ndarray:
    """The ``BLOCKS`` block values of each hash, ``(n, BLOCKS)`` int64.

    Block ``b`` takes every ``BLOCKS``-th bit of each word (bits ``b, b + 8, b + 16, ...`` of
    the first word, ``b - 1, b + 7, ...`` of the second), not 16 neighbouring bits: a pHash's
    low frequencies lean one way, and spread over all blocks they fill no block's buckets
    unevenly. A pHash's first bit (the mean) is always set: those of the two words go to blocks
    0 and 1, away from the blocks that ``radii`` searches widest."""
    n = len(hashes)
    raw = hashes.astype("<u8").view(np.uint8).reshape(n, -1)
    bits = np.unpackbits(raw, axis=1, bitorder="little")
    if bits.shape[1] != BITS:
        raise ValueError(f"hashes of {bits.shape[1]} bits; expected {BITS}")
    grid = bits.reshape(n, 2, BLOCK_BITS // 2, BLOCKS)  # [row, word, k, block]: bit 64w+8k+b
    grid[:, 1] = np.roll(grid[:, 1], 1, axis=2)  # the second word's bit 0 to block 1
    spread = grid.transpose(0, 3, 1, 2).reshape(n, BLOCKS, BLOCK_BITS)
    packed = np.packbits(spread, axis=2, bitorder="little")
    return packed.view("<u2").reshape(n, BLOCKS).astype(np.int64)


def distances(hashes: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Hamming distances between the hashes of rows ``i`` and rows ``j`` (uint8/int arrays)."""
    total = np.zeros(len(i), dtype=np.int64)
    for w in range(hashes.shape[1]):
        total += popcount(hashes[i, w] ^ hashes[j, w])
    return total


def _within(
    words: list[np.ndarray], i: np.ndarray, j: np.ndarray, max_distance: int
) -> tuple[np.ndarray, np.ndarray]:
    """The candidate pairs ``(i, j)`` within ``max_distance``: word by word, each word's
    distance adding up, so that most candidates are dropped after one gather."""
    total = np.zeros(len(i), dtype=np.uint8)
    for word in words:
        total += popcount(word[i] ^ word[j])
        keep = total <= max_distance
        i, j, total = i[keep], j[keep], total[keep]
    return i, j


def find_pairs(hashes: np.ndarray, max_distance: int) -> Pairs:
    """Every pair of rows of ``hashes`` (``(n, 2)`` uint64) within ``max_distance`` bits."""
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = len(hashes)
    found_i: list[np.ndarray] = []
    found_j: list[np.ndarray] = []
    if n >= 2:
        blocks = _blocks(hashes)
        words = [np.ascontiguousarray(hashes[:, w]) for w in range(hashes.shape[1])]
        for b, radius in enumerate(radii(max_distance)):
            if radius < 0:
                continue  # not searched
            values = blocks[:, b]
            order = np.argsort(values, kind="stable")
            ordered = values[order]
            counts = np.bincount(values, minlength=1 << BLOCK_BITS)
            starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
            for mask in _masks(radius):
                for i, j in _candidates(order, ordered, counts, starts, int(mask)):
                    i, j = _within(words, i, j, max_distance)
                    found_i.append(i)
                    found_j.append(j)
    if not found_i:
        empty = np.zeros(0, dtype=np.int64)
        return Pairs(empty, empty.copy(), empty.copy())
    key = np.unique(np.concatenate(found_i) * n + np.concatenate(found_j))
    i, j = key // n, key % n
    return Pairs(i, j, distances(hashes, i, j))


def _candidates(
    order: np.ndarray, ordered: np.ndarray, counts: np.ndarray, starts: np.ndarray, mask: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every row joined with the rows of the bucket of its block value ``^ mask`` (each pair
    once), as pairs ``(i, j)`` with ``i < j``, in chunks of about ``_CHUNK``.

    ``order`` sorts the rows by block value (``ordered``); bucket ``u``'s rows are
    ``order[starts[u]:starts[u] + counts[u]]``. With ``mask`` 0 a row is joined with the rows
    after it in its own bucket; otherwise only the rows of the lower of two buckets ``u``,
    ``u ^ mask`` reach out to the other."""
    partner = ordered ^ mask
    if mask == 0:
        # sorted position p in bucket u: the rows after it in u
        reach = starts[ordered] + counts[ordered] - np.arange(len(ordered)) - 1
        first = np.arange(1, len(ordered) + 1)
    else:
        reach = np.where(ordered < partner, counts[partner], 0)
        first = starts[partner]
    ends = np.cumsum(reach)
    lo = 0
    while lo < len(reach):
        hi = int(np.searchsorted(ends, ends[lo] - reach[lo] + _CHUNK, side="right"))
        hi = max(hi, lo + 1)
        rep = reach[lo:hi]
        total = int(rep.sum())
        if total:
            left = np.repeat(np.arange(lo, hi), rep)
            step = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(rep) - rep, rep)
            right = np.repeat(first[lo:hi], rep) + step
            i, j = order[left], order[right]
            yield np.minimum(i, j), np.maximum(i, j)
        lo = hi


def clusters(n: int, pairs: Pairs) -> list[np.ndarray]:
    """The groups of 2+ rows joined by ``pairs`` (transitively), each sorted, in the order of
    their first row."""
    if len(pairs) == 0:
        return []
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs.i, pairs.j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels)
    rows = np.flatnonzero(sizes[labels] >= 2)
    groups = labels[rows]
    order = np.argsort(groups, kind="stable")
    rows, groups = rows[order], groups[order]
    cuts = np.flatnonzero(np.diff(groups)) + 1
    out = np.split(rows, cuts)
    out.sort(key=lambda g: int(g[0]))
    return out
