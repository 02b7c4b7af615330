"""Fold BatchNormalization into the convolutions before it, for inference.

At inference a BatchNormalization is a per-channel affine map,
``y = (x - mean) * gamma / sqrt(var + eps) + beta``. When ``x`` is the output
of a convolution, the map goes into the convolution's own weights::

    scale  = gamma / sqrt(var + eps)                  (per output channel)
    kernel = kernel * scale
    bias   = beta + (bias - mean) * scale             (bias = 0 without one)

and the BatchNormalization layer disappears. :func:`fold_batch_norms`
returns a new functional model, float32, in which every BatchNormalization
that directly follows a ``Conv2D`` or ``DepthwiseConv2D`` is folded, when

- the convolution has no activation and its output feeds that BatchNormalization
  only (nothing else reads the un-normalised output, nor is it a model output),
- the BatchNormalization normalises the channels axis (the last), and
- both layers are called once in the model.

That is every BatchNormalization of the post-activation ResNets (v1, v1.5,
ResNeXt, Wide, CIFAR, ResNet-D, SE/ECA, DRN-A/C/D, DRNSeg). The
pre-activation BatchNormalizations of ResNet v2 (``*_preact_bn`` and
``post_bn``) follow an addition or a pooling, not a convolution, and stay as
they are; the ``*_1_bn`` and ``*_2_bn`` inside its blocks are folded.

Every other layer keeps its class, its config (the package's own layers
included) and its name, and the folded convolutions keep the convolution's
name; the model keeps its name and input convention (``model.preprocessing``).
The folded weights are computed in float64 and stored in float32, so the
folded model's outputs equal the original's up to float32 rounding. The
exports (:mod:`resnet_keras.export`, :mod:`resnet_keras.formats`,
:mod:`resnet_keras.segmentation_export`) serve such a copy.
"""
import copy

import keras
import numpy as np

from resnet_keras.conventions import convention_of

__all__ = ["fold_batch_norms", "foldable_pairs"]

_CONVS = ("Conv2D", "DepthwiseConv2D")
_NORM = "BatchNormalization"


def _tensors(value):
    """The serialised Keras tensors (``__keras_tensor__`` dicts) in a serialised call."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            return [value]
        return [tensor for item in value.values() for tensor in _tensors(item)]
    if isinstance(value, (list, tuple)):
        return [tensor for item in value for tensor in _tensors(item)]
    return []


def _sources(value):
    """The names of the layers whose outputs a serialised call reads, once per read."""
    return [tensor["config"]["keras_history"][0] for tensor in _tensors(value)]


def _map_outputs(outputs, fn):
    """A config's ``output_layers`` with FN applied to each ``[layer, node, tensor]``."""
    if isinstance(outputs, dict):
        return {key: _map_outputs(item, fn) for key, item in outputs.items()}
    if isinstance(outputs, (list, tuple)) and len(outputs) == 3 and isinstance(outputs[0], str):
        return fn(list(outputs))
    return [_map_outputs(item, fn) for item in outputs]


def _functional_config(model):
    """MODEL's functional config (layers with their inbound nodes), or None."""
    if not isinstance(model, keras.Model):
        return None
    try:
        config = model.get_config()
    except NotImplementedError:  # a subclassed model without get_config
        return None
    layers = config.get("layers") if isinstance(config, dict) else None
    if "input_layers" not in config or not isinstance(layers, list) or not all(
            isinstance(layer, dict) and "inbound_nodes" in layer for layer in layers):
        return None  # e.g. Sequential, whose config lists its layers without a graph
    return config


def _is_foldable_norm(layer):
    config = layer["config"]
    axis = config.get("axis", -1)
    axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
    return layer["class_name"] == _NORM and axis in (-1, 3) and len(layer["inbound_nodes"]) == 1


def _is_foldable_conv(layer):
    config = layer["config"]
    return (layer["class_name"] in _CONVS and len(layer["inbound_nodes"]) == 1
            and config.get("activation", "linear") in ("linear", None)
            and config.get("data_format", "channels_last") == "channels_last")


def _pairs(config):
    """``[(conv_name, bn_name)]`` of the foldable pairs of a functional CONFIG."""
    layers = {layer["name"]: layer for layer in config["layers"]}
    reads = [name for layer in config["layers"] for name in _sources(layer["inbound_nodes"])]
    _map_outputs(config["output_layers"], lambda ref: reads.append(ref[0]))
    pairs = []
    for layer in config["layers"]:
        sources = _sources(layer["inbound_nodes"])
        source = layers.get(sources[0]) if len(sources) == 1 else None
        if (_is_foldable_norm(layer) and source is not None and _is_foldable_conv(source)
                and reads.count(source["name"]) == 1):
            pairs.append((source["name"], layer["name"]))
    return pairs


def foldable_pairs(model):
    """``[(conv_name, bn_name)]``: the BatchNormalizations of MODEL that
    :func:`fold_batch_norms` folds, each with the convolution it goes into."""
    config = _functional_config(model)
    return _pairs(config) if config is not None else []


def _computes_in_float32(model):
    return all(layer.dtype_policy.compute_dtype == "float32" for layer in model.layers)


def _folded_config(config, pairs):
    """CONFIG without the BatchNormalizations of PAIRS, their convs with a
    bias, and every layer in float32."""
    config = copy.deepcopy(config)
    convs = {conv for conv, _ in pairs}
    renamed = {norm: [conv, 0, 0] for conv, norm in pairs}  # readers of a BN read its conv
    kept = []
    for layer in config["layers"]:
        if layer["name"] in renamed:
            continue
        if layer["name"] in convs:
            layer["config"]["use_bias"] = True
        if layer["class_name"] != "InputLayer" and "dtype" in layer["config"]:
            layer["config"]["dtype"] = "float32"
        for tensor in _tensors(layer["inbound_nodes"]):
            history = tensor["config"]["keras_history"]
            tensor["config"]["keras_history"] = list(renamed.get(history[0], history))
        kept.append(layer)
    config["layers"] = kept
    config["output_layers"] = _map_outputs(config["output_layers"],
                                           lambda ref: renamed.get(ref[0], ref))
    return config


def _folded_weights(conv, norm):
    """(kernel, bias) in float32 of the CONV layer with the BN layer NORM folded in."""
    kernel = np.asarray(conv.kernel, np.float64)
    # A depthwise kernel is (h, w, in, multiplier): output channel in * multiplier + m.
    depthwise = isinstance(conv, keras.layers.DepthwiseConv2D)
    per_channel = kernel.shape[-2:] if depthwise else kernel.shape[-1:]
    channels = int(np.prod(per_channel))
    bias = np.asarray(conv.bias, np.float64) if conv.use_bias else np.zeros(channels)
    gamma = np.asarray(norm.gamma, np.float64) if norm.scale else np.ones(channels)
    beta = np.asarray(norm.beta, np.float64) if norm.center else np.zeros(channels)
    mean = np.asarray(norm.moving_mean, np.float64)
    variance = np.asarray(norm.moving_variance, np.float64)
    scale = gamma / np.sqrt(variance + norm.epsilon)
    kernel = kernel * scale.reshape(per_channel)
    return kernel.astype(np.float32), (beta + (bias - mean) * scale).astype(np.float32)


def _float32_clone(model):
    """A float32 copy of a model that is not functional (e.g. ``Sequential``)."""
    def clone(layer):
        config = layer.get_config()
        if "dtype" in config:
            config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    clone_model = keras.models.clone_model(model, clone_function=clone)
    clone_model.set_weights(model.get_weights())
    return clone_model


def fold_batch_norms(model):
    """A float32 copy of MODEL with its BatchNormalizations folded into the
    convolutions before them (which ones: see the module docstring).

    MODEL itself when it computes in float32 and has nothing to fold, so a
    folded model folds to itself. A model that is not functional (e.g.
    ``Sequential``) is copied in float32 without folding. MODEL is not changed.
    """
    config = _functional_config(model)
    pairs = _pairs(config) if config is not None else []
    if not pairs and _computes_in_float32(model):
        return model
    if config is None:
        folded = _float32_clone(model)
    else:
        folded = keras.Model.from_config(_folded_config(config, pairs))
        norms = {conv: model.get_layer(norm) for conv, norm in pairs}
        for layer in folded.layers:
            source = model.get_layer(layer.name)
            if layer.name in norms:
                layer.set_weights(_folded_weights(source, norms[layer.name]))
            else:
                layer.set_weights(source.get_weights())
    folded.preprocessing = convention_of(model)
    return folded
