"""PyTorch parameter names (torchvision, timm, fyu/drn) <-> the Keras layers.

:func:`torch_key_map` derives, from a zoo model's layer names, the PyTorch
state-dict key of every weight with its accepted shapes and conversion;
:func:`load_torch_state_dict` loads a state dict through it, all or nothing.
No torch is needed.
"""
import re

import numpy as np
from keras import layers as keras_layers

from resnet_keras.layers import DepthwiseConvTranspose2D
from resnet_keras.weight_checks import (CLASSIFIER_LAYERS, assign_all, cast_for,
                                        raise_if_mismatched, raise_if_unusable, real_array)

# Classifier layers: Keras layer name -> torch module name.
HEADS = dict(zip(CLASSIFIER_LAYERS, ("fc", "seg", "up")))

_ATTENTION_LEAVES = {"se_reduce": "se.fc1", "se_expand": "se.fc2", "eca_conv": "se.conv"}


def _stage_module(name, drn_d, avg_down=False):
    """Torch module path of a trunk layer, e.g. conv3_block2_1_bn -> layer2.1.bn1.

    ``avg_down``: the shortcut is timm's ``downsample = (pool, conv, bn)``,
    so its conv and BN are ``downsample.1`` / ``downsample.2``.
    """
    if name in ("conv1_conv", "conv1_bn"):
        index = int(name.endswith("_bn"))
        return f"layer0.{index}" if drn_d else ("conv1", "bn1")[index]
    m = re.fullmatch(r"conv1_(\d)_(conv|bn)", name)  # timm's deep stem
    if m:
        conv, kind = m.groups()
        return f"conv1.{3 * (int(conv) - 1) + int(kind == 'bn')}"
    m = re.fullmatch(r"(conv|level)(\d+)_block(\d+)_(\d)_(conv|bn)", name)
    if m:
        prefix, stage, block, conv, kind = m.groups()
        stage = int(stage) - (1 if prefix == "conv" else 0)
        inner = (f"downsample.{int(kind == 'bn') + int(avg_down)}" if conv == "0"
                 else f"{kind}{conv}")
        return f"layer{stage}.{int(block) - 1}.{inner}"
    m = re.fullmatch(r"(conv|level)(\d+)_block(\d+)_(se_reduce|se_expand|eca_conv)", name)
    if m:
        prefix, stage, block, leaf = m.groups()
        stage = int(stage) - (1 if prefix == "conv" else 0)
        return f"layer{stage}.{int(block) - 1}.{_ATTENTION_LEAVES[leaf]}"
    m = re.fullmatch(r"level(\d+)_conv(\d+)_(conv|bn)", name)
    if m:
        level, conv, kind = m.groups()
        return f"layer{level}.{3 * (int(conv) - 1) + int(kind == 'bn')}"
    return None


def _layout(model, base):
    """``(drn_d, avg_down, children)``: DRN-D puts the stem in ``layer0``;
    ``avg_down``: the shortcuts average-pool (ResNet-D, a ``_0_pool`` layer);
    ``children`` lists fyu/drn's ``base`` modules (the classification net's
    children in order, pooling and classifier left out) when ``base``, else
    None."""
    names = [layer.name for layer in model.layers]
    drn_d = any(re.fullmatch(r"level\d+_conv\d+_conv", n) for n in names)
    avg_down = any(re.fullmatch(r"(conv|level)\d+_block\d+_0_pool", n) for n in names)
    if not base:
        return drn_d, avg_down, None
    modules = {_stage_module(n, drn_d, avg_down) for n in names} - {None}
    stages = sorted({m.split(".")[0] for m in modules if re.match(r"layer[1-9]", m)},
                    key=lambda top: int(top[5:]))
    stem = ["layer0"] if drn_d else (
        ["conv1", "bn1", "relu"] + (["maxpool"] if "pool1_pool" in names else []))
    return drn_d, avg_down, stem + stages


def _torch_module(name, layout):
    """Torch module path of the Keras layer ``name`` (None if it has none)."""
    drn_d, avg_down, children = layout
    if name in HEADS:
        return HEADS[name]
    module = _stage_module(name, drn_d, avg_down)
    if module is None or children is None:
        return module
    top, _, rest = module.partition(".")
    return f"base.{children.index(top)}" + (f".{rest}" if rest else "")


def _ignored_prefixes(model, layout):
    """Torch key prefixes the model has no use for: classifiers it lacks, and
    the projection fyu/drn builds for a DRN-C degridding level (no residual
    addition) but never uses."""
    names = {layer.name for layer in model.layers}
    prefixes = [f"{torch}." for keras_name, torch in HEADS.items() if keras_name not in names]
    for name in names:
        m = re.fullmatch(r"(level\d+_block\d+)_1_conv", name)
        if m and f"{m.group(1)}_add" not in names:
            dead = _torch_module(f"{m.group(1)}_0_conv", layout)
            prefixes.append(dead[:-1])  # "...downsample."
    return tuple(prefixes)


def _param_specs(layer):
    """``[(variable, torch leaf, torch shapes accepted, to_keras)]`` for one layer."""
    def conv(a):
        return np.transpose(a, (2, 3, 1, 0))

    if isinstance(layer, keras_layers.BatchNormalization):
        return [(v, leaf, [tuple(v.shape)], np.asarray) for v, leaf in (
            (layer.gamma, "weight"), (layer.beta, "bias"),
            (layer.moving_mean, "running_mean"), (layer.moving_variance, "running_var"))
            if v is not None]
    if isinstance(layer, keras_layers.Dense):
        n_in, n_out = layer.kernel.shape
        specs = [(layer.kernel, "weight", [(n_out, n_in), (n_out, n_in, 1, 1)],
                  lambda a: a.reshape(a.shape[0], -1).T)]
    elif isinstance(layer, DepthwiseConvTranspose2D):
        kh, kw, c, _ = layer.kernel.shape
        return [(layer.kernel, "weight", [(c, 1, kh, kw)],
                 lambda a: np.transpose(a, (2, 3, 0, 1)))]
    elif isinstance(layer, keras_layers.Conv2D):
        kh, kw, c_in, c_out = layer.kernel.shape
        specs = [(layer.kernel, "weight", [(c_out, c_in, kh, kw)], conv)]
    elif isinstance(layer, keras_layers.Conv1D):  # ECA's channel conv
        k, c_in, c_out = layer.kernel.shape
        specs = [(layer.kernel, "weight", [(c_out, c_in, k)],
                  lambda a: np.transpose(a, (2, 1, 0)))]
    else:
        raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) has no "
                         "PyTorch counterpart")
    if layer.bias is not None:
        specs.append((layer.bias, "bias", [tuple(layer.bias.shape)], np.asarray))
    return specs


def torch_key_map(model, base=False):
    """``{torch key: (variable, torch shapes accepted, to_keras)}`` for ``model``.

    Derived from the layer names: ``conv{s}_block{b}_{i}_{conv|bn}`` ->
    ``layer{s-1}.{b-1}.{conv|bn}{i}`` (``i = 0``: ``downsample.0/1``);
    DRN ``level{l}_block{b}_...`` -> ``layer{l}.{b-1}...``; DRN-D plain
    levels ``level{l}_conv{c}_{conv|bn}`` -> ``layer{l}.{3(c-1)}`` /
    ``.{3(c-1)+1}``; the stem ``conv1_conv``/``conv1_bn`` -> ``conv1``/``bn1``
    (DRN-D: ``layer0.0``/``layer0.1``); ``predictions`` -> ``fc``; ``seg`` and
    ``up`` keep their names. timm's refinements: the deep stem
    ``conv1_{i}_{conv|bn}`` -> ``conv1.{3(i-1)}`` / ``conv1.{3(i-1)+1}`` (its
    last BN is ``conv1_bn`` -> ``bn1``); with average-pool shortcuts
    ``_0_conv``/``_0_bn`` -> ``downsample.1``/``.2``; attention
    ``_se_reduce``/``_se_expand``/``_eca_conv`` -> ``se.fc1``/``se.fc2``/``se.conv``.
    With ``base=True`` trunk keys take fyu/drn's
    segmentation form ``base.{index of the module among the classification
    net's children}...``.
    """
    layout = _layout(model, base)
    key_map = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        module = _torch_module(layer.name, layout)
        if module is None:
            raise ValueError(f"layer {layer.name!r} of {model.name} has no PyTorch "
                             "counterpart (torchvision, timm and fyu/drn layouts only)")
        for variable, leaf, shapes, to_keras in _param_specs(layer):
            key_map[f"{module}.{leaf}"] = (variable, shapes, to_keras)
    return key_map


def _strip_prefix(state_dict, prefix="module."):
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def load_torch_state_dict(model, state_dict):
    """Load a PyTorch state dict (torchvision / fyu/drn names) into ``model``.

    Args:
        model: a zoo model, backbone or segmentation model.
        state_dict: mapping from PyTorch parameter names to numpy arrays (or
            torch tensors). A ``module.`` prefix (DataParallel) is removed;
            ``num_batches_tracked`` and the unused DRN-C degridding
            projection are ignored. Keys ``base.N...`` (fyu/drn DRNSeg) map
            the trunk by the classification net's child index.

    Conversions: conv OIHW -> HWIO; Linear (out, in) or fyu/drn's 1x1 conv
    classifier (out, in, 1, 1) -> Dense (in, out); BN weight, bias,
    running_mean, running_var -> gamma, beta, moving_mean, moving_variance;
    the grouped transposed conv ``up`` (C, 1, k, k) -> (k, k, C, 1).

    The classifier (``fc``; ``seg``, ``up``) is optional: absent, that layer
    keeps its weights; present for a layer the model lacks, it is ignored.

    Returns:
        ``model``, with every weight assigned.

    Raises:
        ValueError: one message listing the missing, unexpected and
            mis-shaped keys, or naming an array that is not finite real
            numbers (with its dtype); the model is unchanged.
    """
    state_dict = _strip_prefix({str(k): v for k, v in state_dict.items()})
    base = any(k.startswith("base.") for k in state_dict)
    key_map = torch_key_map(model, base=base)
    ignored = _ignored_prefixes(model, _layout(model, base))
    unexpected = [k for k in state_dict if k not in key_map
                  and not k.endswith("num_batches_tracked") and not k.startswith(ignored)]
    pairs, misshaped, unusable = _convert(key_map, state_dict)
    hint = _CLASSES_HINT if any(_head_of(k) for k in misshaped) else ""
    raise_if_mismatched("state dict", model.name, "keys", _missing(key_map, state_dict),
                         unexpected, [f"{k} {got} for {want}" for k, (got, want) in
                                      misshaped.items()], hint)
    raise_if_unusable("state dict", model.name, unusable)
    assign_all(pairs)
    return model


_CLASSES_HINT = (" (a classifier for another number of classes: build the model with "
                 "the checkpoint's classes, or drop its classifier keys to keep the "
                 "model's own)")


def _head_of(key):
    """The classifier module (fc, seg, up) a torch key belongs to, or None."""
    top = key.split(".", 1)[0]
    return top if top in HEADS.values() else None


def _missing(key_map, state_dict):
    """Keys the model needs; a classifier with none of its keys given is optional."""
    given_heads = {_head_of(k) for k in state_dict} - {None}
    return [k for k in key_map if k not in state_dict
            and (_head_of(k) is None or _head_of(k) in given_heads)]


def _convert(key_map, state_dict):
    """``([(variable, checked Keras value)], {key: (torch shape, expected shape)},
    [unusable array messages])``."""
    pairs, misshaped, unusable = [], {}, []
    for key, (variable, shapes, to_keras) in key_map.items():
        if key not in state_dict:
            continue
        shape = tuple(getattr(state_dict[key], "shape", np.shape(state_dict[key])))
        if shape not in shapes:
            misshaped[key] = (shape, shapes[0])
            continue
        try:
            value = real_array(key, state_dict[key])
            pairs.append((variable, cast_for(key, to_keras(value), variable)))
        except ValueError as err:
            unusable.append(str(err))
    return pairs, misshaped, unusable
