"""The options of the data commands (``download-external``, ``preprocess``, ``split``, ``synth``,
``demo``) and their defaults: the one place each default is written.

The library functions take these dataclasses, or keyword options that default from them; the
command line uses the same values as its defaults, so ``--help`` shows them. (``train``,
``predict`` and ``evaluate`` have theirs in :mod:`hpatool.engine.config`.) Importing this module
loads nothing heavy: the CLI reads it to build its options.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hpatool.ids import COLOURS


@dataclass(frozen=True, kw_only=True)
class ConvertConfig:
    """How raw images become 8-bit greyscale channel PNGs (``preprocess``,
    ``download-external``)."""

    #: output width and height in pixels (0: ``preprocess`` keeps each image's size,
    #: ``download-external`` keeps only the raw JPEGs)
    size: int = 512
    #: how an RGB image becomes one stain: ``stain`` (the stain's own band) or ``luma``
    channel_rule: str = "stain"
    #: conversion processes; None: one per CPU
    workers: int | None = None


@dataclass(frozen=True, kw_only=True)
class PreprocessConfig(ConvertConfig):
    """The options of ``preprocess`` (:func:`hpatool.preprocess.preprocess_images`)."""

    #: the dataset to register the output as; None: derived from the source (see
    #: :func:`hpatool.preprocess.default_output_name`)
    name: str | None = None
    #: a label CSV giving the registered dataset's samples and labels
    labels: Path | None = None
    #: the registered dataset's kind (``train``, ``test`` or ``external``); None: the source
    #: dataset's kind, else ``train`` for ``labels`` with a Target column, else ``test``
    kind: str | None = None


@dataclass(frozen=True, kw_only=True)
class DownloadConfig(ConvertConfig):
    """The options of ``download-external`` (:func:`hpatool.download.download_external`), as
    given; :func:`hpatool.download.options.check_options` checks them."""

    name: str = "hpa-v18"
    #: the image server: ``<base>/<antibody>/<rest>_<colour>.jpg``
    base_url: str = "http://v18.proteinatlas.org/images"
    #: the stains to get, comma-separated
    colours: str = ",".join(COLOURS)
    #: requests in flight at once
    concurrency: int = 32
    #: retries per file for timeouts, connection errors, 5xx, 429 and bad bodies
    retries: int = 5
    #: seconds without progress before a request is retried
    timeout: float = 30.0
    #: base of the exponential retry backoff in seconds
    backoff: float = 0.5
    #: also keep the JPEGs as served (always so with ``size`` 0)
    keep_raw: bool = False
    #: the most bytes one file may have, decoded, in MiB; a larger (or endless) body is a failed
    #: file (real HPA JPEGs are 40-300 kB at 2048 px, 1-3 MB at 3072 px)
    max_file_size: int = 64
    #: only the first N samples (CSV order, after ``shard``)
    limit: int | None = None
    #: ``I/N``: this machine's share of the ids
    shard: str | None = None


@dataclass(frozen=True, kw_only=True)
class SplitConfig:
    """The options of ``split`` (:func:`hpatool.data.split.split_dataset`)."""

    folds: int = 5
    seed: int = 0


@dataclass(frozen=True, kw_only=True)
class SynthConfig:
    """The options of ``synth`` (:func:`hpatool.synth.synth_dataset`)."""

    samples: int = 256
    size: int = 512
    seed: int = 0
    workers: int = 1


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """The options of ``demo`` (:mod:`hpatool.engine.demo`)."""

    out: Path = Path("hpatool-demo")
    samples: int = 320
    size: int = 64
    epochs: int = 8
    folds: int = 3
    arch: str = "resnet10t"
    seed: int = 0
