"""The options of a training run: one typed, frozen :class:`TrainConfig`.

    TrainConfig
      .model   ModelConfig   the network: name, output_stride, model_kwargs, the weights
                           it starts from, their preprocessing, frozen parts
      .data    DataConfig    dataset, data_dir, image_size, batch_size, train_subset,
                             holdout, cache, steps_per_epoch
      .recipe  Recipe        optimizer, learning rate and schedule, regularisation,
                             precision, weight averaging, evaluation
      .run     RunOptions    model_dir, export_dir, epochs, strategy, num_cpu_replicas,
                             seed, max_steps, checkpoint_every

Each option is declared once, here, with its default, its help text and its
command-line flag (the field's metadata); the ``resnet-keras train`` flags
are generated from these fields. ``None`` means "the trainer's default"
(per device, per dataset or per run; see :func:`resnet_keras.train.train`).
Values are checked when a config is built: a bad one raises a one-line
ValueError naming it and what is allowed.

    config = TrainConfig.from_keywords("resnet20", "cifar10", epochs=30, batch_size=128,
                                       model_dir="runs/r20", label_smoothing=0.1)
    config.recipe.label_smoothing      # 0.1
"""
import dataclasses
import math
import os
from typing import Optional

from resnet_keras.conventions import CONVENTIONS

STRATEGIES = ("auto", "mirrored", "multi-worker", "one-device")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step")

# How each kind of value is checked: (predicate, message format).
_POSITIVE_INT = "{label} must be a positive integer, got {value!r}"
_FINITE = "{label} must be a finite number {rule}, got {value!r}"
_FLOAT_RULES = {"positive_float": ("> 0", lambda v: v > 0),
                "non_negative_float": (">= 0", lambda v: v >= 0),
                "fraction": ("in [0, 1)", lambda v: 0.0 <= v < 1.0)}


def option(default=dataclasses.MISSING, *, help, flag=None, kind="str", label=None,
           choices=None, keyword=None, rule=None):
    """A config field: its default, help text and command-line ``flag`` (None:
    set from Python or by the trainer only). ``kind`` says how the value is
    checked and parsed (str, int, positive_int, positive_float,
    non_negative_float, fraction, choice, switch, optional_bool); ``label``
    names it in error messages; ``keyword`` is its :func:`train` keyword
    (default: the field name)."""
    metadata = {"help": help, "flag": flag, "kind": kind, "label": label,
                "choices": choices, "keyword": keyword, "rule": rule}
    if default is dict:
        return dataclasses.field(default_factory=dict, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def check_number(name, value, rule, test):
    """ValueError unless VALUE is a finite real number passing TEST."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    if isinstance(value, bool) or number is None or not math.isfinite(number) \
            or not test(number):
        raise ValueError(_FINITE.format(label=name, rule=rule, value=value))


def _is_int(value):
    try:
        import numpy as np

        integers = (int, np.integer)
    except ImportError:  # pragma: no cover
        integers = (int,)
    return isinstance(value, integers) and not isinstance(value, bool)


def _check_field(field, value):
    """ValueError (one line) if VALUE is not allowed in FIELD; None is "default"."""
    meta = field.metadata
    kind, label = meta["kind"], meta["label"] or field.name.replace("_", " ")
    if value is None:
        if field.default is dataclasses.MISSING and kind == "positive_int":
            raise ValueError(_POSITIVE_INT.format(label=label, value=value))
        return
    if kind == "positive_int" and (not _is_int(value) or value < 1):
        raise ValueError(_POSITIVE_INT.format(label=label, value=value))
    if kind == "int" and not _is_int(value):
        raise ValueError(f"{label} must be an integer, got {value!r}")
    if kind in _FLOAT_RULES:
        rule, test = _FLOAT_RULES[kind]
        check_number(label, value, meta["rule"] or rule, test)
    if kind == "choice" and value not in meta["choices"]:
        raise ValueError(f"unknown {label} {value!r}; choices: {', '.join(meta['choices'])}")


class _Section:
    """A frozen group of options, checked field by field when built."""

    def __post_init__(self):
        for field in dataclasses.fields(self):
            _check_field(field, getattr(self, field.name))

    @classmethod
    def from_record(cls, values):
        """The section as a run directory recorded it: VALUES (a dict) as they
        are, not checked again; a missing option reads as its default (None
        where it has none)."""
        section = object.__new__(cls)
        for field in dataclasses.fields(cls):
            if field.name in values:
                value = values[field.name]
            elif field.default_factory is not dataclasses.MISSING:
                value = field.default_factory()
            else:
                value = None if field.default is dataclasses.MISSING else field.default
            object.__setattr__(section, field.name, value)
        return section

    def to_dict(self):
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True)
class ModelConfig(_Section):
    """Which network is trained. ``output_stride`` has one route: a
    ``model_kwargs["output_stride"]`` is moved here (a different value in
    both places is a ValueError)."""

    name: str = option(help="registered model name (see 'resnet-keras list')",
                       flag="--model", keyword="model_name")
    output_stride: Optional[int] = option(
        None, flag="--output-stride", kind="positive_int",
        help="total downsampling; smaller values dilate the last stages instead")
    model_kwargs: dict = option(
        dict, help="extra build_model arguments, e.g. {'depths': (1, 1, 1)} (Python only)")
    weights: Optional[str] = option(
        None, flag="--weights",
        help="start from these weights: imagenet, a weights file (.keras, .weights.h5, .h5, "
             ".npz, .pth, .safetensors) or the model dir of a run; another class count "
             "re-initialises the classifier")
    preprocessing: Optional[str] = option(
        None, flag="--preprocessing", kind="choice", choices=CONVENTIONS,
        label="preprocessing convention",
        help="input convention (default: the weights' own, else torch)")
    freeze_stages: int = option(0, flag="--freeze-stages", kind="int",
                                help="do not train the stem and the first N stages")
    freeze_bn: bool = option(False, flag="--freeze-bn", kind="switch",
                             help="BatchNorm in inference mode, its statistics frozen")

    def __post_init__(self):
        kwargs = dict(self.model_kwargs or {})
        stride = kwargs.pop("output_stride", None)
        if stride is not None:
            if self.output_stride is not None and self.output_stride != stride:
                raise ValueError(
                    f"output stride {self.output_stride} (--output-stride) conflicts with "
                    f"model_kwargs output_stride {stride}; give it once")
            object.__setattr__(self, "output_stride", stride)
        object.__setattr__(self, "model_kwargs", kwargs)
        if self.weights is not None:
            object.__setattr__(self, "weights", os.fspath(self.weights))
        super().__post_init__()
        if self.freeze_stages < 0:
            raise ValueError(f"freeze stages must be 0 or more, got {self.freeze_stages!r}")


@dataclasses.dataclass(frozen=True)
class DataConfig(_Section):
    """What the model is trained on and how it is batched."""

    dataset: str = option(help="TFDS name (e.g. cifar10) or folder:PATH", flag="--dataset")
    batch_size: int = option(help="global batch size (split across replicas)",
                             flag="--batch-size", kind="positive_int")
    data_dir: Optional[str] = option(None, flag="--data-dir",
                                     help="TFDS data directory (default: $TFDS_DATA_DIR)")
    image_size: Optional[int] = option(
        None, flag="--image-size", kind="positive_int",
        help="training resolution (default: 32 for small images, else 224)")
    train_subset: Optional[int] = option(None, flag="--train-subset", kind="positive_int",
                                         help="train on the first N training images only")
    holdout: Optional[int] = option(
        None, flag="--holdout", kind="positive_int",
        help="validate on the last N training images and train on the rest")
    cache: bool = option(False, flag="--cache", kind="switch",
                         help="cache decoded images in memory")
    steps_per_epoch: Optional[int] = option(
        None, flag="--steps-per-epoch", kind="positive_int",
        help="steps per epoch (default: the training images over the batch size)")


@dataclasses.dataclass(frozen=True)
class Recipe(_Section):
    """Optimiser, schedule and regularisation of a run. ``None`` values are
    filled in by :func:`resnet_keras.train.default_recipe` (the resolved
    recipe is what run_config.json records)."""

    optimizer: str = option("sgd", flag="--optimizer", kind="choice", choices=OPTIMIZERS,
                            help="SGD with momentum 0.9, or AdamW")
    learning_rate: Optional[float] = option(
        None, flag="--learning-rate", kind="positive_float",
        label="learning rate (--learning-rate)",
        help="peak learning rate (default: 0.1 x batch / 256 for SGD, 1e-3 x batch / 256 "
             "for AdamW)")
    weight_decay: Optional[float] = option(
        None, flag="--weight-decay", kind="non_negative_float",
        label="weight decay (--weight-decay)",
        help="not on biases and normalisation (default: 5e-4, 1e-4 above 100k images, "
             "0.05 for AdamW)")
    schedule: str = option("cosine", flag="--schedule", kind="choice", choices=SCHEDULES,
                           help="decay after the warm-up: cosine, or /10 at 1/3 and 2/3")
    warmup_epochs: Optional[float] = option(
        None, flag="--warmup-epochs", kind="non_negative_float",
        label="warm-up epochs (--warmup-epochs)",
        help="linear warm-up length (default: 3 % of the steps)")
    warmup_steps: Optional[int] = option(
        None, kind="int", help="warm-up length in steps, set by the trainer from "
                               "warmup_epochs (Python only)")
    label_smoothing: float = option(0.0, flag="--label-smoothing", kind="fraction",
                                    label="label smoothing (--label-smoothing)",
                                    help="label smoothing of the cross-entropy")
    mixed_precision: Optional[bool] = option(
        None, flag="--mixed-precision", kind="optional_bool",
        help="bfloat16 (CPU) / float16 (GPU) compute with float32 weights (default: on "
             "for CPUs with native bfloat16, else off; a resumed run keeps its own)")
    jit_compile: bool = option(False, flag="--jit-compile", kind="switch",
                               help="compile steps with XLA")
    nesterov: bool = option(False, flag="--nesterov", kind="switch",
                            help="Nesterov momentum (SGD)")
    ema_decay: float = option(
        0.0, flag="--ema-decay", kind="fraction", label="EMA decay (--ema-decay)",
        rule="in [0, 1) (0: off)",
        help="keep an exponential moving average of the weights with this decay "
             "(e.g. 0.999) and evaluate, save and export it; 0: off")
    eval_flip: bool = option(False, flag="--eval-flip", kind="switch",
                             help="evaluate on the mean prediction of each image and its "
                                  "mirror")

    def __post_init__(self):
        super().__post_init__()
        if self.nesterov and self.optimizer != "sgd":
            raise ValueError(f"Nesterov momentum (--nesterov) is an SGD option; "
                             f"optimizer is {self.optimizer!r}")


@dataclasses.dataclass(frozen=True)
class RunOptions(_Section):
    """Where the run is written, how long it trains and on which devices."""

    model_dir: str = option(help="checkpoints, TensorBoard logs and the run config",
                            flag="--model-dir")
    epochs: int = option(help="epochs to train (a rerun resumes up to this many)",
                         flag="--epochs", kind="positive_int")
    export_dir: Optional[str] = option(
        None, flag="--export-dir", help="export a SavedModel to EXPORT_DIR/<version> at the end")
    strategy: str = option("auto", flag="--strategy", kind="choice", choices=STRATEGIES,
                           help="tf.distribute strategy (auto: mirrored with more than one "
                                "GPU, else one-device)")
    num_cpu_replicas: Optional[int] = option(
        None, flag="--num-cpu-replicas", kind="positive_int", label="CPU replicas",
        help="with --strategy mirrored and no GPU: split the CPU into N devices")
    seed: Optional[int] = option(None, flag="--seed", kind="int",
                                 help="seeds weights, shuffling and augmentation "
                                      "(default: random, kept on resume)")
    max_steps: Optional[int] = option(None, flag="--max-steps", kind="positive_int",
                                      help="stop a training run after this many steps in all")
    checkpoint_every: Optional[int] = option(
        None, flag="--checkpoint-every", kind="positive_int",
        help="steps between checkpoints (default: min(steps per epoch, 500)) besides each "
             "epoch end")


SECTIONS = (("model", ModelConfig), ("data", DataConfig), ("recipe", Recipe),
            ("run", RunOptions))


def keyword(field):
    """The :func:`train` keyword (and the argparse dest) of a config field."""
    return field.metadata["keyword"] or field.name


def option_fields():
    """(section name, field) of every option, in declaration order."""
    return [(name, field) for name, section in SECTIONS
            for field in dataclasses.fields(section)]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run, grouped in four checked sections."""

    model: ModelConfig
    data: DataConfig
    recipe: Recipe
    run: RunOptions

    @classmethod
    def from_keywords(cls, model_name=None, dataset=None, *, base=None, **keywords):
        """A config from :func:`train`'s flat keywords (``epochs=...,
        label_smoothing=...``), on top of BASE (a TrainConfig) if given.
        TypeError for an unknown or missing keyword; ValueError for a bad value."""
        where = {keyword(field): (section, field.name) for section, field in option_fields()}
        if model_name is not None:
            keywords["model_name"] = model_name
        if dataset is not None:
            keywords["dataset"] = dataset
        values = {name: (base and getattr(base, name).to_dict()) or {} for name, _ in SECTIONS}
        for name, value in keywords.items():
            if name not in where:
                raise TypeError(f"train() got an unexpected keyword argument {name!r}")
            section, field = where[name]
            values[section][field] = value
        if base is None and ("model_name" not in keywords or "dataset" not in keywords):
            raise TypeError("train() needs a model name and a dataset (or a TrainConfig)")
        return cls(**{name: section(**values[name]) for name, section in SECTIONS})

    def replace(self, **sections):
        """A copy with some options changed: ``config.replace(recipe={"learning_rate": 0.1})``."""
        changed = {name: dataclasses.replace(getattr(self, name), **values)
                   for name, values in sections.items()}
        return dataclasses.replace(self, **changed)
