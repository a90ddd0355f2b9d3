"""Matching 128-bit hashes (``hpatool.dedup.matching``): multi-index hashing finds exactly the
pairs a brute-force comparison finds, at every distance, and clusters are transitive."""

from __future__ import annotations

import numpy as np
import pytest

from hpatool.dedup import MAX_MAX_DISTANCE
from hpatool.dedup.matching import BLOCKS, Pairs, clusters, find_pairs, popcount, radii


def _brute_force(hashes: np.ndarray, d: int) -> set[tuple[int, int]]:
    x = hashes[:, None, :] ^ hashes[None, :, :]
    dist = np.bitwise_count(x).sum(axis=2)
    i, j = np.nonzero(np.triu(dist <= d, k=1))
    return set(zip(i.tolist(), j.tolist(), strict=True))


def _planted(n: int, copies: int, flips: int, seed: int = 0) -> np.ndarray:
    """``n`` random hashes, then ``copies`` of the first ones with ``flips`` bits changed."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 2**64, size=(n, 2), dtype=np.uint64, endpoint=False)
    planted = hashes[:copies].copy()
    for k in range(copies):
        for bit in rng.choice(128, flips, replace=False):
            planted[k, bit // 64] ^= np.uint64(1) << np.uint64(bit % 64)
    return np.concatenate([hashes, planted])


@pytest.mark.parametrize("d", [0, 1, 5, 7, 8, 12, 16, 20, MAX_MAX_DISTANCE])
def test_multi_index_finds_exactly_the_brute_force_pairs(d: int) -> None:
    # Near-duplicates at every distance up to d + 2, so pairs just inside and just outside
    # the limit both exist.
    parts = [_planted(150, 40, flips, seed=flips) for flips in range(0, d + 3, max(1, d // 4))]
    hashes = np.concatenate(parts)
    # and a few exact duplicate groups (the same hash three times)
    hashes = np.concatenate([hashes, hashes[:5], hashes[:5]])
    found = find_pairs(hashes, d)
    expected = _brute_force(hashes, d)
    assert set(zip(found.i.tolist(), found.j.tolist(), strict=True)) == expected
    assert len(found) == len(expected) > 0
    assert (found.i < found.j).all()
    brute = np.bitwise_count(hashes[found.i] ^ hashes[found.j]).sum(axis=1)
    assert (found.distance == brute).all() and (found.distance <= d).all()


@pytest.mark.parametrize("d", range(0, MAX_MAX_DISTANCE + 1))
def test_block_radii_cover_the_distance(d: int) -> None:
    # pigeonhole: a pair within d differs in at most r_j bits of some searched block j
    r = [x for x in radii(d) if x >= 0]  # -1: a block not searched
    assert len(radii(d)) == BLOCKS
    assert sum(x + 1 for x in r) > d
    assert max(r) - min(r) <= 1


def test_too_few_hashes_and_no_pairs() -> None:
    one = np.array([[1, 2]], dtype=np.uint64)
    assert len(find_pairs(one, 16)) == 0
    assert len(find_pairs(np.zeros((0, 2), dtype=np.uint64), 16)) == 0
    far = np.array([[0, 0], [2**64 - 1, 2**64 - 1]], dtype=np.uint64)
    assert len(find_pairs(far, 24)) == 0
    assert clusters(2, find_pairs(far, 24)) == []


def test_clusters_are_transitive_and_ordered() -> None:
    pairs = Pairs(np.array([5, 0, 1, 7]), np.array([6, 1, 3, 8]), np.array([1, 2, 3, 0]))
    groups = clusters(10, pairs)
    assert [g.tolist() for g in groups] == [[0, 1, 3], [5, 6], [7, 8]]


def test_without_numpy_2_popcount(monkeypatch: pytest.MonkeyPatch) -> None:
    hashes = _planted(300, 60, 6, seed=3)
    expected = np.bitwise_count(hashes)
    monkeypatch.delattr(np, "bitwise_count")
    assert (popcount(hashes) == expected).all()
    found = find_pairs(hashes, 8)
    monkeypatch.undo()
    assert set(zip(found.i.tolist(), found.j.tolist(), strict=True)) == _brute_force(hashes, 8)
