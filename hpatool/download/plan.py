"""What a download still has to do, read from the disk (a file is only ever renamed into place
whole, so what is there is finished), and the file jobs for it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hpatool.convert.outdir import looks_whole, names_ending, remove_leftovers
from hpatool.download._client import FileJob
from hpatool.download.urls import image_url


@dataclass(frozen=True)
class Folders:
    """Where a download writes: PNGs in ``out``, raw JPEGs in ``raw``; ``root`` is the
    dataset's image folder (``raw`` with ``--size 0``)."""

    out: Path
    raw: Path
    root: Path

    @classmethod
    def under(cls, out: Path, size: int) -> Folders:
        return cls(out=out, raw=out / "raw", root=out if size > 0 else out / "raw")


@dataclass
class Plan:
    """The stains of one sample to fetch, and those to convert from raw files on disk."""

    fetch: list[str] = field(default_factory=list)
    local: list[str] = field(default_factory=list)

    @property
    def files(self) -> int:
        return len(self.fetch) + len(self.local)


def plan_from_disk(
    chosen: list[str], colours: Iterable[str], folders: Folders, size: int, keep_raw: bool
) -> dict[str, Plan]:
    """The samples of ``chosen`` with work left, and what work (after removing the leftovers
    of a killed run for these ids). A file counts as there only if it looks whole
    (:func:`~hpatool.convert.outdir.looks_whole`): an empty or truncated one is made again."""
    chosen_set = set(chosen)
    remove_leftovers(folders.out, chosen_set)
    if keep_raw or folders.raw.is_dir():
        remove_leftovers(folders.raw, chosen_set)
    pngs = names_ending(folders.out, ".png") if size > 0 else set()
    raws = names_ending(folders.raw, ".jpg")
    plans: dict[str, Plan] = {}
    for sample_id in chosen:
        plan = Plan()
        for colour in colours:
            png, raw = f"{sample_id}_{colour}.png", f"{sample_id}_{colour}.jpg"
            png_ok = size == 0 or (png in pngs and looks_whole(folders.out / png))
            raw_ok = raw in raws and looks_whole(folders.raw / raw)
            if png_ok and (raw_ok or not keep_raw):
                continue
            (plan.local if (not png_ok and raw_ok) else plan.fetch).append(colour)
        if plan.files:
            plans[sample_id] = plan
    return plans


def status_fixes(
    chosen: list[str], plans: dict[str, Plan], statuses: dict[str, str | None], done: str
) -> list[tuple[str, str | None]]:
    """Registry statuses that disagree with the disk, corrected: a ``done`` sample with work
    left (its files were removed since) becomes pending; a finished one whose status a kill
    lost becomes ``done``."""
    fixes: list[tuple[str, str | None]] = []
    for sample_id in chosen:
        if sample_id in plans:
            if statuses.get(sample_id) == done:
                fixes.append((sample_id, None))
        elif statuses.get(sample_id) != done:
            fixes.append((sample_id, done))
    return fixes


def file_jobs(
    plans: dict[str, Plan], base: str, folders: Folders, size: int, *, keep_raw: bool
) -> Iterator[FileJob]:
    """One job per file of ``plans``: a sample's local conversions first, then its fetches."""
    for sample_id, plan in plans.items():
        for colour, local in [(c, True) for c in plan.local] + [(c, False) for c in plan.fetch]:
            name = f"{sample_id}_{colour}"
            part_dir = folders.raw if keep_raw else folders.out
            yield FileJob(
                sample_id=sample_id,
                colour=colour,
                url=image_url(base, sample_id, colour),
                raw=folders.raw / f"{name}.jpg",
                png=folders.out / f"{name}.png" if size > 0 else None,
                part=part_dir / f"{name}.jpg.part",
                keep_raw=keep_raw,
                local=local,
            )
