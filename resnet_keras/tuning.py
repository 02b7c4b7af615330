"""Architecture and hyperparameter search over the registered ResNets and DRNs.

    from resnet_keras import tuning

    hypermodel = tuning.HyperResNet(10, input_shape=(32, 32, 3), max_params=500_000)
    tuner = tuning.make_tuner("random", hypermodel, "runs/search", max_trials=20)
    tuner.search("folder:~/.cache/resnet_keras/cifar10_jpeg", epochs=5, batch_size=128)
    tuner.report()                        # table on stdout, runs/search/results.csv
    tuner.export_best("runs/search_export")

The same from the command line::

    resnet-keras tune --dataset folder:~/.cache/resnet_keras/cifar10_jpeg \\
        --directory runs/search --max-trials 20 --tuner random --epochs 5 \\
        --max-params 500000 --export-dir runs/search_export

Search space (:class:`HyperResNet`; every range is a constructor argument,
a user's ``hp.Fixed``/``hp.Choice`` of the same name replaces it):

- ``family``: resnet, drn_c, drn_d. The resnet base is the CIFAR ResNet-20 row
  for small images (<= 64 px), ResNet-18 (basic) / ResNet-50 (bottleneck) for
  larger ones; the DRN bases are the drn_c_26 and drn_d_22 rows.
- ``block``: basic or bottleneck.
- ``depth_1`` .. ``depth_N``: blocks per residual stage (the DRNs' levels 3-6;
  their other levels keep one block). Default: the base row.
- ``bottleneck_width`` (bottleneck only): the 3x3 conv's width at stage width
  64, i.e. ``base_width * groups``. Default 64.
- ``groups`` (bottleneck only): grouped-conv cardinality; one choice per
  bottleneck width holding only the valid values (groups divides the width
  and every stage's inner width is at least ``groups``), so an invalid pair is
  never sampled. Default 1.
- ``output_stride``: the family's allowed values (CIFAR ResNet 1/2/4, ImageNet
  ResNet 8/16/32, DRN 8). Default: the native one.
- ``attention`` ("none", "se", "eca"), ``stem`` (per family, the stems it
  allows: "imagenet", "deep", "cifar"), ``shortcut`` ("projection",
  "avgpool", "pad") and ``drop_path_rate``: searched when the constructor's
  ``attentions`` / ``stems`` / ``shortcuts`` / ``drop_path_rates`` give more
  than one value (default: the base row's own, not searched). A stem of
  another stride keeps the sampled output stride relative to the base row
  (the CIFAR stem on ResNet-18 at ``output_stride`` 32 gives 8).
- ``learning_rate`` (SGD peak, log scale, default 0.1) and ``weight_decay``
  (log scale, default 5e-4).

Budget: with ``max_params`` / ``max_flops`` (multiply-adds per image at the
input size, as :func:`resnet_keras.count_macs`), the oracles of
:func:`make_tuner` build each sampled candidate (no training) and resample
the ones above the limit; they are never proposed again. A candidate that
still arrives over budget (e.g. from a user's fixed values) fails with
``keras_tuner.errors.FailedTrialError`` before training. If even the smallest
candidate of the space is over the limit, ``search`` raises ValueError.
Multiply-adds are not CPU time: TensorFlow's grouped convolutions are several
times slower per multiply-add on CPUs, so a CPU-only search is best run with
``groups=(1,)`` (``--groups 1``).

Each trial is one :func:`resnet_keras.train.train` run in
``DIRECTORY/<project>/trial_<id>/`` (run_config.json, resumable backup/
checkpoints, logs/, best.keras) reporting ``val_accuracy`` (best top-1), the
objective. Hyperband trials train for their ``tuner/epochs`` and continue
from the checkpoint of the trial they were promoted from.

Resume: rerun the same command (or a new tuner on the same directory):
keras-tuner reloads its oracle, reruns the trial that was interrupted, whose
training resumes from its checkpoint, and runs only the remaining trials.

TensorBoard: ``tensorboard --logdir DIRECTORY/tensorboard`` shows every trial
in the HParams dashboard (hyperparameters, val_accuracy, params, flops,
wall_time); each trial's training curves are in its ``logs/``.

Distributed search uses keras-tuner's chief/worker protocol (gRPC, grpcio
comes with TensorFlow). Run the same command on every machine, with a
``--directory`` all of them can reach and these environment variables::

    export KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000
    KERASTUNER_TUNER_ID=chief  resnet-keras tune ...   # the oracle; trains nothing
    KERASTUNER_TUNER_ID=tuner0 resnet-keras tune ...   # a worker: runs trials
    KERASTUNER_TUNER_ID=tuner1 resnet-keras tune ...   # another worker

The chief samples candidates (and applies the budget), the workers train
them; when all trials are done the chief prints the table, writes
results.csv and exports the best model.
"""
import contextlib
import csv
import dataclasses
import glob
import json
import os
import shutil

import keras
import keras_tuner
from keras_tuner import errors as kt_errors

from resnet_keras import data as data_lib
from resnet_keras import errors, models, preprocessing, rundir
from resnet_keras import specs as specs_lib
from resnet_keras import train as train_lib

FAMILIES = ("resnet", "drn_c", "drn_d")
BLOCKS = specs_lib.BLOCKS
TUNERS = ("hyperband", "bayesian", "random")
OBJECTIVE = "val_accuracy"
METRICS = ("val_accuracy", "params", "flops", "wall_time", "epochs")
DEFAULT_BOTTLENECK_WIDTHS = (16, 32, 64, 128, 256)
DEFAULT_GROUPS = (1, 2, 4, 8, 16, 32)
DEFAULT_LEARNING_RATE = (0.01, 0.4, 0.1)  # (min, max, default)
DEFAULT_WEIGHT_DECAY = (1e-5, 1e-3, 5e-4)
# Searchable refinements; "none" stands for attention=None.
ATTENTIONS = ("none", "se", "eca")
STEMS = ("imagenet", "deep", "cifar")
SHORTCUTS = specs_lib.SHORTCUTS
# Blocks per searched stage, by the base spec's family.
DEFAULT_DEPTH_RANGES = {"cifar": (1, 9), "resnet": (1, 8), "drn_c": (1, 6), "drn_d": (1, 6)}
MAX_RESAMPLES = 200
RESULTS_FILE = "results.csv"
TENSORBOARD_DIR = "tensorboard"


# --------------------------------------------------------------------------
# The search space


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One point of the search space: a registered base, overrides, recipe."""

    family: str
    model_name: str
    model_kwargs: dict
    learning_rate: float
    weight_decay: float

    def describe(self):
        """Compact one-line architecture, e.g. 'resnet20 basic d=3-3-3 os=4'."""
        kw = self.model_kwargs
        parts = [self.model_name, kw["block"]]
        if kw["block"] == "bottleneck":
            parts.append(f"w={kw['base_width'] * kw['groups']}/g={kw['groups']}")
        parts.append("d=" + "-".join(str(d) for d in kw["depths"]))
        parts.append(f"os={kw['output_stride']}")
        for key, label in (("stem", "stem"), ("shortcut", "sc"), ("attention", "att"),
                           ("drop_path_rate", "dp")):
            if key in kw:
                parts.append(f"{label}={kw[key]}")
        return " ".join(parts)


@dataclasses.dataclass(frozen=True)
class _DepthGroup:
    """Families that share the searched stages' count, defaults and range."""

    families: tuple
    defaults: tuple
    low: int
    high: int


def base_model_name(family, block, image_size):
    """The registered row a family starts from at an image size."""
    _choice("family", family, FAMILIES)
    _choice("block", block, BLOCKS)
    if family == "drn_c":
        return "drn_c_26"
    if family == "drn_d":
        return "drn_d_22"
    if preprocessing.is_small(image_size):
        return "resnet20"
    return "resnet18" if block == "basic" else "resnet50"


def searched_stages(spec):
    """Indices of the residual stages whose depth is searched."""
    return tuple(i for i, kind in enumerate(spec.kinds) if kind == "residual")


class HyperResNet(keras_tuner.HyperModel):
    """A keras-tuner HyperModel over ResNet / DRN architectures and their recipe.

    Args:
        classes: number of classes of the top layer.
        input_shape: fixed ``(height, width, 3)`` the candidates are built (and
            their FLOPs counted) at; small sizes use the CIFAR ResNet base.
        families: families to search, from FAMILIES.
        max_params: reject candidates with more parameters (None: no limit).
        max_flops: reject candidates with more multiply-adds per image.
        blocks: block types to search ("basic", "bottleneck").
        depth_range: ``(min, max)`` blocks per searched stage; default per
            family (CIFAR ResNet 1-9, ResNet 1-8, DRN 1-6).
        bottleneck_widths: values of ``bottleneck_width``.
        groups: candidate cardinalities (filtered per bottleneck width).
        output_strides: values to search, restricted per family to what it
            allows (a family allowing none keeps its native stride); default:
            every allowed value.
        learning_rate, weight_decay: ``(min, max)`` or ``(min, max, default)``,
            log-uniform.
        attentions: values of ``attention`` from ATTENTIONS (the first is the
            default); one value is applied without being searched.
        stems: stems to search from STEMS, restricted per family to those it
            allows; None keeps each base row's own.
        shortcuts: values of ``shortcut`` from SHORTCUTS; None keeps the base
            row's own.
        drop_path_rates: values of ``drop_path_rate`` in [0, 1).
    """

    def __init__(self, classes, input_shape=(32, 32, 3), families=FAMILIES, max_params=None,
                 max_flops=None, *, blocks=BLOCKS, depth_range=None,
                 bottleneck_widths=DEFAULT_BOTTLENECK_WIDTHS, groups=DEFAULT_GROUPS,
                 output_strides=None, learning_rate=DEFAULT_LEARNING_RATE,
                 weight_decay=DEFAULT_WEIGHT_DECAY, attentions=("none",), stems=None,
                 shortcuts=None, drop_path_rates=(0.0,), name=None, tunable=True):
        super().__init__(name=name, tunable=tunable)
        self.classes = _positive_int("classes", classes)
        self.input_shape = _fixed_shape(input_shape)
        self.families = _choices("families", families, FAMILIES)
        self.blocks = _choices("blocks", blocks, BLOCKS)
        self.max_params = _optional_positive("max_params", max_params)
        self.max_flops = _optional_positive("max_flops", max_flops)
        self.depth_range = None if depth_range is None else _int_range("depth_range", depth_range)
        self.bottleneck_widths = _positive_ints("bottleneck_widths", bottleneck_widths)
        self.groups = _positive_ints("groups", groups)
        self.output_strides = (None if output_strides is None
                               else _positive_ints("output_strides", output_strides))
        self.learning_rate = _log_range("learning_rate", learning_rate, DEFAULT_LEARNING_RATE)
        self.weight_decay = _log_range("weight_decay", weight_decay, DEFAULT_WEIGHT_DECAY)
        self.attentions = _choices("attentions", attentions, ATTENTIONS)
        self.stems = None if stems is None else _choices("stems", stems, STEMS)
        self.shortcuts = None if shortcuts is None else _choices("shortcuts", shortcuts,
                                                                 SHORTCUTS)
        self.drop_path_rates = _rates("drop_path_rates", drop_path_rates)
        self._min_width = min(min(self._base_spec(f, b).widths)
                              for f in self.families for b in self.blocks)
        self._costs = {}

    # Space ----------------------------------------------------------------
    def _base_spec(self, family, block):
        return specs_lib.get_spec(base_model_name(family, block, max(self.input_shape[:2])))

    def declare_hyperparameters(self, hp):
        """Register the whole space (every conditional branch) in ``hp``."""
        self.candidate(hp)

    def candidate(self, hp):
        """Declare the space in ``hp`` and return the :class:`Candidate` it selects."""
        family = hp.Choice("family", list(self.families), default=self.families[0])
        block = hp.Choice("block", list(self.blocks), default=self.blocks[0])
        depths = self._depths(hp, family)
        output_stride = self._output_stride(hp, family)
        width, groups = self._bottleneck(hp)
        lr = hp.Float("learning_rate", self.learning_rate[0], self.learning_rate[1],
                      sampling="log", default=self.learning_rate[2])
        wd = hp.Float("weight_decay", self.weight_decay[0], self.weight_decay[1],
                      sampling="log", default=self.weight_decay[2])
        if depths is None:
            raise ValueError(f"family={family!r} is not searched; families: "
                             f"{', '.join(self.families)}")
        name = base_model_name(family, block, max(self.input_shape[:2]))
        kwargs = {"depths": _full_depths(specs_lib.get_spec(name), depths), "block": block,
                  "output_stride": output_stride}
        if block == "bottleneck":
            width = width or 64
            groups = groups or 1
            kwargs.update(base_width=width // groups, groups=groups)
        kwargs.update(self._refinements(hp, family, specs_lib.get_spec(name)))
        if "stem" in kwargs:  # keep the output stride relative to the base row's stem
            base = specs_lib.get_spec(name)
            kwargs["output_stride"] = (kwargs["output_stride"] * specs_lib.STEM_STRIDES[
                kwargs["stem"]] // base.stem_stride)
        return Candidate(family, name, kwargs, float(lr), float(wd))

    def _refinements(self, hp, family, base):
        """Declare attention, stem, shortcut and drop_path_rate; the overrides
        they select (only those that differ from the base row)."""
        out = {}
        attention = _searched(hp, "attention", self.attentions)
        if attention != "none":
            out["attention"] = attention
        stem = self._stem(hp, family)
        if stem is not None and stem != base.stem:
            out["stem"] = stem
        if self.shortcuts is not None:
            shortcut = _searched(hp, "shortcut", self.shortcuts)
            if shortcut != base.shortcut:
                out["shortcut"] = shortcut
        rate = _searched(hp, "drop_path_rate", self.drop_path_rates)
        if rate:
            out["drop_path_rate"] = float(rate)
        return out

    def _family_stems(self, family):
        spec = self._base_spec(family, self.blocks[0])
        allowed = specs_lib.FAMILY_STEMS[spec.family]
        return tuple(s for s in self.stems if s in allowed) or (spec.stem,)

    def _stem(self, hp, family):
        """The sampled stem (declared per group of families with the same choices)."""
        if self.stems is None:
            return None
        if _overridden(hp, "stem"):
            return hp.get("stem")
        groups = {}
        for f in self.families:
            groups.setdefault(self._family_stems(f), []).append(f)
        active = None
        for values, fams in groups.items():
            with hp.conditional_scope("family", fams):
                value = _choice_or_fixed(hp, "stem", values, values[0])
            if family in fams:
                active = value
        return active

    def hp_to_model_args(self, hp):
        """``(model_name, model_kwargs)`` for ``build_model`` / ``train(model_kwargs=)``."""
        candidate = self.candidate(hp)
        return candidate.model_name, dict(candidate.model_kwargs)

    def _depth_groups(self):
        groups = {}
        for family in self.families:
            spec = self._base_spec(family, self.blocks[0])
            low, high = self.depth_range or DEFAULT_DEPTH_RANGES[spec.family]
            defaults = tuple(min(max(spec.depths[i], low), high) for i in searched_stages(spec))
            groups.setdefault((defaults, low, high), []).append(family)
        return [_DepthGroup(tuple(f), *key) for key, f in groups.items()]

    def _depths(self, hp, family):
        active = None
        for group in self._depth_groups():
            with hp.conditional_scope("family", list(group.families)):
                values = tuple(self._depth(hp, f"depth_{k + 1}", default, group)
                               for k, default in enumerate(group.defaults))
            if family in group.families:
                active = values
        return active

    @staticmethod
    def _depth(hp, name, default, group):
        if _overridden(hp, name):
            return hp.get(name)
        return hp.Int(name, group.low, group.high, default=default)

    def _family_output_strides(self, family):
        spec = self._base_spec(family, self.blocks[0])
        native = spec.native_output_stride
        wanted = self.output_strides or spec.output_strides
        return tuple(s for s in wanted if s in spec.output_strides) or (native,), native

    def _output_stride(self, hp, family):
        groups = {}
        for f in self.families:
            groups.setdefault(self._family_output_strides(f), []).append(f)
        active = None
        for (values, native), fams in groups.items():
            with hp.conditional_scope("family", fams):
                value = _choice_or_fixed(hp, "output_stride", values,
                                         native if native in values else values[-1])
            if family in fams:
                active = value
        return active

    def _valid_groups(self, width, groups):
        """Groups divides the width; every stage's inner width is >= groups."""
        return width % groups == 0 and groups * 64 <= self._min_width * width

    def _bottleneck(self, hp):
        """Declare bottleneck_width and groups; their values (None for basic blocks)."""
        if "bottleneck" not in self.blocks:
            return None, None
        user_groups = _user_choices(hp, "groups")
        user_widths = _user_choices(hp, "bottleneck_width")
        if user_widths is not None:
            width = hp.get("bottleneck_width")
            widths, scopes = user_widths, []
        else:
            widths = [w for w in self.bottleneck_widths
                      if self._groups_for(w, user_groups)]
            if not widths:
                raise ValueError(
                    f"no bottleneck width in {self.bottleneck_widths} fits groups "
                    f"{user_groups or self.groups} (groups must divide the width and be "
                    f"<= width * {self._min_width} / 64)")
            default = 64 if 64 in widths else widths[len(widths) // 2]
            with hp.conditional_scope("block", ["bottleneck"]):
                width = hp.Choice("bottleneck_width", widths, default=default)
            scopes = [("block", ["bottleneck"])]
        if user_groups is not None:
            self._check_user_groups(widths, user_groups)
            return width, hp.get("groups")
        return width, self._declare_groups(hp, widths, scopes)

    def _groups_for(self, width, user_groups=None):
        candidates = user_groups if user_groups is not None else self.groups
        valid = [g for g in candidates if self._valid_groups(width, g)]
        if user_groups is not None and len(valid) < len(user_groups):
            return []
        return valid

    def _check_user_groups(self, widths, user_groups):
        for width in widths:
            for groups in user_groups:
                if not self._valid_groups(width, groups):
                    raise ValueError(
                        f"groups={groups} does not fit bottleneck_width={width}: groups must "
                        f"divide the width and be <= width * {self._min_width} / 64")

    def _declare_groups(self, hp, widths, scopes):
        """One ``groups`` choice per bottleneck width, holding only valid values."""
        active = None
        for width in widths:
            choices = self._groups_for(width)
            if not choices:
                raise ValueError(f"bottleneck_width={width} admits none of groups "
                                 f"{self.groups}; choose other widths or groups")
            with contextlib.ExitStack() as stack:
                for parent, values in scopes + [("bottleneck_width", [width])]:
                    stack.enter_context(hp.conditional_scope(parent, values))
                value = _choice_or_fixed(hp, "groups", choices, min(choices))
            if value is not None:
                active = value
        return active

    # Models and budget ----------------------------------------------------
    def build(self, hp):
        """The candidate's model, compiled (SGD, sparse categorical cross-entropy)."""
        candidate = self.candidate(hp)
        model = self._make_model(candidate)
        model.compile(
            optimizer=keras.optimizers.SGD(candidate.learning_rate, momentum=0.9,
                                           weight_decay=candidate.weight_decay),
            loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    def _make_model(self, candidate):
        return models.build_model(candidate.model_name, classes=self.classes,
                                  input_shape=self.input_shape, **candidate.model_kwargs)

    def cost(self, hp):
        """``(parameters, multiply-adds per image)`` of the candidate in ``hp``."""
        return self.candidate_cost(self.candidate(hp))

    def candidate_cost(self, candidate):
        key = json.dumps([candidate.model_name, candidate.model_kwargs], sort_keys=True)
        if key not in self._costs:
            model = self._make_model(candidate)
            self._costs[key] = (int(model.count_params()), int(models.count_macs(model)))
            del model
        return self._costs[key]

    def budget_violation(self, hp):
        """Why the candidate in ``hp`` cannot be trained (over budget, invalid), or None."""
        try:
            candidate = self.candidate(hp)
            specs_lib.resolve_spec(candidate.model_name, **candidate.model_kwargs)
            if not (self.max_params or self.max_flops):
                return None
            params, flops = self.candidate_cost(candidate)
        except ValueError as err:
            return f"invalid candidate: {errors.first_line(err)}"
        return self._over(candidate, params, flops)

    def _over(self, candidate, params, flops):
        if self.max_params and params > self.max_params:
            return (f"{candidate.describe()} has {params:,} parameters > "
                    f"max_params={self.max_params:,}")
        if self.max_flops and flops > self.max_flops:
            return (f"{candidate.describe()} has {flops:,} multiply-adds > "
                    f"max_flops={self.max_flops:,}")
        return None

    def check_feasible(self, space):
        """ValueError if no candidate of ``space`` fits the budget.

        Tries the cheapest corner of each family and block: smallest depths
        and width, largest groups and output stride.
        """
        if not (self.max_params or self.max_flops):
            return
        smallest = None
        for values in _cheapest_values(space):
            hp = space.copy()
            hp.values = values
            candidate = self.candidate(hp)
            try:
                params, flops = self.candidate_cost(candidate)
            except ValueError:
                continue
            if self._over(candidate, params, flops) is None:
                return
            if smallest is None or (params, flops) < smallest[1:]:
                smallest = (candidate, params, flops)
        detail = ("" if smallest is None else f"; the smallest, {smallest[0].describe()}, has "
                  f"{smallest[1]:,} parameters and {smallest[2]:,} multiply-adds")
        raise ValueError(
            f"no candidate fits max_params={self.max_params} max_flops={self.max_flops} at "
            f"input {self.input_shape[0]}x{self.input_shape[1]}{detail}")


def _searched(hp, name, values):
    """A user's ``name`` if given, a Choice over ``values`` if several, else the one value."""
    if _overridden(hp, name):
        return hp.get(name)
    if len(values) == 1:
        return values[0]
    return hp.Choice(name, list(values), default=values[0])


def _full_depths(spec, searched):
    depths = list(spec.depths)
    for index, depth in zip(searched_stages(spec), searched):
        depths[index] = int(depth)
    return tuple(depths)


def _choice_or_fixed(hp, name, values, default):
    """A user's unconditional ``name`` if given, else a Choice (Fixed for one value)."""
    if _overridden(hp, name):
        return hp.get(name)
    if len(values) == 1:
        return hp.Fixed(name, values[0])
    return hp.Choice(name, list(values), default=default)


def _overridden(hp, name):
    return _user_choices(hp, name) is not None


def _user_choices(hp, name):
    """Possible values of an unconditional hyperparameter ``name``, or None.

    The space declares these names only inside conditional scopes, so an
    unconditional one is a user's override (``hp.Fixed``, ``hp.Choice``...).
    """
    for param in hp.space:
        if param.name == name and not param.conditions:
            return _possible_values(param)
    return None


def _possible_values(param):
    config = param.get_config()
    if isinstance(param, keras_tuner.engine.hyperparameters.Fixed):
        return [config["value"]]
    if "values" in config:
        return list(config["values"])
    if isinstance(param, keras_tuner.engine.hyperparameters.Int):
        return list(range(config["min_value"], config["max_value"] + 1, config["step"] or 1))
    if isinstance(param, keras_tuner.engine.hyperparameters.Boolean):
        return [False, True]
    return [config["min_value"], config["max_value"]]


# Names whose largest value gives the cheapest model (the rest: smallest).
_CHEAPEST_IS_MAX = ("groups", "output_stride")


def _cheapest_values(space):
    """Per family and block, the values of the cheapest candidate of ``space``."""
    for family in _space_values(space, "family"):
        for block in _space_values(space, "block"):
            pinned = {"family": family, "block": block}
            hps = keras_tuner.HyperParameters()
            for param in space.space:
                hps.merge([param])
                if hps.is_active(param):
                    hps.values[param.name] = pinned.get(param.name, _cheapest(param))
            yield hps.values


def _space_values(space, name):
    values = []
    for param in space.space:
        if param.name == name:
            values += [v for v in _possible_values(param) if v not in values]
    return values


# Names whose values are ranked by cost, cheapest first.
_CHEAPEST_FIRST = {"attention": ("none", "eca", "se"), "stem": ("imagenet", "deep", "cifar"),
                   "shortcut": ("pad", "projection", "avgpool")}


def _cheapest(param):
    values = _possible_values(param)
    if isinstance(param, keras_tuner.engine.hyperparameters.Fixed):
        return values[0]
    if param.name in _CHEAPEST_FIRST:
        return min(values, key=_CHEAPEST_FIRST[param.name].index)
    return max(values) if param.name in _CHEAPEST_IS_MAX else min(values)


# --------------------------------------------------------------------------
# Argument checks (one-line ValueErrors)


def _choice(field, value, choices):
    if value not in choices:
        raise ValueError(f"{field}={value!r} is not valid; choices: {', '.join(choices)}")


def _choices(field, values, choices):
    values = (values,) if isinstance(values, str) else tuple(values)
    if not values:
        raise ValueError(f"{field} is empty; choices: {', '.join(choices)}")
    for value in values:
        if value not in choices:
            raise ValueError(f"{field}: {value!r} is not valid; choices: {', '.join(choices)}")
    return tuple(dict.fromkeys(values))


def _rates(field, values):
    values = tuple(values) if isinstance(values, (tuple, list)) else (values,)
    if not values:
        raise ValueError(f"{field} is empty; give rates in [0, 1), e.g. (0.0, 0.1)")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ValueError(f"{field}: {value!r} is not a rate in [0, 1)")
    return tuple(dict.fromkeys(float(v) for v in values))


def _positive_int(field, value):
    if not specs_lib.is_int(value) or value < 1:
        raise ValueError(f"{field}={value!r}: must be a positive integer")
    return value


def _positive_ints(field, values):
    values = tuple(values)
    if not values:
        raise ValueError(f"{field} is empty: give at least one positive integer")
    for value in values:
        _positive_int(field, value)
    return tuple(sorted(set(values)))


def _optional_positive(field, value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{field}={value!r}: must be a positive number or None")
    return int(value)


def _int_range(field, value):
    try:
        low, high = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{field}={value!r}: expected (min, max) positive integers") from None
    if not 1 <= low <= high:
        raise ValueError(f"{field}={value!r}: expected 1 <= min <= max")
    return low, high


def _log_range(field, value, fallback):
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{field}={value!r}: expected (min, max) or (min, max, default)") \
            from None
    if len(values) not in (2, 3) or not 0 < values[0] <= values[1]:
        raise ValueError(f"{field}={value!r}: expected 0 < min <= max, as (min, max) or "
                         "(min, max, default)")
    low, high = values[:2]
    default = values[2] if len(values) == 3 else min(max(fallback[2], low), high)
    if not low <= default <= high:
        raise ValueError(f"{field}={value!r}: the default {default} is outside [{low}, {high}]")
    return low, high, default


def _fixed_shape(input_shape):
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape={input_shape!r}: expected a fixed (height, width, "
                         "channels), e.g. (32, 32, 3)")
    return shape


# --------------------------------------------------------------------------
# Oracles that keep candidates within the budget


class _BudgetMixin:
    """Resample candidates whose model is over the hypermodel's budget.

    ``budget_model`` (a :class:`HyperResNet`, set by :class:`ResNetTuner`)
    judges each candidate; a rejected one is recorded as tried, so it is
    never proposed again.
    """

    budget_model = None

    def _random_values(self):
        for _ in range(MAX_RESAMPLES):
            values = super()._random_values()
            if values is None or self._within_budget(values):
                return values
        raise kt_errors.FatalValueError(
            f"no candidate within the budget after {MAX_RESAMPLES} samples; raise "
            "max_params / max_flops or narrow the search space")

    def _within_budget(self, values):
        if self.budget_model is None:
            return True
        hp = self.get_space()
        hp.values = dict(values)
        reason = self.budget_model.budget_violation(hp)
        if reason is None:
            return True
        print(f"resampling: {reason}", flush=True)
        self._tried_so_far.add(self._compute_values_hash(values))
        return False

    def _record_values(self, trial):
        # Same-name branches (depth_1 per family, groups per width) need a
        # name-aware ensure_active_values; see the function below.
        hps = trial.hyperparameters
        hps.ensure_active_values = lambda: ensure_active_values(hps)
        try:
            super()._record_values(trial)
        finally:
            del hps.ensure_active_values


def ensure_active_values(hps):
    """Keep exactly the active values of ``hps``, name by name.

    keras-tuner's ``HyperParameters.ensure_active_values`` drops a value when
    an inactive hyperparameter of the same name (another conditional branch,
    e.g. ``groups`` for another bottleneck width) follows the active one;
    here a name is active when any of its branches is.
    """
    names = {param.name for param in hps.space}
    while True:
        active = {param.name for param in hps.space if hps.is_active(param)}
        stale = [name for name in hps.values if name in names and name not in active]
        for name in stale:
            del hps.values[name]
        missing = [param for param in hps.space
                   if hps.is_active(param) and param.name not in hps.values]
        for param in missing:
            hps.values.setdefault(param.name, param.random_sample())
        if not stale and not missing:
            return hps


class RandomOracle(_BudgetMixin, keras_tuner.oracles.RandomSearchOracle):
    """Random search, resampling over-budget candidates."""


class HyperbandOracle(_BudgetMixin, keras_tuner.oracles.HyperbandOracle):
    """Hyperband (successive halving on epochs), resampling over-budget candidates."""


class BayesianOracle(_BudgetMixin, keras_tuner.oracles.BayesianOptimizationOracle):
    """Gaussian-process Bayesian optimisation; an over-budget proposal is
    replaced by a random candidate within the budget."""

    def populate_space(self, trial_id):
        response = super().populate_space(trial_id)
        values = response.get("values")
        if response["status"] != "RUNNING" or not values or self._within_budget(values):
            return response
        values = self._random_values()
        if values is None:
            return {"status": "STOPPED", "values": None}
        return {"status": "RUNNING", "values": values}


# --------------------------------------------------------------------------
# The tuner


def distributed_role():
    """'chief', 'worker' or 'standalone', from keras-tuner's environment variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "standalone"
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


def _silence_condition_debug_print():
    """keras-tuner 1.4 prints each condition's first value whenever it sends a
    trial over gRPC (a leftover ``print`` in ``Parent.to_proto``); mute it."""
    from keras_tuner.src.engine import conditions

    conditions.print = lambda *args, **kwargs: None


class ResNetTuner(keras_tuner.Tuner):
    """Runs each trial through :func:`resnet_keras.train.train`.

    ``search(dataset, epochs=..., batch_size=..., **train_kwargs)`` passes
    the keyword arguments to ``train`` for every trial (``image_size`` is the
    hypermodel's). Each trial returns val_accuracy (the objective), params,
    flops (multiply-adds), wall_time and epochs.
    """

    def __init__(self, oracle, hypermodel, **kwargs):
        if not isinstance(hypermodel, HyperResNet):
            raise ValueError(f"hypermodel must be a HyperResNet, got {type(hypermodel).__name__}")
        if isinstance(oracle, _BudgetMixin):
            oracle.budget_model = hypermodel
        if distributed_role() != "standalone":
            _silence_condition_debug_print()
        super().__init__(oracle, hypermodel, **kwargs)
        self.trials_run = []

    @property
    def role(self):
        return distributed_role()

    @property
    def tensorboard_dir(self):
        return os.path.join(str(self.directory), TENSORBOARD_DIR)

    def _populate_initial_space(self):
        # One declaration pass registers every conditional branch; no model
        # needs to be built to discover the space.
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def search(self, *fit_args, **fit_kwargs):
        """Run the search: trials until max_trials (or the oracle) stops it."""
        if self.role != "worker":
            self.hypermodel.check_feasible(self.oracle.get_space())
            write_hparams_config(self.tensorboard_dir, self.oracle.get_space())
        super().search(*fit_args, **fit_kwargs)

    def run_trial(self, trial, dataset, **train_kwargs):
        hp = trial.hyperparameters
        candidate = self.hypermodel.candidate(hp)
        reason = self.hypermodel.budget_violation(hp)
        if reason:
            raise kt_errors.FailedTrialError(f"rejected before training: {reason}")
        params, flops = self.hypermodel.candidate_cost(candidate)
        model_dir = self.get_trial_dir(trial.trial_id)
        kwargs = dict(train_kwargs, image_size=self.hypermodel.input_shape[0])
        if "tuner/epochs" in hp.values:
            kwargs["epochs"] = int(hp.values["tuner/epochs"])
            self._warm_start(hp.values.get("tuner/trial_id"), model_dir)
        result = self._train(candidate, dataset, model_dir, kwargs)
        metrics = {"val_accuracy": float(result.best_top1), "params": params, "flops": flops,
                   "wall_time": float(result.wall_time), "epochs": result.epochs}
        self.trials_run.append(trial.trial_id)
        write_session(self.tensorboard_dir, trial.trial_id, hp.values, metrics)
        return metrics

    def _train(self, candidate, dataset, model_dir, kwargs):
        try:
            result = train_lib.train(
                candidate.model_name, dataset, model_dir=model_dir,
                model_kwargs=candidate.model_kwargs, learning_rate=candidate.learning_rate,
                weight_decay=candidate.weight_decay, **kwargs)
        except train_lib.TrainingDiverged as err:
            raise kt_errors.FailedTrialError(str(err)) from None
        except ValueError as err:  # bad input: every trial would fail the same way
            raise kt_errors.FatalValueError(errors.first_line(err)) from None
        if result.best_top1 is None:
            raise kt_errors.FailedTrialError("training finished without an evaluation")
        return result

    def _warm_start(self, parent_id, model_dir):
        """Start a promoted Hyperband trial from its parent's checkpoint."""
        backup = rundir.path(model_dir, rundir.BACKUP_DIR)
        if not parent_id or os.path.isdir(backup):
            return
        parent = os.path.join(str(self.project_dir), f"trial_{parent_id}")
        if not os.path.isdir(rundir.path(parent, rundir.BACKUP_DIR)):
            return
        shutil.copytree(rundir.path(parent, rundir.BACKUP_DIR), backup)
        if os.path.isfile(rundir.path(parent, rundir.BEST_MODEL)):
            shutil.copy2(rundir.path(parent, rundir.BEST_MODEL),
                         rundir.path(model_dir, rundir.BEST_MODEL))

    def load_model(self, trial):
        """The trial's best (else final) trained model."""
        return rundir.load_trained_model(self.get_trial_dir(trial.trial_id))[0]

    # Results --------------------------------------------------------------
    def results(self):
        """One dict per trial, in trial order (see :data:`RESULT_COLUMNS`)."""
        return [self._row(self.oracle.trials[k]) for k in sorted(self.oracle.trials)]

    def _row(self, trial):
        hp = trial.hyperparameters.copy()
        candidate = self.hypermodel.candidate(hp)
        kw = candidate.model_kwargs
        metric = {name: _best(trial, name) for name in METRICS}
        return {
            "trial": trial.trial_id, "status": trial.status, "model": candidate.describe(),
            "family": candidate.family, "base": candidate.model_name, "block": kw["block"],
            "depths": "-".join(str(d) for d in kw["depths"]),
            "bottleneck_width": (kw["base_width"] * kw["groups"]
                                 if kw["block"] == "bottleneck" else ""),
            "groups": kw.get("groups", ""), "output_stride": kw["output_stride"],
            "learning_rate": candidate.learning_rate, "weight_decay": candidate.weight_decay,
            "epochs": _int_or_blank(metric["epochs"]), "params": _int_or_blank(metric["params"]),
            "flops": _int_or_blank(metric["flops"]), "val_accuracy": metric["val_accuracy"],
            "time_s": metric["wall_time"]}

    def best_trial(self):
        """The completed trial with the highest val_accuracy; ValueError if none."""
        trials = [t for t in self.oracle.get_best_trials(1) if t.status == "COMPLETED"]
        if not trials:
            raise ValueError(f"no completed trial in {self.project_dir}")
        return trials[0]

    def report(self, path=None, stream=None):
        """Print the results table and write it as CSV (default DIRECTORY/results.csv)."""
        rows = self.results()
        path = path or os.path.join(str(self.directory), RESULTS_FILE)
        write_csv(rows, path)
        best = next((t.trial_id for t in self.oracle.get_best_trials(1)
                     if t.status == "COMPLETED"), None)
        print(format_table(rows, best), file=stream, flush=True)
        print(f"results: {path}  tensorboard: {self.tensorboard_dir}", file=stream, flush=True)
        return rows

    def export_best(self, export_dir):
        """Export the best trial's model for TF Serving; returns the version folder."""
        trial = self.best_trial()
        return train_lib.export_trained(self.get_trial_dir(trial.trial_id), export_dir)


def _best(trial, name):
    if not trial.metrics.exists(name):
        return None
    return trial.metrics.get_best_value(name)


def _int_or_blank(value):
    return "" if value is None else int(value)


def make_tuner(kind, hypermodel, directory, max_trials, *, max_epochs=None,
               project_name="search", seed=None, hyperparameters=None, overwrite=False,
               tune_new_entries=True, num_initial_points=None, factor=3):
    """A :class:`ResNetTuner` with a budget-aware oracle (objective val_accuracy, max).

    Args:
        kind: "hyperband", "bayesian" or "random".
        hypermodel: a :class:`HyperResNet`.
        directory: keras-tuner state, trial folders, results.csv, tensorboard/.
        max_trials: trials in all (a resumed search counts the earlier ones).
        max_epochs: epochs of the longest Hyperband trial (required for hyperband).
        hyperparameters: ``keras_tuner.HyperParameters`` with overrides, e.g.
            ``hp.Fixed("groups", 8)``.
        overwrite: start afresh instead of resuming what ``directory`` holds.
        num_initial_points: random trials before the Bayesian model; default
            a third of ``max_trials`` (at least 3).
    """
    _choice("tuner", kind, TUNERS)
    _positive_int("max_trials", max_trials)
    common = dict(objective=keras_tuner.Objective(OBJECTIVE, "max"), seed=seed,
                  hyperparameters=hyperparameters, tune_new_entries=tune_new_entries)
    if kind == "random":
        oracle = RandomOracle(max_trials=max_trials, **common)
    elif kind == "bayesian":
        oracle = BayesianOracle(max_trials=max_trials, **common,
                                num_initial_points=num_initial_points or max(3, max_trials // 3))
    else:
        if not max_epochs:
            raise ValueError("the hyperband tuner needs max_epochs (--epochs), the epochs of "
                             "its longest trial")
        oracle = HyperbandOracle(max_epochs=_positive_int("max_epochs", max_epochs),
                                 factor=factor, **common)
        oracle.max_trials = max_trials
    return ResNetTuner(oracle, hypermodel, directory=directory, project_name=project_name,
                       overwrite=overwrite)


# --------------------------------------------------------------------------
# Results table and CSV

RESULT_COLUMNS = ("trial", "status", "model", "family", "base", "block", "depths",
                  "bottleneck_width", "groups", "output_stride", "learning_rate",
                  "weight_decay", "epochs", "params", "flops", "val_accuracy", "time_s")


def write_csv(rows, path):
    """Write result rows as CSV (``flops`` is multiply-adds per image)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row[k] is None else row[k] for k in RESULT_COLUMNS})
    os.replace(tmp, path)


def format_table(rows, best=None):
    """The results as a fixed-width text table; ``*`` marks the best trial."""
    header = ("trial", "architecture", "lr", "wd", "epochs", "params", "MACs", "val top-1",
              "time")
    lines = [header]
    for row in rows:
        accuracy = ("-" if row["val_accuracy"] is None else f"{row['val_accuracy']:.4f}")
        lines.append((
            f"{row['trial']}{'*' if row['trial'] == best else ''}", row["model"],
            f"{row['learning_rate']:.3g}", f"{row['weight_decay']:.2g}", str(row["epochs"]),
            _fmt_count(row["params"], ","), _fmt_count(row["flops"], "M"),
            accuracy if row["status"] == "COMPLETED" else row["status"].lower(),
            "-" if row["time_s"] is None else f"{row['time_s']:.0f}s"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                     for line in lines)


def _fmt_count(value, style):
    if value in ("", None):
        return "-"
    return f"{value:,}" if style == "," else f"{value / 1e6:.1f}M"


# --------------------------------------------------------------------------
# TensorBoard HParams


def _domain(params):
    from tensorboard.plugins.hparams import api as hp_api

    if all(isinstance(p, keras_tuner.engine.hyperparameters.Float) for p in params):
        configs = [p.get_config() for p in params]
        return hp_api.RealInterval(float(min(c["min_value"] for c in configs)),
                                   float(max(c["max_value"] for c in configs)))
    values = []
    for param in params:
        values += [v for v in _possible_values(param) if v not in values]
    return hp_api.Discrete(sorted(values))


def write_hparams_config(logdir, space):
    """The HParams experiment: every hyperparameter's domain and the trial metrics."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp_api

    if glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
        return
    by_name = {}
    for param in space.space:
        by_name.setdefault(param.name, []).append(param)
    hparams = [hp_api.HParam(name, _domain(params)) for name, params in by_name.items()]
    metrics = [hp_api.Metric("val_accuracy", display_name="val top-1"),
               hp_api.Metric("params", display_name="parameters"),
               hp_api.Metric("flops", display_name="multiply-adds"),
               hp_api.Metric("wall_time", display_name="time (s)")]
    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default():
        hp_api.hparams_config(hparams=hparams, metrics=metrics)
    writer.close()


def write_session(logdir, trial_id, values, metrics):
    """One HParams session: the trial's hyperparameters and its metric values."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp_api

    hparams = {k: v for k, v in values.items() if not k.startswith("tuner/")}
    writer = tf.summary.create_file_writer(os.path.join(logdir, f"trial_{trial_id}"))
    with writer.as_default(step=int(metrics.get("epochs") or 0)):
        hp_api.hparams(hparams, trial_id=f"trial_{trial_id}")
        for name in ("val_accuracy", "params", "flops", "wall_time"):
            tf.summary.scalar(name, float(metrics[name]))
    writer.close()


# --------------------------------------------------------------------------
# Command line


def tune_main(args):
    """``resnet-keras tune``: search, print the table, write results.csv, export."""
    rundir.check_writable_dir(args.directory, "tuner directory")
    rundir.check_writable_dir(args.export_dir, "export dir")
    if args.num_cpu_replicas:  # logical CPU devices must exist before TF starts
        train_lib.make_strategy(args.strategy, args.num_cpu_replicas)
    dataset = data_lib.load_dataset(args.dataset, args.data_dir)
    size = args.image_size or dataset.default_image_size()
    hypermodel = HyperResNet(
        dataset.num_classes, (size, size, 3), families=args.family or FAMILIES,
        blocks=args.block or BLOCKS, max_params=args.max_params, max_flops=args.max_flops,
        depth_range=args.depth_range, groups=args.groups or DEFAULT_GROUPS)
    tuner = make_tuner(args.tuner, hypermodel, args.directory, args.max_trials,
                       max_epochs=args.epochs, seed=args.seed)
    tuner.search(args.dataset, data_dir=args.data_dir, epochs=args.epochs,
                 batch_size=args.batch_size, strategy=args.strategy,
                 num_cpu_replicas=args.num_cpu_replicas, seed=args.seed,
                 train_subset=args.train_subset, steps_per_epoch=args.steps_per_epoch,
                 max_steps=args.max_steps, verbose=0 if args.quiet else 1)
    if tuner.role == "worker":
        print(f"{tuner.tuner_id}: ran trial(s) {', '.join(tuner.trials_run) or 'none'}")
        return 0
    tuner.report()
    if args.export_dir:
        trial = tuner.best_trial()
        path = tuner.export_best(args.export_dir)
        print(f"exported trial {trial.trial_id} ({trial.score:.4f}) to {path}")
    return 0
