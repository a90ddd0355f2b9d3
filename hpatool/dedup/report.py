"""What ``dedup`` reports about its clusters: how many join each pair of datasets (and how
many lie within one), which ones hold labelled samples that disagree, and a few examples."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

#: The order of the dataset-kind pairs in the report: leaks into validation and test first.
_KIND_ORDER = {
    ("train", "external"): 0,
    ("train", "test"): 1,
    ("external", "test"): 2,
    ("train", "train"): 3,
    ("external", "external"): 4,
    ("test", "test"): 5,
}
#: How many example clusters the report shows.
EXAMPLES = 5


@dataclass(frozen=True)
class PairCount:
    """Clusters with members in both ``a`` and ``b`` (``a == b``: two or more in ``a``)."""

    a: str
    kind_a: str
    b: str
    kind_b: str
    clusters: int

    @property
    def within(self) -> bool:
        return self.a == self.b


@dataclass(frozen=True)
class Member:
    dataset: str
    sample_id: str
    target: tuple[int, ...] | None


@dataclass
class DedupReport:
    """``pair_counts`` (every dataset pair with a shared cluster), ``label_conflicts`` (the
    clusters whose labelled members disagree), ``examples`` (a few clusters, conflicts first,
    with their members' labels), ``sizes`` (cluster size -> how many)."""

    pair_counts: list[PairCount] = field(default_factory=list)
    label_conflicts: int = 0
    examples: list[list[Member]] = field(default_factory=list)
    sizes: dict[int, int] = field(default_factory=dict)


def _kind_pair(a: str, b: str) -> tuple[str, str]:
    pair = (a, b)
    return pair if pair in _KIND_ORDER else (b, a)


def conflicting(members: Sequence[Member]) -> bool:
    """Whether the labelled members of a cluster disagree on their labels."""
    labels = {frozenset(m.target) for m in members if m.target is not None}
    return len(labels) > 1


def build_report(
    names: Sequence[str],
    kinds: Mapping[str, str],
    clusters: Sequence[Sequence[tuple[str, str]]],
    targets: Mapping[tuple[str, str], tuple[int, ...] | None],
) -> DedupReport:
    report = DedupReport()
    counts: Counter[tuple[str, str]] = Counter()
    position = {n: k for k, n in enumerate(names)}
    conflicts: list[list[Member]] = []
    others: list[list[Member]] = []
    for cluster in clusters:
        per_dataset = Counter(d for d, _ in cluster)
        present = sorted(per_dataset, key=position.__getitem__)
        for k, a in enumerate(present):
            if per_dataset[a] >= 2:
                counts[(a, a)] += 1
            for b in present[k + 1 :]:
                counts[(a, b)] += 1
        members = [Member(d, i, targets.get((d, i))) for d, i in cluster]
        (conflicts if conflicting(members) else others).append(members)
        report.sizes[len(cluster)] = report.sizes.get(len(cluster), 0) + 1
    report.label_conflicts = len(conflicts)
    report.examples = (conflicts + others)[:EXAMPLES]

    def order(item: tuple[tuple[str, str], int]) -> tuple[int, int, int]:
        (a, b), _ = item
        kind_pair = _kind_pair(kinds[a], kinds[b])
        return (_KIND_ORDER[kind_pair], position[a], position[b])

    report.pair_counts = [
        PairCount(a, kinds[a], b, kinds[b], n) for (a, b), n in sorted(counts.items(), key=order)
    ]
    report.sizes = dict(sorted(report.sizes.items()))
    return report
