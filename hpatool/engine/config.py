"""The options of ``train`` and ``predict``/``evaluate``: the one source of their defaults, their
validation, and the merge of a configuration file with the command line.

Precedence, highest first: a flag given on the command line, a ``--config FILE`` (TOML, or a run's
``config.json``), the saved options of the run being resumed (``train --resume``), the defaults
written here. The CLI's help text shows the defaults from these dataclasses, so each default is
stated once. Importing this module loads neither torch nor timm.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hpatool.data.cache import CACHE_MODES
from hpatool.engine.config_files import flag, merge_options, read_config_file
from hpatool.engine.parsing import parse_threshold, threshold_file
from hpatool.engine.views import (
    AGGREGATIONS,
    DEFAULT_AGG,
    DEFAULT_CROPS,
    DEFAULT_TTA,
    MAX_FLIPS,
    TTA_MODES,
    View,
    centre_view,
)
from hpatool.errors import NotFound, UsageError
from hpatool.labels import NUM_CLASSES

C = TypeVar("C")

DEVICES = ("auto", "cpu", "cuda")
#: How validation during training scores an image: ``centre`` (one centre crop, the cheapest)
#: or ``eval`` (the run's evaluation view: ``--eval-crops``, ``--eval-agg``, ``--tta``).
VAL_VIEWS = ("centre", "eval")
#: ``--head-bias``: the classifier's starting bias.
HEAD_BIASES = ("prior", "zero")


def default_workers() -> int:
    """min(4, CPUs): the DataLoader workers of ``train``, ``evaluate`` and ``predict`` when none
    are given."""
    return min(4, os.cpu_count() or 1)


# ------------------------------------------------------------------------------------ train


@dataclass
class TrainConfig:
    """The options of ``hpatool train`` (what ``config.json`` holds under ``"options"``)."""

    datasets: list[str]
    arch: str = "resnet50"
    fold: int = 0
    epochs: int = 10
    batch_size: int = 32
    crop: int = 256
    lr: float = 5e-4
    weight_decay: float = 0.01
    loss: str = "focal"  # measured: docs/benchmarks.md (benchmarks/recipe.py)
    oversample: str = "auto"
    pretrained: str | None = None
    workers: int = field(default_factory=default_workers)
    device: str = "auto"
    amp: bool = True
    out: str = "runs"
    name: str | None = None
    seed: int = 0
    max_steps: int | None = None
    limit: int | None = None
    checkpoint_every: int | None = None  # steps; None = checkpoint-last.pt at epoch ends only
    strict: bool = False  # refuse a validation fold with samples whose images are missing
    tensorboard: bool = False  # also write scalars for TensorBoard to OUT/NAME/tensorboard
    experiment: str | None = None  # the experiment (hpatool cv) this fold run belongs to
    # The view the best checkpoint scores its validation fold with at the end of the run
    # (oof.csv) and that thresholds.json is tuned on: predict's defaults, so they agree.
    eval_crops: int = DEFAULT_CROPS
    eval_agg: str = DEFAULT_AGG
    tta: str = DEFAULT_TTA
    val_view: str = "centre"  # validation during training: the centre crop or the eval view
    cache: str = "auto"  # the datasets' decoded caches when complete and up to date, or "off"
    #: the classifier's starting bias: "prior" (log-odds of each class's training frequency,
    #: as sampled) or "zero" (timm's init); measured in docs/benchmarks.md
    head_bias: str = "zero"
    #: --augment: the training augmentation (``transforms.AUGMENTS``); measured in
    #: docs/benchmarks.md
    augment: str = "dihedral"
    #: --ema: the decay of an exponential moving average of the weights that is validated and
    #: checkpointed in place of the raw weights (``engine.training.ema``); 0 = off; measured in
    #: docs/benchmarks.md
    ema: float = 0.999
    #: --keep-checkpoints: keep the weights of the last K epochs (checkpoint-epoch-NNN.pt), for
    #: ``hpatool runs average``; None = none kept
    keep_checkpoints: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def view(self) -> View:
        """The run's evaluation view (``oof.csv``, the thresholds ``predict`` applies)."""
        return View(self.crop, self.eval_crops, self.eval_agg, self.tta)

    @property
    def validation_view(self) -> View:
        """The view validation scores each epoch with (``--val-view``)."""
        return self.view if self.val_view == "eval" else centre_view(self.crop, self.eval_agg)

    def validate(self) -> None:
        from hpatool.data.sampling import parse_oversample
        from hpatool.engine.models.factory import resolve_arch

        if not self.datasets:
            raise UsageError("give at least one --dataset NAME")
        resolve_arch(self.arch)
        _at_least(self, "fold", 0, "folds are numbered from 0")
        _at_least(self, "epochs", 1, "train for at least 1 epoch")
        _at_least(self, "batch_size", 1, "use at least 1")
        _at_least(self, "crop", 8, "use at least 8 pixels")
        from hpatool.engine.models.input_size import check_input_size

        check_input_size(self.arch, self.crop)  # inceptionresnetv2 needs 75 px, say
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise _bad("lr", self.lr, "use a positive learning rate such as 5e-4")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise _bad("weight_decay", self.weight_decay, "use 0 or more, such as 0.01")
        from hpatool.engine.parsing import parse_loss

        parse_loss(self.loss)
        parse_oversample(self.oversample)
        _at_least(self, "workers", 0, "use 0 (load in the main process) or more")
        _one_of(self, "device", DEVICES)
        _at_least(self, "seed", 0, "use a non-negative integer")
        _at_least(self, "max_steps", 1, "use at least 1")
        _at_least(self, "limit", 1, "use at least 1")
        _at_least(self, "checkpoint_every", 1, "use at least 1 step")
        _at_least(self, "eval_crops", 1, "use 1 (the centre crop) or more")
        _one_of(self, "eval_agg", AGGREGATIONS)
        _one_of(self, "tta", TTA_MODES)
        _flips_fit(self.tta, self.eval_crops, "--eval-crops")
        _one_of(self, "val_view", VAL_VIEWS)
        _one_of(self, "cache", CACHE_MODES)
        _one_of(self, "head_bias", HEAD_BIASES)
        from hpatool.data.transforms import AUGMENTS

        _one_of(self, "augment", AUGMENTS)
        if not (0.0 <= self.ema < 1.0):
            raise _bad("ema", self.ema, "use a decay in (0, 1) such as 0.999, or 0 (off)")
        _at_least(self, "keep_checkpoints", 1, "keep at least 1 epoch's checkpoint")
        if self.experiment is not None:
            from hpatool.registry.records import check_name

            check_name(self.experiment, "experiment")
        if (
            self.pretrained is not None
            and self.pretrained.lower() != "imagenet"
            and not Path(self.pretrained).expanduser().is_file()
        ):
            from hpatool._io import path_problem

            raise NotFound(
                f"--pretrained {self.pretrained}: {path_problem(self.pretrained)}; give a local "
                "state dict, 'imagenet' or 'none'"
            )


#: Options that define a run: resuming with a different value is an error.
IDENTITY_KEYS = (
    "arch", "datasets", "fold", "batch_size", "crop", "lr", "weight_decay", "loss",
    "oversample", "seed", "limit", "augment", "ema",
)  # fmt: skip
#: What the options added after runs and experiments were first stored meant before they
#: existed: a stored configuration without one of these keys had this value (its default
#: now may differ: ``--ema`` is on by default since issue 19).
LEGACY_OPTIONS: dict[str, Any] = {"ema": 0.0, "augment": "dihedral", "head_bias": "zero"}


def with_legacy(options: Mapping[str, Any]) -> dict[str, Any]:
    """A stored run's or experiment's options, with the ``LEGACY_OPTIONS`` it predates."""
    return {**LEGACY_OPTIONS, **options}


#: Options that belong to one invocation and are not inherited by ``--resume``.
PER_INVOCATION_KEYS = ("max_steps", "cache")


def train_config(options: dict[str, Any], base: dict[str, Any] | None = None) -> TrainConfig:
    """A ``TrainConfig`` from ``options`` (``None`` = not given) over ``base`` (a resumed
    run's saved options, less the per-invocation ones) over the defaults."""
    saved = {
        k: v
        for k, v in (with_legacy(base) if base is not None else {}).items()
        if k not in PER_INVOCATION_KEYS
    }
    merged = merge_options(TrainConfig, saved, options)
    if not merged.get("datasets"):
        raise UsageError("give at least one --dataset NAME (the first one is split into folds)")
    merged["datasets"] = [str(d) for d in merged["datasets"]]
    pretrained = merged.get("pretrained")
    if pretrained is not None:
        merged["pretrained"] = None if str(pretrained).lower() == "none" else str(pretrained)
    if merged.get("out") is not None:
        merged["out"] = str(merged["out"])
    return TrainConfig(**merged)


def given_train_options(
    options: TrainConfig | Mapping[str, Any], config_file: str | Path | None = None
) -> dict[str, Any]:
    """The options a ``train`` invocation gives, by ``TrainConfig`` name: those of
    ``config_file`` (``--config``), overridden by ``options``. ``options`` is a ``TrainConfig``
    (every option given) or the command line's values by parameter name (``None`` or an empty
    list = not given, ``dataset`` = ``datasets``, names that are not options are left out).
    The options not given come from the resumed run or the defaults (``train_config``)."""
    raw = options.to_json() if isinstance(options, TrainConfig) else dict(options)
    if "dataset" in raw:
        raw["datasets"] = raw.pop("dataset")
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    flags = {k: str(v) if isinstance(v, Path) else v for k, v in raw.items() if k in names}
    flags["datasets"] = list(flags.get("datasets") or []) or None
    from_file = read_config_file(config_file, TrainConfig, "train") if config_file else None
    if from_file and config_file is not None:  # a value the command line overrides: moot
        mine = {k: v for k, v in from_file.items() if flags.get(k) is None}
        check_file_values(TrainConfig, mine, config_file, {"datasets": ["-"]})
    return merge_options(TrainConfig, from_file, flags)


def check_file_values(
    cls: type, from_file: Mapping[str, Any], file: str | Path, base: dict[str, Any]
) -> None:
    """Each value of a ``--config`` file validated on its own (over ``base`` and the defaults),
    so that a bad one is reported as the file's, naming the file and the key, not as if it had
    been typed (``--epochs -4 is invalid``)."""
    for key, value in from_file.items():
        if key in base or value is None:
            continue
        probe = {**base, key: value}
        if key == "crop" and "arch" in from_file:  # the smallest crop depends on the arch
            probe["arch"] = from_file["arch"]
        try:
            cls(**probe).validate()
        except UsageError as exc:
            raise UsageError(
                f"--config {file}: {key.replace('_', '-')} = {value!r}: {exc}"
            ) from None


# ---------------------------------------------------------------------------------- predict


@dataclass
class PredictConfig:
    """The options of ``hpatool predict`` and ``hpatool evaluate``: how to score (shared), the
    output files of ``predict``, and the fold and plot of ``evaluate``. Each command ignores the
    other's own options, so one configuration file can serve both."""

    dataset: str | None = None
    #: one run, or several: an ensemble (their probabilities averaged); ``RUN:WEIGHT`` weighs
    run: list[str] = field(default_factory=list)
    #: every run of each experiment: an ensemble (``EXP:WEIGHT``: the experiment's weight,
    #: split among its runs); with ``run``, one ensemble of them all
    experiment: list[str] = field(default_factory=list)
    #: ``--weight``: the weights of the ``run``s (or of the ``experiment``s), in order
    weight: list[float] = field(default_factory=list)
    checkpoint: str | None = None
    # the view; None = not given: each model's stored view (a run without one: 8, max, crops)
    crops: int | None = None
    tta: str | None = None
    crop_size: int | None = None
    agg: str | None = None
    threshold: str = "auto"
    min_labels: int = 1
    batch_size: int = 16
    workers: int = field(default_factory=default_workers)  # as train's
    device: str = "auto"
    seed: int = 0
    cache: str = "auto"  # the dataset's decoded cache when complete and up to date, or "off"
    # predict only
    known_labels: bool = False  # a sample with labelled duplicates (hpatool dedup) takes theirs
    out: str = "submission.csv"
    probs: str | None = None
    strict: bool = False
    # evaluate only
    fold: int | None = None
    plot: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        """Check every option before any work; the texts are those of the command line."""
        if not self.dataset:
            raise UsageError("give the dataset to score with --dataset NAME")
        if isinstance(self.run, str):  # PredictConfig(run="r1"), as before ensembles
            self.run = [self.run]
        if isinstance(self.experiment, str):  # PredictConfig(experiment="e"), as before
            self.experiment = [self.experiment]
        if isinstance(self.weight, int | float):
            self.weight = [float(self.weight)]
        self.run, self.experiment = list(self.run or []), list(self.experiment or [])
        self.weight = list(self.weight or [])
        models = bool(self.run) or bool(self.experiment)
        if models == (self.checkpoint is not None):
            raise UsageError(
                "give --run RUN or --experiment EXP (repeat them, mixed, for an ensemble; "
                "RUN:WEIGHT to weigh one), or --checkpoint PATH"
            )
        if self.weight and self.checkpoint is not None:
            raise UsageError("--weight is for ensembles of --run / --experiment models")
        if self.crops is not None:
            _at_least(self, "crops", 1, "use 1 (the centre crop) or more")
        _flips_fit(self.tta, self.crops, "--crops")
        if self.tta is not None:
            _one_of(self, "tta", TTA_MODES)
        if self.crop_size is not None and self.crop_size < 8:
            raise UsageError(
                f"--crop-size {self.crop_size} is too small; use --crop-size 8 or more"
            )
        if self.agg is not None and self.agg not in AGGREGATIONS:
            raise UsageError(f"--agg {self.agg!r} is invalid; use max or mean")
        parse_threshold(self.threshold)
        file = threshold_file(self.threshold)
        if file is not None:
            from hpatool.engine.parsing import read_thresholds_file

            read_thresholds_file(file)  # a missing or bad file: said before any work
        if not 0 <= self.min_labels <= NUM_CLASSES:
            raise _bad("min_labels", self.min_labels, f"use 0..{NUM_CLASSES}")
        _at_least(self, "batch_size", 1, "use 1 or more")
        _at_least(self, "workers", 0, "use 0 (load in the main process) or more")
        _one_of(self, "device", DEVICES)
        _at_least(self, "seed", 0, "use a non-negative integer")
        _one_of(self, "cache", CACHE_MODES)


def predict_config(
    options: dict[str, Any], config_file: str | Path | None = None, command: str = "predict"
) -> PredictConfig:
    """The checked ``PredictConfig`` of ``hpatool predict`` or ``evaluate``: ``options`` (the
    command line's values by parameter name; ``None`` = not given, names that are not options
    are left out) over a ``--config`` file (its ``[evaluate]`` or ``[predict]`` table for
    ``evaluate``, its ``[predict]`` table for ``predict``, else its top level) over the
    defaults."""
    names = {f.name for f in dataclasses.fields(PredictConfig)}
    given = {k: str(v) if isinstance(v, Path) else v for k, v in options.items() if k in names}
    sections = ("evaluate", "predict") if command == "evaluate" else ("predict",)
    from_file = (
        read_config_file(config_file, PredictConfig, sections) if config_file is not None else {}
    )
    if from_file and config_file is not None:
        base = {"dataset": "-", "run": ["-"]}
        skip = ("run", "experiment", "checkpoint", "weight")
        mine = {k: v for k, v in from_file.items() if k not in skip and given.get(k) is None}
        check_file_values(PredictConfig, mine, config_file, base)
    config = PredictConfig(**merge_options(PredictConfig, from_file, given))
    config.validate()
    _check_prior(
        config, command, {**from_file, **{k: v for k, v in given.items() if v is not None}}
    )
    return config


def _check_prior(config: PredictConfig, command: str, given: dict[str, Any]) -> None:
    """``--threshold prior`` is ``predict``'s, and turns the ``--min-labels`` top-up off (it
    would add labels beyond each class's matched count): an explicit top-up is refused."""
    from hpatool.engine.parsing import parse_prior

    if parse_prior(config.threshold) is None:
        return
    if command != "predict":
        raise UsageError(
            f"--threshold {config.threshold} sets thresholds on the images predict scores; "
            f"{command} scores with tuned thresholds: use --threshold auto or a number"
        )
    if given.get("min_labels"):
        raise UsageError(
            f"--min-labels {config.min_labels} would add labels beyond the class shares "
            f"--threshold {config.threshold} matches; leave it out (the top-up is off in this "
            "mode) or use --threshold auto"
        )
    config.min_labels = 0


# ---------------------------------------------------------------------------- the machinery


def _bad(name: str, value: object, rule: str) -> UsageError:
    return UsageError(f"{flag(name)} {value} is invalid; {rule}")


def _flips_fit(tta: str | None, crops: int | None, flag_name: str) -> None:
    """``--tta flips`` / ``grid+flips`` have at most 8 transforms of each window: not more."""
    if tta in ("flips", "grid+flips") and crops is not None and crops > MAX_FLIPS:
        raise UsageError(
            f"{flag_name} {crops} is more than the {MAX_FLIPS} flips/rotations of --tta {tta} "
            f"(each window flipped and rotated); use {flag_name} {MAX_FLIPS} or fewer, or "
            "--tta crops+flips"
        )


def _at_least(config: object, name: str, least: int, rule: str) -> None:
    value = getattr(config, name)
    if value is not None and value < least:
        raise _bad(name, value, rule)


def _one_of(config: object, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(config, name)
    if value not in choices:
        raise _bad(name, value, f"use one of {', '.join(choices)}")


def default_text(cls: type, name: str) -> str:
    """A field's default as the help text shows it."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    if f.default_factory is not dataclasses.MISSING:
        doc = (f.default_factory.__doc__ or "").strip().split(":")[0]
        return doc or "computed"
    if f.default is None:
        return "none"
    if isinstance(f.default, bool):
        return "on" if f.default else "off"
    return str(f.default)
