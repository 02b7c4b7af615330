"""The search space: :class:`HyperResNet` maps hyperparameters to a
registered base row and the spec overrides of ``build_model``."""
import dataclasses

import keras
import keras_tuner

from resnet_keras import models, preprocessing
from resnet_keras import specs as specs_lib
from resnet_keras.tuning import checks
from resnet_keras.tuning import hyperparameters as hp_lib
from resnet_keras.tuning.bottleneck import DEFAULT_WIDTH, BottleneckSpace
from resnet_keras.tuning.budget import Budget, BudgetMethods

FAMILIES = ("resnet", "drn_c", "drn_d")
BLOCKS = specs_lib.BLOCKS
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


def base_model_name(family, block, image_size):
    """The registered row a family starts from at an image size."""
    checks.choice("family", family, FAMILIES)
    checks.choice("block", block, BLOCKS)
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


class HyperResNet(BudgetMethods, keras_tuner.HyperModel):
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
        self.classes = checks.positive_int("classes", classes)
        self.input_shape = checks.fixed_shape(input_shape)
        self.families = checks.choices("families", families, FAMILIES)
        self.blocks = checks.choices("blocks", blocks, BLOCKS)
        self.max_params = checks.optional_positive("max_params", max_params)
        self.max_flops = checks.optional_positive("max_flops", max_flops)
        self.depth_range = _optional(checks.int_range, "depth_range", depth_range)
        self.bottleneck_widths = checks.positive_ints("bottleneck_widths", bottleneck_widths)
        self.groups = checks.positive_ints("groups", groups)
        self.output_strides = _optional(checks.positive_ints, "output_strides", output_strides)
        self.learning_rate = checks.log_range("learning_rate", learning_rate,
                                              DEFAULT_LEARNING_RATE)
        self.weight_decay = checks.log_range("weight_decay", weight_decay, DEFAULT_WEIGHT_DECAY)
        self.attentions = checks.choices("attentions", attentions, ATTENTIONS)
        self.stems = _optional(checks.choices, "stems", stems, STEMS)
        self.shortcuts = _optional(checks.choices, "shortcuts", shortcuts, SHORTCUTS)
        self.drop_path_rates = checks.rates("drop_path_rates", drop_path_rates)
        min_width = min(min(self.base_spec(f, b).widths)
                        for f in self.families for b in self.blocks)
        self._bottleneck = BottleneckSpace(self.bottleneck_widths, self.groups, min_width)
        self.budget = Budget(self.max_params, self.max_flops, self.input_shape,
                             self.candidate, self._make_model)

    # Space ----------------------------------------------------------------
    def base_spec(self, family, block):
        """The spec of the registered row FAMILY starts from at the input size."""
        return specs_lib.get_spec(base_model_name(family, block, max(self.input_shape[:2])))

    def declare_hyperparameters(self, hp):
        """Register the whole space (every conditional branch) in ``hp``."""
        self.candidate(hp)

    def candidate(self, hp):
        """Declare the space in ``hp`` and return the :class:`Candidate` it selects."""
        family = hp.Choice("family", list(self.families), default=self.families[0])
        block = hp.Choice("block", list(self.blocks), default=self.blocks[0])
        kwargs = {"depths": _declare_depths(self, hp, family), "block": block,
                  "output_stride": _declare_output_stride(self, hp, family)}
        width, groups = (self._bottleneck.declare(hp) if "bottleneck" in self.blocks
                         else (None, None))
        lr = hp.Float("learning_rate", self.learning_rate[0], self.learning_rate[1],
                      sampling="log", default=self.learning_rate[2])
        wd = hp.Float("weight_decay", self.weight_decay[0], self.weight_decay[1],
                      sampling="log", default=self.weight_decay[2])
        if kwargs["depths"] is None:
            raise ValueError(f"family={family!r} is not searched; families: "
                             f"{', '.join(self.families)}")
        name = base_model_name(family, block, max(self.input_shape[:2]))
        base = specs_lib.get_spec(name)
        kwargs["depths"] = _full_depths(base, kwargs["depths"])
        if block == "bottleneck":
            groups = groups or 1
            kwargs.update(base_width=(width or DEFAULT_WIDTH) // groups, groups=groups)
        kwargs.update(_declare_refinements(self, hp, family, base))
        _keep_relative_stride(kwargs, base)
        return Candidate(family, name, kwargs, float(lr), float(wd))

    def hp_to_model_args(self, hp):
        """``(model_name, model_kwargs)`` for ``build_model`` / ``train(model_kwargs=)``."""
        candidate = self.candidate(hp)
        return candidate.model_name, dict(candidate.model_kwargs)

    # Models ---------------------------------------------------------------
    def build(self, hp):
        """The candidate's model, not compiled: every trial of the tuners of
        :func:`make_tuner` trains through :func:`resnet_keras.train.train`,
        which compiles its own recipe."""
        return self._make_model(self.candidate(hp))

    def fit(self, hp, model, *args, **kwargs):
        """Train with keras-tuner's own tuners (``keras_tuner.RandomSearch(hypermodel,
        ...)``), whose trials call ``build`` and then ``fit``: the candidate's
        SGD recipe is compiled here, since ``model.fit`` needs it."""
        candidate = self.candidate(hp)
        model.compile(
            optimizer=keras.optimizers.SGD(candidate.learning_rate, momentum=0.9,
                                           weight_decay=candidate.weight_decay),
            loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model.fit(*args, **kwargs)

    def _make_model(self, candidate):
        return models.build_model(candidate.model_name, classes=self.classes,
                                  input_shape=self.input_shape, **candidate.model_kwargs)


def _optional(check, field, value, *args):
    return None if value is None else check(field, value, *args)


# --------------------------------------------------------------------------
# Declarations per family (each family group shares its choices)


@dataclasses.dataclass(frozen=True)
class _DepthGroup:
    """Families that share the searched stages' count, defaults and range."""

    defaults: tuple
    low: int
    high: int


def _declare_depths(space, hp, family):
    """``depth_1`` .. ``depth_N`` of the searched stages; FAMILY's values."""
    def depth_group(f):
        spec = space.base_spec(f, space.blocks[0])
        low, high = space.depth_range or DEFAULT_DEPTH_RANGES[spec.family]
        defaults = tuple(min(max(spec.depths[i], low), high) for i in searched_stages(spec))
        return _DepthGroup(defaults, low, high)

    def declare(group):
        return tuple(_declare_depth(hp, f"depth_{k + 1}", default, group)
                     for k, default in enumerate(group.defaults))

    groups = hp_lib.group_families(space.families, depth_group)
    return hp_lib.declare_per_group(hp, family, groups, declare)


def _declare_depth(hp, name, default, group):
    if hp_lib.overridden(hp, name):
        return hp.get(name)
    return hp.Int(name, group.low, group.high, default=default)


def _declare_output_stride(space, hp, family):
    """The family's allowed output strides (default: its native one)."""
    def strides(f):
        spec = space.base_spec(f, space.blocks[0])
        wanted = space.output_strides or spec.output_strides
        values = tuple(s for s in wanted if s in spec.output_strides)
        return values or (spec.native_output_stride,), spec.native_output_stride

    def declare(key):
        values, native = key
        return hp_lib.choice_or_fixed(hp, "output_stride", values,
                                      native if native in values else values[-1])

    groups = hp_lib.group_families(space.families, strides)
    return hp_lib.declare_per_group(hp, family, groups, declare)


def _declare_refinements(space, hp, family, base):
    """Declare attention, stem, shortcut and drop_path_rate; the overrides
    they select (only those that differ from the base row)."""
    out = {}
    attention = hp_lib.searched(hp, "attention", space.attentions)
    if attention != "none":
        out["attention"] = attention
    stem = _declare_stem(space, hp, family)
    if stem is not None and stem != base.stem:
        out["stem"] = stem
    if space.shortcuts is not None:
        shortcut = hp_lib.searched(hp, "shortcut", space.shortcuts)
        if shortcut != base.shortcut:
            out["shortcut"] = shortcut
    rate = hp_lib.searched(hp, "drop_path_rate", space.drop_path_rates)
    if rate:
        out["drop_path_rate"] = float(rate)
    return out


def _declare_stem(space, hp, family):
    """The sampled stem (declared per group of families with the same choices)."""
    if space.stems is None:
        return None
    if hp_lib.overridden(hp, "stem"):
        return hp.get("stem")

    def stems(f):
        spec = space.base_spec(f, space.blocks[0])
        allowed = specs_lib.FAMILY_STEMS[spec.family]
        return tuple(s for s in space.stems if s in allowed) or (spec.stem,)

    groups = hp_lib.group_families(space.families, stems)
    return hp_lib.declare_per_group(hp, family, groups,
                                    lambda values: hp_lib.choice_or_fixed(hp, "stem", values,
                                                                          values[0]))


def _keep_relative_stride(kwargs, base):
    """A stem of another stride keeps the output stride relative to the base row's stem."""
    if "stem" in kwargs:
        kwargs["output_stride"] = (kwargs["output_stride"] * specs_lib.STEM_STRIDES[kwargs["stem"]]
                                   // base.stem_stride)


def _full_depths(spec, searched):
    depths = list(spec.depths)
    for index, depth in zip(searched_stages(spec), searched):
        depths[index] = int(depth)
    return tuple(depths)
