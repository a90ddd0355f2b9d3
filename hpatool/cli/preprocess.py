"""``hpatool preprocess``: images on disk -> 8-bit greyscale channel PNGs, registered."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hpatool.cli._common import ROOT_HOME, HomeOpt, JsonOpt, open_registry
from hpatool.errors import WorkFailed
from hpatool.options import PreprocessConfig

if TYPE_CHECKING:
    from hpatool.preprocess import PreprocessSummary

#: The conversion options, shared with ``download-external``.
RuleOpt = Annotated[
    str,
    typer.Option(
        "--channel-rule",
        metavar="stain|luma",
        help="How an RGB image becomes one greyscale stain: 'stain' takes the stain's own band "
        "(red<-R, green<-G, blue<-B, yellow<-R), 'luma' is PIL convert('L').",
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers", help="Conversion processes (default: one per CPU).", show_default=False
    ),
]

SrcDirArg = Annotated[
    Path,
    typer.Argument(
        metavar="SRC_DIR",
        help="Folder of <Id>_<colour>.jpg/.png/.tif images, or of sub-folders of them (the HPA "
        "server's <antibody>/ layout).",
        show_default=False,
    ),
]
OutOpt = Annotated[
    Path,
    typer.Option(
        "--out", metavar="DIR", help="Folder for the <Id>_<colour>.png files.", show_default=False
    ),
]
SizeOpt = Annotated[
    int,
    typer.Option("--size", help="Output width and height in pixels (0: keep each image's size)."),
]
NameOpt = Annotated[
    str | None,
    typer.Option(
        "--name",
        metavar="NAME",
        help="Register the output as this dataset (its lineage is recorded). Default: "
        "<source dataset>-<size> when SRC_DIR is a registered dataset's folder, else the "
        "--out folder's name.",
        show_default=False,
    ),
]
LabelsOpt = Annotated[
    Path | None,
    typer.Option(
        "--labels",
        metavar="FILE.csv",
        help="Label CSV giving the registered dataset's samples and labels.",
        show_default=False,
    ),
]
KindOpt = Annotated[
    str | None,
    typer.Option(
        "--kind",
        metavar="train|test|external",
        help="The registered dataset's kind: train, test or external (default: the source "
        "dataset's kind, else train if --labels has a Target column, else test).",
        show_default=False,
    ),
]
RegisterOpt = Annotated[
    bool,
    typer.Option("--register/--no-register", help="Register the output as a dataset (see --name)."),
]


def preprocess(
    src_dir: SrcDirArg,
    out: OutOpt,
    size: SizeOpt = PreprocessConfig.size,
    channel_rule: RuleOpt = PreprocessConfig.channel_rule,
    workers: WorkersOpt = PreprocessConfig.workers,
    name: NameOpt = PreprocessConfig.name,
    labels: LabelsOpt = PreprocessConfig.labels,
    kind: KindOpt = PreprocessConfig.kind,
    register: RegisterOpt = True,
    json_: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Convert images on disk to 8-bit greyscale <Id>_<colour>.png channel files.

    Sources are <Id>_<colour>.jpg (RGB, one stain each: --channel-rule picks the band),
    .png (8- or 16-bit greyscale, or RGB) or .tif; 16-bit images are stretched to 8 bits
    over their own range. JPEGs are decoded at reduced size (draft mode) before the final
    LANCZOS resize. Idempotent: outputs already there are kept. Failures go to
    DIR/failures.csv and exit 1; the other files are still converted.

    A SRC_DIR with no such file of its own is read one level down, as the HPA image server lays
    images out: <antibody>/<plate>_<well>_<field>_<colour>.jpg is sample
    <antibody>_<plate>_<well>_<field> (other sub-folders: the file's <Id>). The outputs are
    flat, DIR/<Id>_<colour>.png; two sources for one output are a failure naming both.

    Example: hpatool preprocess data/hpa-v18/raw --out data/hpa-v18-512 --name hpa-v18-512
    """
    from hpatool.cli._console import progress_bar
    from hpatool.outputs import existing_registry
    from hpatool.preprocess import preprocess_images

    config = PreprocessConfig(
        size=size, channel_rule=channel_rule, workers=workers, name=name, labels=labels, kind=kind
    )
    with contextlib.ExitStack() as stack:
        reg = stack.enter_context(
            open_registry(home) if register else existing_registry(home or ROOT_HOME.get())
        )
        progress = stack.enter_context(progress_bar("preprocess", unit="files"))
        summary = preprocess_images(
            src_dir, out, config, registry=reg, progress=progress, register=register
        )
        incomplete = ""
        if summary.dataset is not None and reg is not None:
            from hpatool.availability import usable_samples

            incomplete = usable_samples(reg, summary.dataset.name).summary()
    _print_summary(summary, json_)
    if summary.failed:
        raise WorkFailed(
            f"{summary.failed:,} files could not be converted; see {summary.failures_csv}"
        )
    if incomplete and labels is not None:
        # registered, but not whole: the samples the user's --labels lists have no images
        raise WorkFailed(
            f"dataset registered, but {incomplete}: their images are not in {src_dir}; "
            "train, split and evaluate leave them out; add the images and run the same "
            "command again"
        )
    if incomplete:
        # the samples come from the source (a partial download, a folder with some channels
        # missing): said, not an error; a rerun once more images are there completes it
        import warnings

        warnings.warn(
            f"{incomplete}: their images are not in {src_dir} (yet); train, split and "
            "evaluate leave them out; run the same command again when they are there",
            IncompleteDataset,
            stacklevel=1,
        )


class IncompleteDataset(UserWarning):
    """The registered output lacks the images of some samples its source lists."""


def _print_summary(s: PreprocessSummary, json_: bool) -> None:
    from hpatool.cli._console import Table, out, print_json

    if json_:
        print_json(
            {
                "source": str(s.src_dir),
                "out": str(s.out_dir),
                "files": s.files,
                "subfolders": s.subfolders,
                "converted": s.converted,
                "skipped": s.skipped,
                "failed": s.failed,
                "samples": s.samples,
                "complete_samples": s.complete_samples,
                "dataset": s.dataset.name if s.dataset else None,
                "folds_from": s.dataset.provenance.get("folds_from") if s.dataset else None,
                "elapsed_s": round(s.elapsed_s, 3),
                "failures_csv": str(s.failures_csv) if s.failures_csv else None,
                "failures": [f.__dict__ for f in s.failures],
            }
        )
        return
    console = out()
    folders = f" ({s.subfolders:,} sub-folders)" if s.subfolders else ""
    console.print(
        f"Preprocessed {s.files:,} files from {s.src_dir}{folders} into {s.out_dir}: "
        f"{s.converted:,} converted, {s.skipped:,} already there, {s.failed:,} failed "
        f"({s.complete_samples:,} of {s.samples:,} samples complete) in {s.elapsed_s:,.1f} s"
    )
    if s.dataset is not None:
        from hpatool.preprocess.registration import carried_folds_line

        parent = f", derived from {s.dataset.parent}" if s.dataset.parent else ""
        console.print(
            f"Registered [bold]{s.dataset.name}[/] ({s.dataset.kind}, "
            f"{s.dataset.samples:,} samples{parent})"
        )
        carried = carried_folds_line(s.dataset)
        if carried:
            console.print(carried)
    if s.failures:
        table = Table(title="Failures" + (" (first 10)" if len(s.failures) > 10 else ""))
        for col in ("Id", "colour", "error"):
            table.add_column(col)
        for f in s.failures[:10]:
            table.add_row(f.id, f.colour, f.error)
        console.print(table)
        files = "file" if s.failed == 1 else "files"
        console.print(f"{s.failed:,} {files} failed; see {s.failures_csv}")
