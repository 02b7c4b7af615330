"""run_config.json: the serialised :class:`TrainConfig` of a run plus the facts
of the run, read back as a typed :class:`RunRecord`.

The file is one flat JSON object, as it always was: one key per option (the
field's name; the model's is ``model``, and ``model_kwargs`` holds the
complete ``build_model`` arguments: classes, input_shape, output_stride and
the extra ones), the resolved recipe under ``recipe``, the facts
(``class_names``, ``num_classes``, ``steps_per_epoch``, ``total_steps``,
``train_examples``, ``eval_split``, ``num_replicas``, ``result``) and
the weights the run started from with their input convention and the
frozen parts (``weights``, ``preprocessing``, ``freeze_stages``,
``freeze_bn``) and ``"version": 3``. Older files are upgraded when read, so
their model dirs still resume, evaluate and export: version 1 (no version
field: no ``holdout``, a recipe without ``nesterov``, ``ema_decay``,
``eval_flip``) and version 2 (no weights: trained from scratch on the
``"torch"`` convention).
"""
import dataclasses
import json
import os
from typing import Optional

from resnet_keras import rundir
from resnet_keras.conventions import DEFAULT_CONVENTION
from resnet_keras.training.config import SECTIONS, ModelConfig, Recipe, TrainConfig

VERSION = 3
# Keys that identify a run: a model dir holding a run that differs in one of
# them is refused rather than overwritten.
IDENTITY_KEYS = ("model", "model_kwargs", "dataset", "num_classes", "holdout", "weights",
                 "preprocessing", "freeze_stages", "freeze_bn")
# What older files may lack, with the value that reproduces their runs.
_V1_RECIPE_DEFAULTS = {"nesterov": False, "ema_decay": 0.0, "eval_flip": False,
                       "warmup_epochs": None}
_V1_DEFAULTS = {"holdout": None}
_V2_DEFAULTS = {"weights": None, "preprocessing": "torch", "freeze_stages": 0,
                "freeze_bn": False}
# ModelConfig fields stored as top-level keys under their own names.
_MODEL_KEYS = ("weights", "preprocessing", "freeze_stages", "freeze_bn")


@dataclasses.dataclass(frozen=True)
class RunFacts:
    """What the trainer derived from the data and the devices, and the result."""

    class_names: tuple = ()
    num_classes: Optional[int] = None
    total_steps: Optional[int] = None
    train_examples: Optional[int] = None
    eval_split: Optional[str] = None
    num_replicas: Optional[int] = None
    result: Optional[dict] = None  # top1, top5, best_top1, steps, export_path


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """A run as run_config.json holds it: the resolved config and the facts."""

    config: TrainConfig
    facts: RunFacts
    version: int = VERSION

    @property
    def build_kwargs(self):
        """The ``build_model`` arguments of the run's model (JSON-plain)."""
        model, size = self.config.model, self.config.data.image_size
        kwargs = {"classes": self.facts.num_classes}
        if size is not None:
            kwargs["input_shape"] = [size, size, 3]
        if model.output_stride:
            kwargs["output_stride"] = model.output_stride
        kwargs.update(model.model_kwargs or {})
        return _plain(kwargs)

    def identity(self):
        """The values that must match for a model dir to be resumed."""
        c = self.config
        return {"model": c.model.name, "model_kwargs": self.build_kwargs,
                "dataset": c.data.dataset, "num_classes": self.facts.num_classes,
                "holdout": c.data.holdout,
                **{key: getattr(c.model, key) for key in _MODEL_KEYS}}

    def with_result(self, result):
        return dataclasses.replace(self, facts=dataclasses.replace(self.facts, result=result))

    def to_json(self):
        """The run_config.json object."""
        c = self.config
        out = {"version": self.version, "model": c.model.name,
               "model_kwargs": self.build_kwargs, "recipe": c.recipe.to_dict(),
               **{key: getattr(c.model, key) for key in _MODEL_KEYS}}
        out.update(c.data.to_dict())
        out.update(c.run.to_dict())
        facts = dataclasses.asdict(self.facts)
        facts["class_names"] = list(self.facts.class_names or ())
        out.update(facts)
        return _plain(out)

    @classmethod
    def from_json(cls, raw):
        """A record from a run_config.json object of any version."""
        raw = upgrade(raw)
        kwargs = dict(raw.get("model_kwargs") or {})
        size, classes = raw.get("image_size"), raw.get("num_classes")
        if kwargs.get("classes") == classes:
            kwargs.pop("classes")
        if size is not None and kwargs.get("input_shape") == [size, size, 3]:
            kwargs.pop("input_shape")
        model = ModelConfig.from_record({"name": raw.get("model"),
                                         "output_stride": kwargs.pop("output_stride", None),
                                         "model_kwargs": kwargs,
                                         **{key: raw[key] for key in _MODEL_KEYS if key in raw}})
        sections = {"model": model, "recipe": Recipe.from_record(raw.get("recipe") or {})}
        for name, section in SECTIONS:
            if name not in sections:
                sections[name] = section.from_record(raw)
        facts = {f.name: raw[f.name] for f in dataclasses.fields(RunFacts) if f.name in raw}
        facts["class_names"] = tuple(facts.get("class_names") or ())
        return cls(TrainConfig(**sections), RunFacts(**facts), version=raw["version"])


def upgrade(raw):
    """A run_config.json object brought to the current version (a new dict)."""
    raw = dict(raw)
    if raw.get("version", 1) == 1:
        recipe = dict(raw.get("recipe") or {})
        for key, value in _V1_RECIPE_DEFAULTS.items():
            recipe.setdefault(key, value)
        if "recipe" in raw:
            raw["recipe"] = recipe
        for key, value in _V1_DEFAULTS.items():
            raw.setdefault(key, value)
        raw["version"] = 2
    if raw["version"] == 2:
        for key, value in _V2_DEFAULTS.items():
            raw.setdefault(key, value)
        raw["version"] = VERSION
    return raw


def _plain(value):
    return json.loads(json.dumps(value))


def read_record(model_dir):
    """MODEL_DIR's :class:`RunRecord`; ValueError if it holds no run or a damaged one."""
    return RunRecord.from_json(rundir.read_run_config(model_dir))


def read_existing(model_dir):
    """MODEL_DIR's record, or None where no run was started there."""
    if not os.path.isfile(rundir.path(model_dir, rundir.CONFIG_FILE)):
        return None
    return read_record(model_dir)


def write_record(model_dir, record):
    """Write RECORD as MODEL_DIR/run_config.json, atomically."""
    rundir.write_run_config(model_dir, record.to_json())


def check_same_run(model_dir, stored, record):
    """ValueError if STORED (a record, or None) is another run than RECORD."""
    if stored is None:
        return
    old, new = stored.identity(), record.identity()
    for key in IDENTITY_KEYS:
        if old[key] != new[key]:
            raise ValueError(
                f"model dir {model_dir!r} holds a different run ({key} {old[key]!r}, not "
                f"{new[key]!r}); use a new --model-dir or the same model and dataset to resume")


def load_trained(model_dir):
    """(keras model, :class:`RunRecord`) of the best or final model in MODEL_DIR;
    the model's ``preprocessing`` is the run's input convention."""
    record = read_record(model_dir)
    model = rundir.load_model_file(model_dir)
    model.preprocessing = record.config.model.preprocessing or DEFAULT_CONVENTION
    return model, record
