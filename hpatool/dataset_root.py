"""``datasets set-root``: attach an image folder to a registered dataset (one registered from a
label CSV alone), or point a dataset at the folder its images were moved or copied to.

Kept as they are: the samples, their labels and per-sample statuses, the folds, the lineage.
What was made from the images is kept only where it is still true of the new folder's files:

- a dedup hash (``sample_hashes``) is kept while the hashed files there have the size and
  modification time it was made from (``dedup.hashing.signature``, the test ``dedup`` itself
  makes before reusing a hash; ``cp -p``, ``rsync -a`` and ``shutil.copytree`` keep both); the
  others are dropped, with the samples' places in duplicate clusters, and ``dedup`` hashes them
  again;
- the decoded cache (``datasets cache``) is left as it is: its index stamps each sample's four
  files the same way, ``train`` refuses it while a stamp differs, and a rebuild decodes only the
  samples whose files changed. The result counts its samples that are still current.

The folder is checked before the registry is touched, and the registry's writes (the root, the
dropped hashes and cluster places) are one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpatool.errors import NotFound, UsageError
from hpatool.registry import Registry


@dataclass(frozen=True)
class RootChange:
    """What ``set_root`` changed and kept."""

    dataset: str
    root: Path
    previous: Path | None
    samples: int
    #: samples with all four ``<Id>_<colour>.png`` files in ``root``
    with_images: int
    hashes_kept: int = 0
    hashes_dropped: int = 0
    #: the datasets ``dedup`` clustered this one with (what to run again); empty if never run
    dedup_with: list[str] = field(default_factory=list)
    #: the fold count if the dataset is split (its folds are kept)
    folds: int | None = None
    #: the decoded cache's samples and how many of them still match the files in ``root``;
    #: ``None``: the dataset has no cache
    cache_samples: int | None = None
    cache_current: int = 0

    @property
    def no_images(self) -> bool:
        """Whether none of the dataset's samples has its images in ``root``."""
        return self.samples > 0 and self.with_images == 0

    def to_json(self) -> dict[str, Any]:
        """The ``datasets set-root --json`` document."""
        cache = None
        if self.cache_samples is not None:
            cache = {
                "samples": self.cache_samples,
                "current": self.cache_current,
                "stale": self.cache_samples - self.cache_current,
            }
        return {
            "dataset": self.dataset,
            "root": str(self.root),
            "previous_root": None if self.previous is None else str(self.previous),
            "samples": self.samples,
            "with_images": self.with_images,
            "folds": self.folds,
            "hashes": {"kept": self.hashes_kept, "dropped": self.hashes_dropped},
            "dedup_with": self.dedup_with,
            "cache": cache,
        }


def check_image_folder(folder: Path, name: str) -> Path:
    """``folder`` made absolute, or a ``UsageError`` (exit 2) if it is not an existing folder
    whose name can be recorded."""
    from hpatool.convert.outdir import check_path_text

    check_path_text(folder, "image folder")
    full = folder.expanduser().resolve()
    if not full.exists():
        raise NotFound(
            f"{folder}: no such folder; give the folder holding the <Id>_<colour>.png images of "
            f"dataset {name!r}"
        )
    if not full.is_dir():
        raise UsageError(
            f"{folder}: is not a folder; give the folder holding the <Id>_<colour>.png images "
            f"of dataset {name!r}"
        )
    return full


def set_root(reg: Registry, name: str, folder: Path) -> RootChange:
    """Make ``folder`` the image folder of dataset ``name``; see the module docstring."""
    from hpatool.availability import files_present

    root = check_image_folder(folder, name)
    record = reg.dataset(name)
    samples = reg.samples(name)
    with_images = sum(1 for s in samples if files_present(root, s.id))
    signatures = {sid: _signature(root, sid) for sid in reg.stored_hashes(name)}
    with reg.transaction():
        stored = reg.stored_hashes(name)  # again, under the write lock
        stale = []
        for sid, known in stored.items():
            now = signatures[sid] if sid in signatures else _signature(root, sid)
            if now != known.signature:  # changed, or gone (None)
                stale.append(sid)
        reg.drop_hashes(name, stale)
        reg.update_dataset(name, root=root)
        info = reg.dedup_info(name)
        split = reg.split_info(name)
    cache = _cache_current(reg.path.parent, name, root)
    return RootChange(
        dataset=name,
        root=root,
        previous=record.root,
        samples=len(samples),
        with_images=with_images,
        hashes_kept=len(stored) - len(stale),
        hashes_dropped=len(stale),
        dedup_with=list(info["datasets"]) if info is not None else [],
        folds=int(split["folds"]) if split is not None else None,
        cache_samples=None if cache is None else cache[0],
        cache_current=0 if cache is None else cache[1],
    )


def _signature(root: Path, sample_id: str) -> str | None:
    """The dedup signature of the sample's files in ``root`` (``None``: a file is missing, or
    the id cannot name a file)."""
    from hpatool.dedup.hashing import signature

    try:
        return signature(root, sample_id)
    except ValueError:  # an id edited into an unsafe one: no file, no hash
        return None


def _cache_current(home: Path, name: str, root: Path) -> tuple[int, int] | None:
    """``(cached samples, those whose four files in root still match their stamp)``; ``None``
    without a cache."""
    from hpatool.data.cache import (
        INDEX_FILE,
        cache_folder,
        index_rows,
        open_index,
        sample_stamp,
    )

    folder = cache_folder(home, name)
    if not (folder / INDEX_FILE).is_file():
        return None
    with open_index(folder, create=False) as conn:
        rows = index_rows(conn)
    current = 0
    for sample_id, (stamp, _, _) in rows.items():
        try:
            current += sample_stamp(root, sample_id) == stamp
        except (OSError, ValueError):  # a file gone, an unsafe id
            continue
    return len(rows), current
