"""BatchNormalization folded into the convolutions (resnet_keras.folding).

Generated from the registry: one tiny build (one block a stage, narrow
stages) of every distinct row of ``specs.SPECS``, with random BN statistics,
must give the original's outputs within float32 rounding on real CIFAR-10
images once folded; and the SavedModel export serves the folded graph.
"""
import collections
import dataclasses
import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import resnet_keras
from resnet_keras import export, folding, preprocessing, specs
from resnet_keras.classifier_head import logits_function
from resnet_keras.conventions import apply_convention

SIZE = 64
TOLERANCE = 1e-5


def _representatives():
    """One registered name per distinct spec row (depths aside), first in the registry."""
    rows = {}
    for name, spec in specs.SPECS.items():
        rows.setdefault(dataclasses.replace(spec, depths=(1,) * len(spec.depths),
                                            description=""), name)
    return sorted(rows.values())


def _tiny(spec):
    """Spec overrides for a fast build: one block a stage, narrower stages."""
    return {"depths": (1,) * len(spec.depths),
            "widths": tuple(max(width // 4, 16) for width in spec.widths)}


def _randomise_bn(model, rng):
    """Distinct BN parameters and statistics, and non-zero conv biases."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.8, 1.2, layer.gamma.shape))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.05, layer.beta.shape))
            layer.moving_mean.assign(rng.normal(0, 0.05, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.8, 1.2, layer.moving_variance.shape))
        elif isinstance(layer, keras.layers.Conv2D) and layer.use_bias:
            layer.bias.assign(rng.normal(0, 0.05, layer.bias.shape))
    return model


def _norms(model):
    return [layer.name for layer in model.layers
            if isinstance(layer, keras.layers.BatchNormalization)]


def _assert_close_logits(folded, original):
    folded, original = np.asarray(folded), np.asarray(original)
    assert np.isfinite(original).all() and original.std() > 1e-2
    relative = np.abs(folded - original).max() / np.abs(original).max()
    assert relative < TOLERANCE, relative


@pytest.fixture(scope="module")
def photos(cifar_subset):
    """Eight real CIFAR-10 test photos at SIZE x SIZE, uint8."""
    paths = sorted(glob.glob(os.path.join(cifar_subset, "test", "*", "*.jpg")))[::5][:8]
    return np.stack([np.asarray(Image.open(p).convert("RGB").resize((SIZE, SIZE),
                                                                     Image.BILINEAR))
                     for p in paths])


@pytest.fixture(scope="module")
def inputs(photos):
    return apply_convention(photos.astype(np.float32), "torch")


@pytest.mark.parametrize("name", _representatives())
def test_folded_model_matches_the_original(name, inputs):
    spec = specs.get_spec(name)
    model = resnet_keras.build_model(name, classes=10, input_shape=(SIZE, SIZE, 3),
                                     **_tiny(spec))
    _randomise_bn(model, np.random.default_rng(0))
    pairs = folding.foldable_pairs(model)
    folded = folding.fold_batch_norms(model)

    folded_away = {norm for _, norm in pairs}
    assert pairs and folded is not model
    assert sorted(layer.name for layer in folded.layers) == \
        sorted(layer.name for layer in model.layers if layer.name not in folded_away)
    assert folding.foldable_pairs(folded) == []
    assert len(_norms(model)) == len(_norms(folded)) + len(pairs)  # MODEL is unchanged
    if spec.preact:  # only the pre-activation BNs, after an addition or a pooling, stay
        assert _norms(folded) and all(n.endswith("_preact_bn") or n == "post_bn"
                                      for n in _norms(folded))
    else:
        assert _norms(folded) == []
    for conv, _ in pairs:
        assert folded.get_layer(conv).use_bias
    assert folded.preprocessing == model.preprocessing and folded.name == model.name
    np.testing.assert_allclose(folded(inputs), model(inputs), atol=TOLERANCE, rtol=0)
    _assert_close_logits(logits_function(folded)(inputs), logits_function(model)(inputs))


def test_drnseg_folds_per_pixel(inputs):
    spec = specs.get_spec("drn_d_22")
    model = resnet_keras.build_segmentation_model("drn_d_22", 5, input_shape=(SIZE, SIZE, 3),
                                                  **_tiny(spec))
    _randomise_bn(model, np.random.default_rng(1))
    folded = folding.fold_batch_norms(model)
    assert _norms(folded) == [] and folded.get_layer("up").trainable is False
    np.testing.assert_allclose(folded(inputs), model(inputs), atol=TOLERANCE, rtol=0)
    logits = {m: keras.Model(m.inputs, m.get_layer("up").output) for m in (model, folded)}
    _assert_close_logits(logits[folded](inputs), logits[model](inputs))


def test_a_mixed_precision_model_folds_to_float32(inputs):
    tiny = _tiny(specs.get_spec("resnet18"))
    reference = resnet_keras.build_model("resnet18", classes=10, input_shape=(SIZE, SIZE, 3),
                                         **tiny)
    _randomise_bn(reference, np.random.default_rng(2))
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = resnet_keras.build_model("resnet18", classes=10, input_shape=(SIZE, SIZE, 3),
                                         **tiny)
    finally:
        keras.config.set_dtype_policy("float32")
    mixed.set_weights(reference.get_weights())
    folded = folding.fold_batch_norms(mixed)
    assert {layer.compute_dtype for layer in folded.layers} == {"float32"}
    np.testing.assert_allclose(folded(inputs), reference(inputs), atol=TOLERANCE, rtol=0)
    assert folding.fold_batch_norms(folded) is folded  # nothing left to fold


def test_a_sequential_model_is_copied_in_float32_unfolded():
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
                                  keras.layers.BatchNormalization()])
    finally:
        keras.config.set_dtype_policy("float32")
    folded = folding.fold_batch_norms(model)
    assert folding.foldable_pairs(model) == [] and folded is not model
    assert {layer.compute_dtype for layer in folded.layers} == {"float32"}
    x = np.random.default_rng(7).normal(0, 1, (2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(folded(x), model(x), atol=5e-2, rtol=0)  # bfloat16 vs float32


def test_which_batch_norms_fold():
    """Depthwise convs, convs with biases and BNs without scale or centre fold;
    a conv whose output is read twice, or that has an activation, does not."""
    inputs = keras.Input((8, 8, 4))
    a = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(inputs)
    a = keras.layers.BatchNormalization(name="dw_bn")(a)
    b = keras.layers.Conv2D(8, 1, use_bias=True, name="biased")(inputs)
    b = keras.layers.BatchNormalization(scale=False, center=False, epsilon=1e-3,
                                        name="biased_bn")(b)
    c = keras.layers.Conv2D(8, 1, name="shared")(inputs)
    c = keras.layers.Add(name="add")([keras.layers.BatchNormalization(name="shared_bn")(c), c])
    d = keras.layers.Conv2D(8, 1, activation="relu", name="relu_conv")(inputs)
    d = keras.layers.BatchNormalization(name="relu_conv_bn")(d)
    e = keras.layers.BatchNormalization(name="out_bn")(keras.layers.Conv2D(2, 1, name="out")(a))
    model = keras.Model(inputs, {"cat": keras.layers.Concatenate(name="cat")([a, b, c, d]),
                                 "bn": e})  # a model output straight from a BN
    _randomise_bn(model, np.random.default_rng(3))
    assert sorted(folding.foldable_pairs(model)) == [
        ("biased", "biased_bn"), ("dw", "dw_bn"), ("out", "out_bn")]
    folded = folding.fold_batch_norms(model)
    assert sorted(_norms(folded)) == ["relu_conv_bn", "shared_bn"]
    x = np.random.default_rng(5).normal(0, 1, (2, 8, 8, 4)).astype(np.float32)
    expected, got = model(x), folded(x)
    for key in ("cat", "bn"):
        np.testing.assert_allclose(got[key], expected[key], atol=TOLERANCE, rtol=0)


def _graph_ops(function):
    """op type -> count in a concrete function's graph and the functions it calls."""
    graph = function.graph.as_graph_def()
    ops = collections.Counter(node.op for node in graph.node)
    for library_function in graph.library.function:
        ops.update(node.op for node in library_function.node_def)
    return ops


def test_savedmodel_serves_the_folded_graph(photos, tmp_path):
    spec = specs.get_spec("resnet50_v1")
    model = resnet_keras.build_model("resnet50_v1", classes=10, input_shape=(SIZE, SIZE, 3),
                                     **_tiny(spec))
    _randomise_bn(model, np.random.default_rng(6))
    version_dir = export.export_saved_model(model, str(tmp_path), image_size=SIZE)
    loaded = export.load_serving(version_dir)
    ops = _graph_ops(loaded.signatures["serving_default"])
    assert ops["Conv2D"] == len([l for l in model.layers if isinstance(l, keras.layers.Conv2D)])
    assert not {"FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3", "Rsqrt"} & set(ops)
    assert not [v.name for v in loaded.variables if "moving" in v.name or "gamma" in v.name]
    served = loaded.signatures["serving_default"](images=tf.constant(photos))
    expected = model(preprocessing.eval_transform(tf.constant(photos), SIZE))
    np.testing.assert_allclose(served["probabilities"], expected, atol=TOLERANCE, rtol=0)
