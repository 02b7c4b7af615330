"""The choices of each :class:`resnet_keras.specs.ModelSpec` field, and the check
of a spec against them.

Stems (``STEM_STRIDES``: stem -> its total stride): "imagenet" (7x7/2 conv
+ 3x3/2 max-pool), "imagenet_v2" (the same without BN/ReLU, for
pre-activation nets), "deep" (three 3x3 convs of ``stem_width / 2``,
``stem_width / 2`` and ``stem_width`` channels, the first with stride 2,
then the 3x3/2 max-pool: ResNet-C/D, timm's ``stem_type='deep'``), "cifar"
(3x3/1 conv, no pooling) and "drn" (7x7/1 conv).

Shortcuts: "projection" (1x1 conv + BN), "pad" (parameter-free subsample
and zero-pad channels, He et al.'s CIFAR option A) or "avgpool" (ResNet-D,
timm's ``avg_down``: a 2x2 average pool with the block's stride, then 1x1
conv + BN; in a dilated stage a 2x2 stride-1 pool).

Attention, on the residual branch after its last BN (timm's SEModule /
EcaModule placement): None; "se" (squeeze-and-excitation: global average
pool, 1x1 conv with bias to ``channels / se_reduction`` rounded to a
multiple of 8 (at least 8), ReLU, 1x1 conv with bias, sigmoid gate); "eca"
(efficient channel attention: a 1D conv across the pooled channels,
sigmoid gate).
"""

FAMILIES = ("resnet", "resnet_v2", "cifar", "drn_a", "drn_c", "drn_d")
BLOCKS = ("basic", "bottleneck")
# Stem -> total stride of the stem.
STEM_STRIDES = {"imagenet": 4, "imagenet_v2": 4, "deep": 4, "cifar": 1, "drn": 1}
# Stems each family can be built with (the first is the family's own).
FAMILY_STEMS = {
    "resnet": ("imagenet", "deep", "cifar"), "drn_a": ("imagenet", "deep", "cifar"),
    "resnet_v2": ("imagenet_v2",), "cifar": ("cifar",), "drn_c": ("drn",), "drn_d": ("drn",),
}
# Stage kinds: "residual" uses the spec's block; "basic" is always a basic
# residual block (DRN-C levels 1-2); "degrid" is a basic block without the
# residual addition (DRN-C levels 7-8); "conv" is a plain conv-BN-ReLU stack
# (DRN-D levels 1, 2, 7, 8).
STAGE_KINDS = ("residual", "basic", "degrid", "conv")
SHORTCUTS = ("projection", "pad", "avgpool")
ATTENTIONS = (None, "se", "eca")
FIRST_DILATIONS = ("previous", "same", "one")


def check_spec(spec, name="model"):
    """Raise ValueError (one line naming the bad value) if SPEC is inconsistent."""
    _choice("family", spec.family, FAMILIES, name)
    _choice("block", spec.block, BLOCKS, name)
    _choice("stem", spec.stem, FAMILY_STEMS[spec.family], name)
    _choice("shortcut", spec.shortcut, SHORTCUTS, name)
    _choice("attention", spec.attention, ATTENTIONS, name)
    _choice("first_dilation", spec.first_dilation, FIRST_DILATIONS, name)
    for kind in spec.kinds:
        _choice("stage kind", kind, STAGE_KINDS, name)
    n = len(spec.depths)
    for field in ("widths", "strides", "dilations", "kinds"):
        if len(getattr(spec, field)) != n:
            raise ValueError(
                f"{field}={getattr(spec, field)!r} has {len(getattr(spec, field))} "
                f"entries but {name} has {n} stages (depths={spec.depths!r})")
    for field in ("depths", "widths", "strides", "dilations"):
        for value in getattr(spec, field):
            if not is_int(value) or value < 1:
                raise ValueError(
                    f"{field}={getattr(spec, field)!r} for {name}: "
                    f"every entry must be a positive integer")
    for field in ("base_width", "groups", "expansion", "stem_width"):
        value = getattr(spec, field)
        if not is_int(value) or value < 1:
            raise ValueError(f"{field}={value!r} for {name}: must be a positive integer")
    if spec.block == "basic" and (spec.groups != 1 or spec.base_width != 64):
        raise ValueError(
            f"groups={spec.groups}, base_width={spec.base_width} for {name}: "
            "basic blocks support only groups=1 and base_width=64; "
            "use block='bottleneck' for ResNeXt or wide bottlenecks")
    if spec.block == "bottleneck":
        for width in spec.widths:
            inner = spec.bottleneck_width(width)
            if inner < spec.groups:
                raise ValueError(
                    f"base_width={spec.base_width} with groups={spec.groups} for "
                    f"{name} gives a bottleneck width of {inner} at stage width "
                    f"{width}: it must be at least the number of groups")
    if spec.preact and spec.shortcut != "projection":
        raise ValueError(f"shortcut={spec.shortcut!r} for {name}: pre-activation "
                         "networks use 'projection'")
    _check_regularisers(spec, name)
    if spec.output_stride is not None and spec.output_stride not in spec.output_strides:
        raise ValueError(
            f"output_stride={spec.output_stride!r} is not valid for {name}; "
            f"choices: {', '.join(str(s) for s in spec.output_strides)}")
    return spec


def _check_regularisers(spec, name):
    if not is_int(spec.se_reduction) or spec.se_reduction < 1:
        raise ValueError(f"se_reduction={spec.se_reduction!r} for {name}: must be a "
                         "positive integer (16 in SE-ResNets)")
    k = spec.eca_kernel_size
    if k is not None and (not is_int(k) or k < 1 or k % 2 == 0):
        raise ValueError(f"eca_kernel_size={k!r} for {name}: must be None (adaptive) "
                         "or an odd positive integer")
    rate = spec.drop_path_rate
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        raise ValueError(f"drop_path_rate={rate!r} for {name}: must be a number in "
                         "[0, 1)")
    if not isinstance(spec.zero_init_last, bool):
        raise ValueError(f"zero_init_last={spec.zero_init_last!r} for {name}: "
                         "expected True or False")
    if spec.preact and (spec.attention or spec.zero_init_last):
        field = (f"attention={spec.attention!r}" if spec.attention
                 else "zero_init_last=True")
        raise ValueError(f"{field} is not available for {name}: its pre-activation "
                         "blocks end in a conv, not a BatchNorm")


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _choice(field, value, choices, name):
    if value not in choices:
        raise ValueError(f"{field}={value!r} is not valid for {name}; "
                         f"choices: {', '.join(map(str, choices))}")
