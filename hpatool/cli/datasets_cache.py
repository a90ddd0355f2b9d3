"""``hpatool datasets cache``: decode datasets' samples once into their caches, or drop them
(the library part: ``hpatool.data.cache_build`` and ``hpatool.data.cache``)."""

from __future__ import annotations

from typing import Annotated

import typer

from hpatool.cli._common import HomeOpt, JsonOpt, open_registry


def cache_datasets(
    names: Annotated[
        list[str],
        typer.Argument(metavar="NAME", help="Dataset names.", show_default=False),
    ],
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            help="Processes decoding at once (default: min(4, CPUs)).",
            min=1,
            show_default=False,
        ),
    ] = None,
    drop: Annotated[
        bool, typer.Option("--drop", help="Remove the datasets' caches instead.")
    ] = False,
    json_: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Decode every sample with images once into a cache that train, cv, evaluate and predict
    read instead of the PNGs (uint8 arrays, 1 MiB a 512 px sample; a crop reads only its
    window).

    The cache is a folder of the registry home (cache/NAME). A rerun, or a run after Ctrl-C or
    a kill, decodes only what is not cached yet or changed since; a cache whose build did not
    finish is never used. Commands use a complete cache only while it matches the images (the
    same samples, each file's size and modification time): one that does not is refused with
    the command that rebuilds it (or pass --cache off). datasets remove removes it too;
    --drop removes it alone.

    Example: hpatool datasets cache kaggle-train hpa-v18-512 --workers 8
    """
    from hpatool.cli._console import out, print_json, progress_bar
    from hpatool.data.cache import drop_cache
    from hpatool.data.cache_build import build_cache
    from hpatool.engine.config import default_workers
    from hpatool.errors import WorkFailed

    with open_registry(home) as reg:
        for name in names:
            reg.dataset(name)  # every name known before any work
        if drop:
            freed = {name: drop_cache(reg.path.parent, name) for name in names}
            if json_:
                print_json({"dropped": freed})
                return
            for name, size in freed.items():
                what = f"{size / 2**30:,.2f} GiB freed" if size else "it had none"
                out().print(f"Removed the decoded cache of {name} ({what})", markup=False)
            return
        results = []
        for name in names:
            with progress_bar(f"cache {name}", "samples") as bar:
                results.append(
                    build_cache(reg, name, workers=workers or default_workers(), progress=bar)
                )
    if json_:
        print_json([r.to_json() for r in results])
    else:
        for r in results:
            left = sum(r.left_out.values())
            out().print(
                f"Cached {r.samples - len(r.failed):,} of {r.samples:,} samples of {r.dataset} "
                f"({r.decoded:,} decoded now, {r.reused:,} already cached"
                + (f", {r.removed:,} removed" if r.removed else "")
                + (f"; {left:,} without images left out" if left else "")
                + f") in {r.seconds:,.1f} s: {r.bytes / 2**30:,.2f} GiB in {r.folder}",
                markup=False,
            )
    failed = [(r.dataset, sid, why) for r in results for sid, why in r.failed.items()]
    if failed:
        name, sid, why = failed[0]
        raise WorkFailed(
            f"{len(failed):,} samples could not be cached (first: {name} {sid}: {why}); the "
            "cache stays incomplete and unused: fix or remove them and run again"
        )
