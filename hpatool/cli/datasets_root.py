"""``hpatool datasets set-root``: attach or change a registered dataset's image folder (the
library part: ``hpatool.dataset_root``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hpatool.cli._common import HomeOpt, JsonOpt, open_registry

if TYPE_CHECKING:
    from hpatool.dataset_root import RootChange


def set_root(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Dataset name.", show_default=False)],
    folder: Annotated[
        Path,
        typer.Argument(
            metavar="DIR", help="Folder of the <Id>_<colour>.png images.", show_default=False
        ),
    ],
    json_: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Attach an image folder to a registered dataset (one added from a label CSV alone), or
    point it at the folder its images were moved or copied to.

    The samples, labels, statuses and folds are kept. A dedup hash is kept while the sample's
    hashed files in DIR have the size and modification time it was made from (cp -p, rsync -a
    keep them); the others are dropped, and 'hpatool dedup' hashes them again. The decoded
    cache is kept: commands refuse it while a sample's files differ, and 'hpatool datasets
    cache NAME' re-decodes only those. A DIR holding none of the dataset's images is accepted
    with a warning.

    Example: hpatool datasets set-root kaggle-train /data/kaggle/train
    """
    from hpatool.cli._console import err, print_json
    from hpatool.dataset_root import set_root as set_dataset_root

    with open_registry(home) as reg:
        change = set_dataset_root(reg, name, folder)
    if change.no_images:
        err().print(
            f"warning: none of the {change.samples:,} samples of {name!r} has its four "
            f"<Id>_<colour>.png files in {change.root}; raw JPEGs are converted with "
            f"'hpatool preprocess SRC_DIR --out DIR'",
            markup=False,
            soft_wrap=True,
        )
    if json_:
        print_json(change.to_json())
        return
    _print_change(change)


def _print_change(change: RootChange) -> None:
    from hpatool.cli._console import out

    console = out()
    was = str(change.previous) if change.previous is not None else "none (labels only)"
    if change.previous == change.root:
        was = "unchanged"
    console.print(
        f"Image folder of [bold]{change.dataset}[/]: {change.root} (was: {was}); "
        f"{change.with_images:,} of {change.samples:,} samples have their four images there"
    )
    kept = "samples, labels and statuses kept"
    if change.folds is not None:
        kept += f"; its {change.folds} folds kept"
    console.print(kept, markup=False)
    if change.hashes_kept or change.hashes_dropped:
        line = f"Dedup hashes: {change.hashes_kept:,} kept (same files)"
        if change.hashes_dropped:
            names = " ".join(change.dedup_with or [change.dataset])
            line += (
                f", {change.hashes_dropped:,} dropped (files differ or are missing in the new "
                f"folder), with their duplicate clusters: run 'hpatool dedup {names}' again"
            )
        console.print(line, markup=False, soft_wrap=True)
    if change.cache_samples is not None:
        stale = change.cache_samples - change.cache_current
        line = f"Decoded cache: {change.cache_samples:,} samples, "
        if stale:
            line += (
                f"{stale:,} of them with other files in the new folder: run 'hpatool datasets "
                f"cache {change.dataset}' to re-decode them (commands refuse the cache until then)"
            )
        else:
            line += "all still current"
        console.print(line, markup=False, soft_wrap=True)
