"""``hpatool dedup``: perceptual hashes of registered samples, near-duplicate pairs and
clusters across datasets, stored in the registry.

The package: ``hashing`` (one sample's 128-bit hash), ``matching`` (every pair within a
distance, by multi-index hashing; clusters), ``report`` (what the clusters join, label
conflicts, examples) and ``job`` (``find_duplicates``: the command's work). This module holds
only the option limits, so that the command's ``--help`` imports nothing heavy.
"""

from __future__ import annotations

from hpatool.errors import UsageError

#: The default ``--max-distance``, in bits of the 128 (see docs/workflow.md): on the real
#: images copies made the way the HPA v18 set was made, with brightness or contrast changes,
#: differ by at most 10 bits, and two different real fields by at least 38.
DEFAULT_MAX_DISTANCE = 16
#: The largest ``--max-distance``: matching time grows quickly with it (about a minute for
#: 200,000 samples at 24), and beyond it two different fields start to match.
MAX_MAX_DISTANCE = 24


def check_max_distance(max_distance: int) -> int:
    if not 0 <= max_distance <= MAX_MAX_DISTANCE:
        raise UsageError(
            f"invalid --max-distance {max_distance}: give 0 to {MAX_MAX_DISTANCE} bits of the "
            f"128-bit hash (default {DEFAULT_MAX_DISTANCE})"
        )
    return max_distance
