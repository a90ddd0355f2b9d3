"""Registering what ``preprocess`` made: the output dataset's name (given, or derived from the
source), the checks a rerun must pass before any work, and the one transaction that creates or
updates the dataset with its samples, statuses, lineage and the source dataset's folds (a
resized copy of a split dataset is split the same way: same ids, same folds)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpatool import __version__
from hpatool.errors import AlreadyExists
from hpatool.ids import COLOURS
from hpatool.registry import DatasetRecord, Registry, check_name


@dataclass(frozen=True)
class _Registration:
    """Registering the output, as checked before any work: the dataset ``name`` (``existing``
    if a rerun updates it) and, with ``--labels``, its label table, path and sha256."""

    reg: Registry
    name: str
    existing: DatasetRecord | None
    table: Any = None
    labels_path: str | None = None
    labels_sha256: str | None = None
    #: ``--kind``; None: the source dataset's kind, else train / test by the labels
    kind: str | None = None


def default_output_name(reg: Registry, src: Path, out: Path, size: int) -> str:
    """The dataset name ``preprocess`` registers its output under when no ``--name`` is given:
    the dataset an earlier run of the same conversion registered; else ``<source>-<size>`` when
    the source folder is a registered dataset's, else the output folder's name; made unique
    with ``-2``, ``-3``... if taken."""
    for record in reg.datasets():
        prov = record.provenance
        made_here = prov.get("made_by") == "preprocess" and record.root == out
        if made_here and prov.get("source") == str(src):
            return record.name
    source = reg.dataset_at(src)
    if source is not None:
        base = f"{source.name}-{size}" if size else f"{source.name}-converted"
    else:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "-", out.name).strip("-._")[:56] or "images"
        if not base[0].isalnum():
            base = f"d{base}"
    name, n = base, 1
    while reg.has_dataset(name):
        n += 1
        name = f"{base}-{n}"
    return name


def _check_registration(reg: Registry, name: str, src: Path, out: Path) -> DatasetRecord | None:
    """The existing dataset ``name`` if a rerun may update it; None if the name is new."""
    check_name(name)
    if not reg.has_dataset(name):
        return None
    record = reg.dataset(name)
    prov = record.provenance
    same_source = prov.get("source") == str(src) and record.root == out
    if prov.get("made_by") == "preprocess" and same_source:
        return record
    raise AlreadyExists(
        f"dataset {name!r} already exists and was not made by 'hpatool preprocess {src} --out "
        f"{out}'; choose another --name or run 'hpatool datasets remove {name}' first"
    )


def _plan_registration(
    reg: Registry | None,
    name: str | None,
    labels: Path | None,
    src: Path,
    out: Path,
    size: int,
    *,
    kind: str | None = None,
) -> _Registration | None:
    """Check the registration (name, label CSV) before any work; None without a registry."""
    if reg is None:
        return None
    if name is None:
        name = default_output_name(reg, src, out, size)
    existing = _check_registration(reg, name, src, out)
    if labels is None:
        return _Registration(reg, name, existing, kind=kind)
    from hpatool.labels import load_label_csv

    table = load_label_csv(labels)
    return _Registration(
        reg,
        name,
        existing,
        table=table,
        labels_path=str(labels.expanduser().resolve()),
        labels_sha256=table.sha256,  # of the bytes parsed: the file is read once
        kind=kind,
    )


# --------------------------------------------------------------------------- registration


def _register_output(
    plan: _Registration,
    src: Path,
    out: Path,
    *,
    size: int,
    channel_rule: str,
    ids_found: list[str],
    present: set[str],
    failed_ids: set[str],
) -> DatasetRecord:
    """Create or update the output dataset, its samples, statuses and lineage: one
    transaction."""
    reg, name = plan.reg, plan.name

    def status(sample_id: str) -> str | None:
        if all(f"{sample_id}_{c}.png" in present for c in COLOURS):
            return "done"
        return "failed" if sample_id in failed_ids else None

    with reg.transaction():
        earlier = plan.existing.provenance.get("source_dataset") if plan.existing else None
        parent = reg.dataset_at(src, prefer=earlier)
        if parent is not None and parent.name == name:
            parent = None
        ids, targets, kind, labels_path, labels_sha = _samples_of(reg, plan, parent, ids_found)
        kind = plan.kind or kind
        provenance = {
            "made_by": "preprocess",
            "source": str(src),
            "source_dataset": parent.name if parent is not None else None,
            "size": size,
            "channel_rule": channel_rule,
            "labels": labels_path,
            "tool_version": __version__,
        }
        provenance = {k: v for k, v in provenance.items() if v is not None}
        carried = _parent_folds(reg, parent, name, ids, existing=plan.existing is not None)
        if carried is not None:
            provenance["folds_from"] = carried.source
            provenance["folds_carried"] = len(carried.ids)
            provenance["folds_sha256"] = carried.digest
        if plan.existing is None:
            record = reg.create_dataset(
                name,
                kind,
                ids,
                targets,
                root=out,
                labels_path=labels_path,
                labels_sha256=labels_sha,
                parent=parent.name if parent is not None else None,
                provenance=provenance,
                statuses=[status(i) for i in ids],
            )
        else:
            known = {s.id for s in reg.samples(name)}
            new = [(i, t) for i, t in zip(ids, targets, strict=True) if i not in known]
            if new:
                reg.add_samples(name, [i for i, _ in new], [t for _, t in new])
            reg.set_status(name, [(i, status(i)) for i in ids])
            if labels_path is not None:
                reg.set_origin(name, labels_path=labels_path, labels_sha256=labels_sha)
            if parent is not None:
                reg.set_origin(name, parent=parent.name)
            record = reg.update_dataset(name, root=out, provenance=provenance, kind=plan.kind)
        if carried is not None:
            reg.set_folds(name, carried.ids, carried.folds_of, folds=carried.n, seed=carried.seed)
        return record


@dataclass(frozen=True)
class _CarriedFolds:
    """The parent's folds of the output's samples (same ids, same folds)."""

    source: str
    ids: list[str]
    folds_of: list[int]
    n: int
    seed: int
    digest: str  # ``_folds_digest`` of the carried folds


def _parent_folds(
    reg: Registry, parent: DatasetRecord | None, name: str, ids: list[str], *, existing: bool
) -> _CarriedFolds | None:
    """The folds the output takes from its split parent (a resized copy must validate on the
    same samples): when the output is new, not split yet, or holds the folds an earlier run
    carried (brought up to date: the parent may have been split again). A split made since by
    ``hpatool split`` is left alone; ``None`` then, or if the parent is not split or shares no
    id."""
    if parent is None:
        return None
    info = reg.split_info(parent.name)
    if info is None:
        return None
    own = reg.split_info(name) if existing else None
    if own is not None:
        prov = reg.dataset(name).provenance
        digest = _folds_digest(reg.folds(name), own["folds"], own["seed"])
        if prov.get("folds_from") != parent.name or prov.get("folds_sha256") != digest:
            return None  # split since ('hpatool split'): keep it
    parent_folds = reg.folds(parent.name)
    shared = [i for i in ids if i in parent_folds]
    if not shared:
        return None
    n, seed = int(info["folds"]), int(info["seed"])
    folds_of = [parent_folds[i] for i in shared]
    digest = _folds_digest(dict(zip(shared, folds_of, strict=True)), n, seed)
    return _CarriedFolds(parent.name, shared, folds_of, n, seed, digest)


def _folds_digest(folds: dict[str, int], n: int, seed: int) -> str:
    """A fingerprint of a fold assignment: a rerun tells folds it carried from a split made
    since by ``hpatool split``."""
    import hashlib

    text = f"{n} {seed}\n" + "".join(f"{i}\t{k}\n" for i, k in sorted(folds.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def carried_folds_line(record: DatasetRecord) -> str | None:
    """What ``preprocess`` says about the folds its output took from the source dataset, or
    ``None`` if it took none."""
    source = record.provenance.get("folds_from")
    if not source:
        return None
    n = record.provenance.get("folds_carried", record.samples)
    return (
        f"Folds of {source} carried over: {n:,} samples keep their fold (same ids, same "
        f"folds), so runs on {record.name} validate on the same samples as on {source}"
    )


def _samples_of(
    reg: Registry, plan: _Registration, parent: DatasetRecord | None, ids_found: list[str]
) -> tuple[list[str], list[tuple[int, ...] | None], str, str | None, str | None]:
    """The output dataset's ``(ids, targets, kind, labels_path, labels_sha256)``: from
    ``--labels``, else from the source dataset, else the ids found, unlabelled."""
    if plan.table is not None:
        table = plan.table
        kind = parent.kind if parent is not None else ("train" if table.labelled else "test")
        return list(table.ids), list(table.targets), kind, plan.labels_path, plan.labels_sha256
    if parent is not None:
        samples = reg.samples(parent.name)
        return (
            [s.id for s in samples],
            [s.target for s in samples],
            parent.kind,
            parent.labels_path,
            parent.labels_sha256,
        )
    return list(ids_found), [None] * len(ids_found), "test", None, None
