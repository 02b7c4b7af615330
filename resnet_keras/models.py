"""Keras functional builders for every registered spec.

``build_model(name, ...)`` takes the keras.applications arguments
(``include_top``, ``weights``, ``input_tensor``, ``input_shape``, ``pooling``,
``classes``, ``classifier_activation``, ``name``) plus ``output_stride`` and
the spec overrides of :data:`resnet_keras.specs.OVERRIDABLE`.

Every builder (the classifier, the backbone, the segmentation model) is put
together from the same three steps, public for heads of one's own:

    check_head(include_top, pooling, classes, classifier_activation, name)
    inputs, model_inputs = make_input(input_tensor, input_shape, name)
    features, levels = assemble(spec, inputs)

``assemble`` runs the stem and the stages of a resolved spec
(:func:`resnet_keras.specs.resolve_spec`) on ``inputs`` and returns the final
feature map and the named feature levels; the head goes on ``features`` and
``keras.Model(model_inputs, outputs)`` closes the graph.
"""
import math

import keras
from keras import layers

from resnet_keras import specs as specs_lib
from resnet_keras import weights as weights_lib
from resnet_keras.blocks import Ops, conv_stage, drop_path_rates, residual_stage, stem
from resnet_keras.conventions import DEFAULT_CONVENTION, check_convention

POOLINGS = (None, "avg", "max")


def _check_input_shape(input_shape, model_name):
    if input_shape is None:
        return (None, None, 3)
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
    if shape is None or len(shape) != 3:
        raise ValueError(
            f"input_shape={input_shape!r} for {model_name}: expected (height, width, "
            "channels), e.g. (224, 224, 3) or (None, None, 3)")
    for side in shape[:2]:
        if side is not None and (not specs_lib.is_int(side) or side < 1):
            raise ValueError(f"input_shape={input_shape!r} for {model_name}: height "
                             "and width must be positive integers or None")
    channels = shape[2]
    if not specs_lib.is_int(channels) or channels < 1:
        raise ValueError(f"input_shape={input_shape!r} for {model_name}: channels "
                         f"must be a positive integer (3 for RGB), got {channels!r}")
    return shape


def make_input(input_tensor, input_shape, model_name):
    """``(tensor, model inputs)``: the tensor to build on and what ``keras.Model`` takes.

    A new ``keras.Input`` of ``input_shape`` (default ``(None, None, 3)``),
    or ``input_tensor`` (a Keras tensor, or a backend tensor wrapped in a
    ``keras.Input``). ValueError naming the bad ``input_shape``.
    """
    if input_tensor is None:
        inputs = keras.Input(shape=_check_input_shape(input_shape, model_name))
        return inputs, inputs
    if input_shape is None:
        input_shape = tuple(input_tensor.shape[1:])
    input_shape = _check_input_shape(input_shape, model_name)
    if keras.backend.is_keras_tensor(input_tensor):
        tensor = input_tensor
    else:
        tensor = keras.Input(tensor=input_tensor, shape=input_shape)
    return tensor, keras.utils.get_source_inputs(tensor)


def check_head(include_top, pooling, classes, classifier_activation, model_name):
    """ValueError (one line naming the bad value) for invalid head arguments."""
    if not isinstance(include_top, bool):
        raise ValueError(f"include_top={include_top!r} for {model_name}: expected True or False")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r} is not valid for {model_name}; "
                         "choices: None, 'avg', 'max'")
    if not specs_lib.is_int(classes) or classes < 1:
        raise ValueError(f"classes={classes!r} for {model_name}: must be a positive integer")
    if classifier_activation is not None:
        try:
            keras.activations.get(classifier_activation)
        except (ValueError, TypeError):
            raise ValueError(
                f"classifier_activation={classifier_activation!r} for {model_name} is not "
                "a Keras activation (e.g. 'softmax', 'sigmoid', None)") from None


def assemble(spec, inputs):
    """Run the stem and stages of ``spec`` on ``inputs``.

    Returns ``(final features, {level name: tensor})``; ``spec`` is a
    resolved, validated :class:`resnet_keras.specs.ModelSpec`.

    ResNet-style levels are named by stage, "P{k}" with 2**k the stage's
    stride at output stride 32 (P2..P5 after an ImageNet stem); DRN-C/D
    levels are "level1".."level8".
    """
    ops = Ops(spec)
    levels = {}
    drn_levels = spec.family in ("drn_c", "drn_d")
    base = int(math.log2(spec.stem_stride))
    x = stem(ops, inputs, spec)
    drop_rates = drop_path_rates(spec)
    for i, (stride, dilation, first) in enumerate(spec.stage_plan()):
        depth, kind = spec.depths[i], spec.kinds[i]
        name = f"level{i + 1}" if drn_levels else f"conv{i + 2}"
        key = name if drn_levels else f"P{base + i}"
        if kind == "conv":
            x = conv_stage(ops, x, spec.widths[i], depth, stride, dilation, name)
        else:
            x = residual_stage(ops, x, i, depth, stride, dilation, first, name,
                               on_level=lambda t, k=key: levels.__setitem__(k, t),
                               drop_rates=drop_rates[i])
        # A v2 stage that strides in its last block has reported the level
        # at its own resolution already.
        levels.setdefault(key, x)
    if spec.preact:
        x = ops.norm_relu(x, "post")
        levels[key] = x
    return x, levels


def _head(x, include_top, pooling, classes, classifier_activation):
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        # Logits stay float32 under a mixed-precision policy.
        mixed = keras.config.dtype_policy().name.startswith("mixed")
        return layers.Dense(classes, activation=classifier_activation,
                            dtype="float32" if mixed else None, name="predictions")(x)
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


def build_model(model_name, /, *, include_top=True, weights=None, input_tensor=None,
                input_shape=None, pooling=None, classes=1000,
                classifier_activation="softmax", name=None, output_stride=None,
                preprocessing=None, **overrides):
    """Build a registered model (see ``list_models()``).

    Args:
        model_name: a registered name, e.g. "resnet50" or "drn_c_26".
        include_top: add global average pooling and the ``predictions`` layer.
        weights: None, "imagenet" (where a public source is known) or the
            path of a weights file: Keras ``.weights.h5``/``.keras``/``.h5``,
            a PyTorch ``.pth`` from torchvision or fyu/drn (needs torch), or
            an ``.npz`` of a PyTorch state dict (no torch needed).
        input_tensor: optional Keras tensor to use as the model's input.
        input_shape: ``(height, width, channels)``; None sides accept any size.
            Default ``(None, None, 3)``.
        pooling: with ``include_top=False``: None (4D features), "avg" or "max".
        classes: number of classes of the top layer.
        classifier_activation: activation of the top layer (None for logits).
        name: the Keras model's name (default: ``model_name``).
        output_stride: total downsampling; smaller values dilate the last
            stages instead of striding them (see the spec's ``output_strides``).
        preprocessing: the input convention, "torch", "caffe" or "tf" (see
            :mod:`resnet_keras.conventions`); default: the weights' own
            (:func:`resnet_keras.weights.weights_convention`), "torch" without
            weights. Kept as ``model.preprocessing``, which
            ``preprocess_input(images, model)`` and the export apply.
        **overrides: spec fields to change: depths, widths, block,
            base_width, groups, expansion, stem ("imagenet", "deep",
            "cifar" on the ImageNet ResNets), shortcut ("projection",
            "avgpool", "pad"), attention (None, "se", "eca"), se_reduction,
            eca_kernel_size, drop_path_rate, zero_init_last (see
            :class:`resnet_keras.specs.ModelSpec`).

    Returns:
        A ``keras.Model``.
    """
    spec = specs_lib.resolve_spec(model_name, output_stride=output_stride, **overrides)
    check_head(include_top, pooling, classes, classifier_activation, model_name)
    weights_lib.check_weights_arg(weights, model_name, include_top, classes)
    convention = resolve_convention(preprocessing, weights, model_name)
    inputs, model_inputs = make_input(input_tensor, input_shape, model_name)
    x, _ = assemble(spec, inputs)
    outputs = _head(x, include_top, pooling, classes, classifier_activation)
    model = keras.Model(model_inputs, outputs, name=name or model_name)
    return attach_weights(model, weights, model_name, convention)


def build_backbone(model_name, /, *, input_tensor=None, input_shape=None, name=None,
                   output_stride=None, weights=None, preprocessing=None, **overrides):
    """A model whose outputs are a dict of named feature levels.

    ResNets (and DRN-A) give "P2".."P5", one per stage, Pk being the stage's
    last feature map at stride 2**k when the output stride is 32 (CIFAR
    ResNets: "P0".."P2"); pre-activation (v2) stages report the input of their
    strided last block, and P5 is normalised. DRN-C/D give "level1".."level8".
    Dilated models (DRN-A, a smaller ``output_stride``) keep the names.
    ``weights`` loads classification weights into the backbone's layers;
    ``preprocessing`` is as in :func:`build_model`.
    """
    spec = specs_lib.resolve_spec(model_name, output_stride=output_stride, **overrides)
    weights_lib.check_weights_arg(weights, model_name, False, None)
    convention = resolve_convention(preprocessing, weights, model_name)
    inputs, model_inputs = make_input(input_tensor, input_shape, model_name)
    _, levels = assemble(spec, inputs)
    model = keras.Model(model_inputs, levels, name=name or f"{model_name}_backbone")
    return attach_weights(model, weights, model_name, convention)


def resolve_convention(preprocessing, weights, model_name):
    """The input convention of a model built with WEIGHTS: PREPROCESSING if
    given (checked), else the weights' own, else the default ("torch")."""
    if preprocessing is not None:
        return check_convention(preprocessing)
    return weights_lib.weights_convention(weights, model_name) or DEFAULT_CONVENTION


def attach_weights(model, weights, model_name, convention):
    """MODEL with WEIGHTS loaded (if any) and ``model.preprocessing`` set to CONVENTION."""
    if weights is not None:
        weights_lib.load_weights(model, weights, model_name)
    model.preprocessing = convention
    return model


def count_macs(model, input_shape=None):
    """Multiply-adds of one forward pass of one image (convs and dense layers;
    pooling, BN, activations and the attention gates' products are not counted).

    Args:
        model: a functional model, e.g. from ``build_model``.
        input_shape: ``(height, width, channels)`` to count at. Default: the
            model's own input shape, which then must be fixed, e.g. built
            with ``input_shape=(224, 224, 3)``.
    """
    if input_shape is None:
        input_shape = tuple(model.input_shape[1:])
        if None in input_shape:
            raise ValueError(f"count_macs needs a fixed input size; {model.name} has input "
                             f"shape {tuple(model.input_shape)}: build it with a fixed "
                             "input_shape or pass input_shape=(height, width, channels)")
    total = 0
    for layer, output in _output_shapes(model, tuple(input_shape)):
        if isinstance(layer, layers.Conv2D):
            kh, kw, cin_per_group, cout = layer.kernel.shape
            total += output[1] * output[2] * cout * kh * kw * cin_per_group
        elif isinstance(layer, layers.Conv1D):  # ECA's conv across channels
            k, cin_per_group, cout = layer.kernel.shape
            total += output[1] * cout * k * cin_per_group
        elif isinstance(layer, layers.Dense):
            total += math.prod(layer.kernel.shape)
    return int(total)


def _output_shapes(model, input_shape):
    """``(layer, output shape)`` of every layer for one image of ``input_shape``
    (symbolic shape inference through the graph; nothing is computed)."""
    specs = {id(model.inputs[0]): keras.KerasTensor((1,) + input_shape)}
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            continue
        inputs = keras.tree.map_structure(lambda t: specs[id(t)], layer.input)
        output = layer.compute_output_spec(inputs)
        specs[id(layer.output)] = output
        yield layer, output.shape
