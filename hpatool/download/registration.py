"""``download-external``'s dataset in the registry: the label CSV read and checked, the
external dataset created or updated with its provenance, and undone again when a run stops
for a wrong ``--base-url``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hpatool import __version__
from hpatool.convert.outdir import check_path_text
from hpatool.download.options import DownloadOptions
from hpatool.download.plan import Folders
from hpatool.download.urls import redact_url, url_problem
from hpatool.errors import DataError, UsageError
from hpatool.labels import LabelTable, load_label_csv
from hpatool.registry import DatasetRecord, Registry, now


@dataclass(frozen=True)
class Labels:
    """The label CSV, read and checked: its table, absolute path and sha256."""

    table: LabelTable
    path: Path
    sha256: str


def read_labels(labels: Path) -> Labels:
    """The label CSV, every id checked to make a safe URL (a ``DataError`` naming the row)."""
    check_path_text(labels, "--labels file")
    table = load_label_csv(labels)
    for row, sample_id in enumerate(table.ids, 1):
        problem = url_problem(sample_id, safe=True)
        if problem:
            raise DataError(f"{labels}: row {row}: Id {sample_id!r}: {problem}")
    path = labels.expanduser().resolve()
    return Labels(table, path, table.sha256)  # of the bytes parsed: the CSV is read once


def check_existing(existing: DatasetRecord, name: str, labels: Path, sha: str) -> None:
    """Refuse to update a dataset that is not an external one of the same label CSV."""
    if existing.kind != "external":
        raise UsageError(
            f"dataset {name!r} is a {existing.kind} dataset, not external; give "
            "download-external another --name"
        )
    if existing.labels_sha256 != sha:
        source = (
            f"{existing.labels_path} (sha256 {existing.labels_sha256[:12]})"
            if existing.labels_sha256
            else "no label CSV"
        )
        raise UsageError(
            f"dataset {name!r} was registered from {source}, and {labels} differs; give another "
            f"--name, or run 'hpatool datasets remove {name}' and rerun (files already downloaded "
            "are kept and not fetched again)"
        )


def register(
    reg: Registry,
    opts: DownloadOptions,
    source: Labels,
    existing: DatasetRecord | None,
    folders: Folders,
) -> None:
    """Create the external dataset, or update its root, origin and provenance."""
    provenance = {
        "made_by": "download-external",
        "labels": str(source.path),
        "labels_sha256": source.sha256,
        "base_url": redact_url(opts.base_url),  # never a password
        "size": opts.size,
        "channel_rule": opts.channel_rule,
        "colours": ",".join(opts.colours),
        "keep_raw": opts.keep_raw,
        "out": str(folders.out),
        "raw_dir": str(folders.raw) if opts.keep_raw else None,
        "shard": str(opts.shard) if opts.shard else None,
        "tool_version": __version__,
        "last_run": now(),
    }
    provenance = {k: v for k, v in provenance.items() if v is not None}
    if existing is None:
        reg.create_dataset(
            opts.name,
            "external",
            source.table.ids,
            source.table.targets,
            root=folders.root,
            labels_path=str(source.path),
            labels_sha256=source.sha256,
            provenance=provenance,
        )
        return
    if existing.labels_path != str(source.path):
        reg.set_origin(opts.name, labels_path=str(source.path), labels_sha256=source.sha256)
    old = {k: v for k, v in existing.provenance.items() if k not in ("raw_dir", "shard")}
    reg.update_dataset(opts.name, root=folders.root, provenance={**old, **provenance})


def unregister(reg: Registry, name: str, before: DatasetRecord | None) -> None:
    """Undo what a run stopped for a wrong ``--base-url`` registered: remove the dataset it
    created, or put back the root, label CSV and provenance the dataset had before it."""
    with reg.transaction():
        if not reg.has_dataset(name):
            return
        if before is None:
            reg.remove_dataset(name)
            return
        if before.labels_path is not None and reg.dataset(name).labels_path != before.labels_path:
            reg.set_origin(name, labels_path=before.labels_path, labels_sha256=before.labels_sha256)
        reg.update_dataset(name, root=before.root, provenance=dict(before.provenance))
