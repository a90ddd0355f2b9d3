"""Which registered samples can be used: their images are there.

A download of the HPA v18 set is always partial (the server has permanent 404s, and a download
may be stopped and resumed), and a dataset registered from a CSV may point at a folder that
holds only some of its images. The commands that read images (``train``, ``evaluate``,
``predict``) and those that should describe what will be trained on (``stats``, ``split``)
work on the samples that are there, and say how many were left out and why.

A sample is usable when

- its registry status, where the dataset has statuses (datasets filled by ``download-external``
  or ``preprocess``), is ``done``: a sample not yet fetched, failed or missing on the server is
  left out for that reason; and
- its four channel files exist (one ``stat`` each: cheap, about 1 s for 74k samples).

``usable_samples`` returns the kept samples (registry order) and the counts per reason.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hpatool.ids import COLOURS, id_problem
from hpatool.registry import Registry
from hpatool.registry.records import Sample

#: The reason for samples whose dataset records statuses but that have none yet.
NOT_FETCHED = "not downloaded or converted yet"
#: The reason for samples whose channel files are not all in the dataset's folder.
FILES_MISSING = "without all four image files"
#: Registry status values and how they are reported.
STATUS_REASONS = {
    "failed": "failed to download or convert",
    "missing": "missing on the server (404)",
}
DONE = "done"


def status_reason(status: str) -> str:
    """How a sample's registry status is reported as a reason for leaving it out."""
    return STATUS_REASONS.get(status, f"status {status!r}")


@dataclass
class Usable:
    """The samples of one dataset that can be used, and why the others were left out."""

    dataset: str
    samples: list[Sample]
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> count
    #: with ``labels_only``: no image is there yet and no sample has a status, so the dataset
    #: was taken as labels alone and every sample kept
    labels_only: bool = False

    @property
    def n_left_out(self) -> int:
        return sum(self.left_out.values())

    def summary(self) -> str:
        """``'12 of 600 samples of 'x' left out (6 failed to download or convert, 6 without
        all four image files)'``, or ``''`` when none was."""
        if not self.left_out:
            return ""
        total = len(self.samples) + self.n_left_out
        reasons = ", ".join(f"{n:,} {why}" for why, n in sorted(self.left_out.items()))
        return f"{self.n_left_out:,} of {total:,} samples of {self.dataset!r} left out ({reasons})"

    def as_json(self) -> dict[str, object]:
        return {"used": len(self.samples), "left_out": dict(sorted(self.left_out.items()))}


def files_present(root: Path, sample_id: str) -> bool:
    """Whether all four ``<root>/<id>_<colour>.png`` files exist (an unsafe id: no)."""
    if id_problem(sample_id):
        return False
    base = os.fspath(root)
    return all(os.path.isfile(os.path.join(base, f"{sample_id}_{c}.png")) for c in COLOURS)


def usable_samples(
    reg: Registry,
    name: str,
    samples: Sequence[Sample] | None = None,
    *,
    check_files: bool = True,
    labels_only: bool = False,
) -> Usable:
    """The usable samples of dataset ``name`` (of ``samples``, a subset in registry order, if
    given) and the counts of those left out, by reason; see the module docstring. A dataset
    without an image folder keeps none (all ``FILES_MISSING``) when ``check_files``.

    With ``labels_only`` (the commands that need only labels: ``stats``, ``split``), a dataset
    with no image folder, or none of whose images is there yet and none of whose samples has a
    status (a label CSV registered before its images), keeps every sample."""
    record = reg.dataset(name)
    if samples is None:
        samples = reg.samples(name)
    has_status = any(s.status is not None for s in samples) or any(
        k is not None for k in reg.status_counts(name)
    )
    if labels_only and not has_status and record.root is None:
        return Usable(name, list(samples), labels_only=True)
    root = record.root if record.root is not None and record.root.is_dir() else None
    kept: list[Sample] = []
    left: Counter[str] = Counter()
    for s in samples:
        if has_status and s.status != DONE:
            left[NOT_FETCHED if s.status is None else status_reason(s.status)] += 1
        elif check_files and (root is None or not files_present(root, s.id)):
            left[FILES_MISSING] += 1
        else:
            kept.append(s)
    if labels_only and not kept and not has_status:
        return Usable(name, list(samples), labels_only=True)
    return Usable(name, kept, dict(left))
