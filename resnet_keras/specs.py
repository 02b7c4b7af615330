"""Model specs: every registered network is one row of data.

A :class:`ModelSpec` describes a whole network: its stem, the kind of each
stage (residual, plain conv, or DRN "degridding"), depths, widths, strides,
fixed dilations, the bottleneck's width and groups, and the output-stride
rule. One builder (:mod:`resnet_keras.models`) reads it. The ResNet variants,
ResNeXt, Wide ResNet, the CIFAR ResNets, DRN-A/C/D and timm's ResNet-D,
SE-ResNet and ECA-ResNet-D differ only in their row (stem, shortcut,
attention, stochastic depth, zero-initialised branches are fields too).

Beside the registry ``SPECS``, ``FACTS`` holds each row's pinned numbers
(parameters, trainable parameters, multiply-adds); the tests and the
README's zoo table are checked against them.
"""
import dataclasses
import math
from dataclasses import dataclass
from typing import Optional, Tuple

from resnet_keras.spec_fields import (ATTENTIONS, BLOCKS, FAMILIES, FAMILY_STEMS,
                                      FIRST_DILATIONS, SHORTCUTS, STAGE_KINDS, STEM_STRIDES,
                                      check_spec, is_int)

__all__ = ["ATTENTIONS", "BLOCKS", "FACTS", "FAMILIES", "FAMILY_STEMS", "FIRST_DILATIONS",
           "Facts", "ModelSpec", "OVERRIDABLE", "SHORTCUTS", "SPECS", "STAGE_KINDS",
           "STEM_STRIDES", "check_spec", "get_facts", "get_spec", "is_int", "list_models",
           "resolve_spec"]

# Fields that build_model(name, **overrides) and the tuner may change.
OVERRIDABLE = ("depths", "widths", "block", "base_width", "groups", "expansion",
               "stem", "shortcut", "attention", "se_reduction", "eca_kernel_size",
               "drop_path_rate", "zero_init_last")


@dataclass(frozen=True)
class ModelSpec:
    """One network, as data.

    Attributes:
        family: architecture family, one of FAMILIES.
        depths: blocks (or convs, for "conv" stages) per stage.
        block: "basic" or "bottleneck", used by the "residual" stages.
        widths: per-stage width ("planes"); a bottleneck outputs
            ``width * expansion`` channels.
        strides: nominal per-stage stride (before the output-stride rule).
        dilations: fixed per-stage dilation (DRN levels); default all 1.
        kinds: per-stage kind, one of STAGE_KINDS; default all "residual".
        stem: one of STEM_STRIDES (see :mod:`resnet_keras.spec_fields`);
            FAMILY_STEMS lists the stems of each family.
        stem_width: channels out of the stem.
        base_width: bottleneck width per group at width 64; the bottleneck's
            inner width is ``int(width * base_width / 64) * groups``
            (torchvision's rule: 64 for ResNet, 128 for Wide ResNet-2,
            4 or 8 for ResNeXt 32x4d / 32x8d).
        groups: grouped-conv cardinality of the bottleneck's 3x3 conv.
        expansion: bottleneck output channels / width (4); 1 for basic blocks.
        preact: pre-activation (v2) blocks, keras.applications layout, with
            the stride in the last block of each stage.
        stride_in_1x1: put a bottleneck's stride on its first 1x1 conv
            (v1, keras.applications) instead of the 3x3 (v1.5).
        conv_bias: convs followed by BN have a bias (keras.applications v1).
        bn_epsilon, bn_momentum: BatchNormalization settings.
        shortcut: "projection", "pad" (He et al.'s CIFAR option A) or
            "avgpool" (ResNet-D); see :mod:`resnet_keras.spec_fields`.
        attention: None, "se" (squeeze-and-excitation) or "eca" (efficient
            channel attention) on each residual branch.
        se_reduction: the SE bottleneck's reduction (timm's ``rd_ratio =
            1 / se_reduction``).
        eca_kernel_size: ECA's 1D kernel size; None picks it from the channels
            as ECA-Net does (``t = int((log2(C) + 1) / 2)``, the next odd
            number, at least 3).
        drop_path_rate: stochastic depth: block ``i`` of ``n`` drops its
            residual branch with probability ``drop_path_rate * i / (n - 1)``
            in training (timm's linear rule); identity at inference.
        zero_init_last: initialise the last BN gamma of every residual branch
            to 0, so every block starts as the identity.
        first_dilation: dilation of the first block of a dilated stage:
            "previous" (the stage's incoming dilation; timm/torchvision),
            "same" (the stage's own; DRN-C/D) or "one" (DRN-A).
        output_strides: allowed ``output_stride`` values; the first entry of
            a one-element tuple, or the native value, is the default.
        output_stride: requested output stride; None means native.
        description: one line for ``list_models`` and the CLI.
    """

    family: str
    depths: Tuple[int, ...]
    block: str = "bottleneck"
    widths: Tuple[int, ...] = (64, 128, 256, 512)
    strides: Tuple[int, ...] = (1, 2, 2, 2)
    dilations: Optional[Tuple[int, ...]] = None
    kinds: Optional[Tuple[str, ...]] = None
    stem: str = "imagenet"
    stem_width: int = 64
    base_width: int = 64
    groups: int = 1
    expansion: Optional[int] = None
    preact: bool = False
    stride_in_1x1: bool = False
    conv_bias: bool = False
    bn_epsilon: float = 1e-5
    bn_momentum: float = 0.9
    shortcut: str = "projection"
    attention: Optional[str] = None
    se_reduction: int = 16
    eca_kernel_size: Optional[int] = None
    drop_path_rate: float = 0.0
    zero_init_last: bool = False
    first_dilation: str = "previous"
    output_strides: Tuple[int, ...] = (8, 16, 32)
    output_stride: Optional[int] = None
    description: str = ""

    def __post_init__(self):
        n = len(self.depths)
        set_ = object.__setattr__
        set_(self, "depths", tuple(self.depths))
        set_(self, "widths", tuple(self.widths))
        set_(self, "strides", tuple(self.strides))
        set_(self, "dilations", tuple(self.dilations) if self.dilations else (1,) * n)
        set_(self, "kinds", tuple(self.kinds) if self.kinds else ("residual",) * n)
        if self.expansion is None:
            set_(self, "expansion", 4 if self.block == "bottleneck" else 1)

    # Derived quantities -------------------------------------------------
    @property
    def stem_stride(self):
        return STEM_STRIDES[self.stem]

    @property
    def native_output_stride(self):
        return self.stem_stride * math.prod(self.strides)

    def bottleneck_width(self, width):
        """Inner width of a bottleneck block of nominal ``width``."""
        return int(width * self.base_width / 64) * self.groups

    def stage_block(self, index):
        """The block type of stage ``index``: basic, bottleneck, or None (conv)."""
        kind = self.kinds[index]
        if kind == "residual":
            return self.block
        return None if kind == "conv" else "basic"

    def stage_channels(self, index):
        """Output channels of stage ``index``."""
        block = self.stage_block(index)
        expansion = self.expansion if block == "bottleneck" else 1
        return self.widths[index] * expansion

    def stage_plan(self):
        """Per stage ``(stride, dilation, first_dilation)`` after the output-stride rule.

        Walks the stages with a running stride; once it has reached the
        requested output stride, each further stride becomes dilation.
        """
        target = self.output_stride or self.native_output_stride
        net, dilation, previous, plan = self.stem_stride, 1, 1, []
        for stride, fixed in zip(self.strides, self.dilations):
            if stride > 1 and net >= target:
                dilation, stride = dilation * stride, 1
            else:
                net *= stride
            current = dilation * fixed
            first = {"previous": previous, "same": current, "one": 1}[self.first_dilation]
            plan.append((stride, current, first))
            previous = current
        return plan

    def validate(self, name="model"):
        """Raise ValueError (one line naming the bad value) if inconsistent; else self."""
        return check_spec(self, name)


# ---------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------

def _resnet(depths, block, description, **kw):
    return ModelSpec(family="resnet", depths=depths, block=block,
                     description=description, **kw)


def _keras_v1(depths, description):
    # keras.applications ResNet50/101/152: stride on the first 1x1, conv
    # biases everywhere, BN epsilon 1.001e-5, Keras' default BN momentum.
    return ModelSpec(family="resnet", depths=depths, block="bottleneck",
                     stride_in_1x1=True, conv_bias=True, bn_epsilon=1.001e-5,
                     bn_momentum=0.99, description=description)


def _resnet_v2(depths, description):
    # keras.applications ResNet50V2/101V2/152V2: pre-activation, stride in
    # the last block of stages 1-3, bias on convs not followed by BN.
    return ModelSpec(family="resnet_v2", depths=depths, block="bottleneck",
                     strides=(2, 2, 2, 1), stem="imagenet_v2", preact=True,
                     bn_epsilon=1.001e-5, bn_momentum=0.99, description=description)


def _cifar(depth):
    n = (depth - 2) // 6
    return ModelSpec(
        family="cifar", depths=(n, n, n), block="basic", widths=(16, 32, 64),
        strides=(1, 2, 2), stem="cifar", stem_width=16, shortcut="pad",
        output_strides=(1, 2, 4),
        description=f"CIFAR ResNet-{depth} (He et al. 2016, 6n+2 with n={n}, "
                    "option A shortcuts)")


_DRN_WIDTHS = (16, 32, 64, 128, 256, 512, 512, 512)
_DRN_STRIDES = (1, 2, 2, 2, 1, 1, 1, 1)
_DRN_DILATIONS = (1, 1, 1, 1, 2, 4, 2, 1)
_DRN_KINDS = {
    "drn_c": ("basic", "basic") + ("residual",) * 4 + ("degrid", "degrid"),
    "drn_d": ("conv", "conv") + ("residual",) * 4 + ("conv", "conv"),
}


def _drn(family, depths, block, description):
    return ModelSpec(
        family=family, depths=depths, block=block, widths=_DRN_WIDTHS,
        strides=_DRN_STRIDES, dilations=_DRN_DILATIONS, kinds=_DRN_KINDS[family],
        stem="drn", stem_width=16, first_dilation="same", output_strides=(8,),
        description=description)


def _timm(depths, block, description, **kw):
    # timm's ResNet class: v1.5 topology, zero-initialised last BN (its default).
    return ModelSpec(family="resnet", depths=depths, block=block, zero_init_last=True,
                     description=description, **kw)


def _timm_d(depths, block, description, **kw):
    # ResNet-D: deep 3x3 stem (32-32-64) and average-pool shortcut downsampling.
    return _timm(depths, block, description, stem="deep", shortcut="avgpool", **kw)


_R50, _R101, _R152 = (3, 4, 6, 3), (3, 4, 23, 3), (3, 8, 36, 3)
_R18 = _R26 = (2, 2, 2, 2)
_R34 = (3, 4, 6, 3)
_DRN_SHALLOW, _DRN_MID = (1, 1, 2, 2, 2, 2, 1, 1), (1, 1, 3, 4, 6, 3, 1, 1)

SPECS = {
    "resnet18": _resnet((2, 2, 2, 2), "basic", "ResNet-18 (v1.5, torchvision topology)"),
    "resnet34": _resnet((3, 4, 6, 3), "basic", "ResNet-34 (v1.5, torchvision topology)"),
    "resnet50": _resnet(_R50, "bottleneck", "ResNet-50 v1.5 (stride on the 3x3, torchvision)"),
    "resnet101": _resnet(_R101, "bottleneck", "ResNet-101 v1.5 (torchvision topology)"),
    "resnet152": _resnet(_R152, "bottleneck", "ResNet-152 v1.5 (torchvision topology)"),
    "resnet50_v1": _keras_v1(_R50, "ResNet-50 v1, keras.applications.ResNet50 layout"),
    "resnet101_v1": _keras_v1(_R101, "ResNet-101 v1, keras.applications.ResNet101 layout"),
    "resnet152_v1": _keras_v1(_R152, "ResNet-152 v1, keras.applications.ResNet152 layout"),
    "resnet50v2": _resnet_v2(_R50, "ResNet-50 v2 (pre-activation, keras.applications layout)"),
    "resnet101v2": _resnet_v2(_R101, "ResNet-101 v2 (pre-activation, keras.applications)"),
    "resnet152v2": _resnet_v2(_R152, "ResNet-152 v2 (pre-activation, keras.applications)"),
    "resnext50_32x4d": _resnet(_R50, "bottleneck", "ResNeXt-50 32x4d (torchvision)",
                               groups=32, base_width=4),
    "resnext101_32x8d": _resnet(_R101, "bottleneck", "ResNeXt-101 32x8d (torchvision)",
                                groups=32, base_width=8),
    "wide_resnet50_2": _resnet(_R50, "bottleneck", "Wide ResNet-50-2 (torchvision)",
                               base_width=128),
    "wide_resnet101_2": _resnet(_R101, "bottleneck", "Wide ResNet-101-2 (torchvision)",
                                base_width=128),
    **{f"resnet{d}": _cifar(d) for d in (20, 32, 44, 56, 110)},
    "resnet18d": _timm_d(_R18, "basic", "ResNet-18-D (timm: deep stem, average-pool shortcut)"),
    "resnet26d": _timm_d(_R26, "bottleneck", "ResNet-26-D (timm: deep stem, average-pool "
                                             "shortcut)"),
    "resnet34d": _timm_d(_R34, "basic", "ResNet-34-D (timm: deep stem, average-pool shortcut)"),
    "resnet50d": _timm_d(_R50, "bottleneck", "ResNet-50-D (timm: deep stem, average-pool "
                                             "shortcut)"),
    "resnet101d": _timm_d(_R101, "bottleneck", "ResNet-101-D (timm)"),
    "resnet152d": _timm_d(_R152, "bottleneck", "ResNet-152-D (timm)"),
    "seresnet18": _timm(_R18, "basic", "SE-ResNet-18 (timm: squeeze-and-excitation in every "
                                       "block)", attention="se"),
    "seresnet34": _timm(_R34, "basic", "SE-ResNet-34 (timm)", attention="se"),
    "seresnet50": _timm(_R50, "bottleneck", "SE-ResNet-50 (timm: squeeze-and-excitation in "
                                            "every block)", attention="se"),
    "seresnet101": _timm(_R101, "bottleneck", "SE-ResNet-101 (timm)", attention="se"),
    "seresnet152": _timm(_R152, "bottleneck", "SE-ResNet-152 (timm)", attention="se"),
    "ecaresnet50d": _timm_d(_R50, "bottleneck", "ECA-ResNet-50-D (timm: efficient channel "
                                                "attention on ResNet-D)", attention="eca"),
    "ecaresnet101d": _timm_d(_R101, "bottleneck", "ECA-ResNet-101-D (timm)", attention="eca"),
    "drn_a_50": ModelSpec(
        family="drn_a", depths=_R50, block="bottleneck", strides=(1, 2, 1, 1),
        dilations=(1, 1, 2, 4), first_dilation="one", output_strides=(8,),
        description="DRN-A-50 (ResNet-50 with stages 4-5 dilated, output stride 8)"),
    "drn_c_26": _drn("drn_c", _DRN_SHALLOW, "basic", "DRN-C-26 (fyu/drn)"),
    "drn_c_42": _drn("drn_c", _DRN_MID, "basic", "DRN-C-42 (fyu/drn)"),
    "drn_c_58": _drn("drn_c", _DRN_MID, "bottleneck", "DRN-C-58 (fyu/drn)"),
    "drn_d_22": _drn("drn_d", _DRN_SHALLOW, "basic", "DRN-D-22 (fyu/drn)"),
    "drn_d_38": _drn("drn_d", _DRN_MID, "basic", "DRN-D-38 (fyu/drn)"),
    "drn_d_54": _drn("drn_d", _DRN_MID, "bottleneck", "DRN-D-54 (fyu/drn)"),
    "drn_d_105": _drn("drn_d", (1, 1, 3, 4, 23, 3, 1, 1), "bottleneck",
                      "DRN-D-105 (fyu/drn)"),
}



@dataclass(frozen=True)
class Facts:
    """The pinned numbers of a registered network, as built by ``build_model(name)``.

    Counted at 1000 classes and 224x224 images; the CIFAR ResNets (family
    "cifar") at 10 classes and 32x32.

    Attributes:
        params: Keras ``count_params()``, BatchNorm moving statistics included.
        trainable_params: trainable parameters; for the torchvision, timm and
            fyu/drn rows the PyTorch reference's parameter count.
        macs: multiply-adds of one image (:func:`resnet_keras.count_macs`).
        image_size: the side of the square images the numbers are counted at.
        classes: the classes of the top layer they are counted with.
    """

    params: int
    trainable_params: int
    macs: int
    image_size: int = 224
    classes: int = 1000


# Beside SPECS, row for row; tests, the README's zoo table and
# ``resnet-keras info`` read them here.
_CIFAR_INPUT = (32, 10)  # (image_size, classes) of the CIFAR ResNets' numbers
FACTS = {
    "resnet18":         Facts(11_699_112, 11_689_512, 1_814_073_344),
    "resnet34":         Facts(21_814_696, 21_797_672, 3_663_761_408),
    "resnet50":         Facts(25_610_152, 25_557_032, 4_089_184_256),
    "resnet101":        Facts(44_654_504, 44_549_160, 7_801_405_440),
    "resnet152":        Facts(60_344_232, 60_192_808, 11_513_626_624),
    "resnet50_v1":      Facts(25_636_712, 25_583_592, 3_857_973_248),
    "resnet101_v1":     Facts(44_707_176, 44_601_832, 7_570_194_432),
    "resnet152_v1":     Facts(60_419_944, 60_268_520, 11_282_415_616),
    "resnet50v2":       Facts(25_613_800, 25_568_360, 3_482_255_360),
    "resnet101v2":      Facts(44_675_560, 44_577_896, 7_194_476_544),
    "resnet152v2":      Facts(60_380_648, 60_236_904, 10_906_697_728),
    "resnext50_32x4d":  Facts(25_097_128, 25_028_904, 4_230_479_872),
    "resnext101_32x8d": Facts(88_994_216, 88_791_336, 16_414_015_488),
    "wide_resnet50_2":  Facts(68_951_464, 68_883_240, 11_398_021_120),
    "wide_resnet101_2": Facts(127_024_552, 126_886_696, 22_753_050_624),
    "resnet20":         Facts(271_098, 269_722, 40_551_040, *_CIFAR_INPUT),
    "resnet32":         Facts(466_426, 464_154, 68_862_592, *_CIFAR_INPUT),
    "resnet44":         Facts(661_754, 658_586, 97_174_144, *_CIFAR_INPUT),
    "resnet56":         Facts(857_082, 853_018, 125_485_696, *_CIFAR_INPUT),
    "resnet110":        Facts(1_736_058, 1_727_962, 252_887_680, *_CIFAR_INPUT),
    "resnet18d":        Facts(11_718_472, 11_708_744, 2_053_713_920),
    "resnet26d":        Facts(16_045_384, 16_014_408, 2_581_897_216),
    "resnet34d":        Facts(21_834_056, 21_816_904, 3_903_401_984),
    "resnet50d":        Facts(25_629_512, 25_576_264, 4_328_824_832),
    "resnet101d":       Facts(44_673_864, 44_568_392, 8_041_046_016),
    "resnet152d":       Facts(60_363_592, 60_212_040, 11_753_267_200),
    "seresnet18":       Facts(11_789_224, 11_779_624, 1_814_161_408),
    "seresnet34":       Facts(21_977_440, 21_960_416, 3_663_920_128),
    "seresnet50":       Facts(28_141_144, 28_088_024, 4_091_699_200),
    "seresnet101":      Facts(49_432_216, 49_326_872, 7_806_148_608),
    "seresnet152":      Facts(66_973_272, 66_821_848, 11_520_204_800),
    "ecaresnet50d":     Facts(25_629_598, 25_576_350, 4_328_912_640),
    "ecaresnet101d":    Facts(44_674_035, 44_568_563, 8_041_220_864),
    "drn_a_50":         Facts(25_610_152, 25_557_032, 19_079_364_608),
    "drn_c_26":         Facts(21_140_568, 21_126_584, 16_971_239_424),
    "drn_c_42":         Facts(31_256_152, 31_234_744, 25_063_624_704),
    "drn_c_58":         Facts(40_599_384, 40_542_008, 32_423_841_792),
    "drn_d_22":         Facts(16_405_528, 16_393_752, 13_034_229_760),
    "drn_d_38":         Facts(26_521_112, 26_501_912, 21_126_615_040),
    "drn_d_54":         Facts(35_864_344, 35_809_176, 28_486_832_128),
    "drn_d_105":        Facts(54_908_696, 54_801_304, 43_335_716_864),
}


def list_models():
    """Sorted names of every registered model."""
    return sorted(SPECS)


def get_facts(name):
    """The pinned :class:`Facts` of ``name``; ValueError naming the choices if unknown."""
    get_spec(name)  # ValueError for an unknown name
    return FACTS[name]


def get_spec(name):
    """The registered spec for ``name``; ValueError naming the choices if unknown."""
    if not isinstance(name, str) or name not in SPECS:
        raise ValueError(f"Unknown model {name!r}. Available: {', '.join(list_models())}")
    return SPECS[name]


def resolve_spec(name, output_stride=None, **overrides):
    """The spec for ``name`` with ``overrides`` applied, validated.

    ``overrides`` may set any of OVERRIDABLE (stage depths, widths, block,
    bottleneck base width, groups, expansion, stem, shortcut, attention and its
    parameters, drop_path_rate, zero_init_last). A ``depths``/``widths`` given
    as a list is accepted. A new stem rescales the ``output_stride`` choices
    by its stride.
    """
    spec = get_spec(name)
    unknown = sorted(set(overrides) - set(OVERRIDABLE))
    if unknown:
        raise ValueError(
            f"Unknown argument {unknown[0]!r} for {name}; spec overrides: "
            f"{', '.join(OVERRIDABLE)}")
    changes = {k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items()}
    if "block" in changes and "expansion" not in changes:
        changes["expansion"] = None  # re-derive from the new block
    if output_stride is not None:
        changes["output_stride"] = output_stride
    new_stem = changes.get("stem", spec.stem)
    if new_stem in STEM_STRIDES and new_stem != spec.stem:
        # The output-stride choices follow the stem: a stride-1 stem on an
        # ImageNet ResNet gives 2, 4, 8 instead of 8, 16, 32.
        old, new = spec.stem_stride, STEM_STRIDES[new_stem]
        changes["output_strides"] = tuple(s * new // old for s in spec.output_strides)
    try:
        spec = dataclasses.replace(spec, **changes) if changes else spec
    except TypeError as err:  # e.g. depths=3 instead of a tuple
        raise ValueError(f"Invalid spec override for {name}: {err}") from None
    for field in ("depths", "widths"):
        if not isinstance(getattr(spec, field), tuple):
            raise ValueError(f"{field}={getattr(spec, field)!r} for {name}: "
                             "expected a tuple of positive integers")
    return spec.validate(name)
