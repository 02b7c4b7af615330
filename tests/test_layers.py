"""resnet_keras.layers.BatchNormalization: which kernel runs, and how exact it is.

The fused layer must train with TensorFlow's FusedBatchNormV3 where that
kernel applies and take Keras' own path everywhere else; its numbers are
checked against batch normalisation written out in float64 numpy, and in
bfloat16 it must be no further from that reference than Keras' own layer.
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

from resnet_keras.layers import BatchNormalization as FusedBatchNormalization

EPSILON, MOMENTUM = 1e-5, 0.9
SHAPE = (4, 5, 6, 8)


def _inputs(shape=SHAPE, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(2.0, 3.0, shape).astype("float32")
    upstream = rng.normal(0.0, 1.0, shape).astype("float32")
    channels = shape[-1]
    gamma, beta = rng.uniform(0.5, 1.5, channels), rng.normal(0.0, 1.0, channels)
    return x, upstream, gamma.astype("float32"), beta.astype("float32")


def _layer(cls, shape, gamma=None, beta=None, **kwargs):
    layer = cls(epsilon=EPSILON, momentum=MOMENTUM, **kwargs)
    layer.build(shape)
    if gamma is not None:
        layer.gamma.assign(gamma)
        layer.beta.assign(beta)
    return layer


def _op_types(layer, shape, training, mask=False):
    """The op types of the forward and backward graph of LAYER."""
    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            kwargs = {"mask": tf.ones(tf.shape(x)[:-1], tf.bool)} if mask else {}
            y = layer(x, training=training, **kwargs)
            loss = tf.reduce_sum(tf.cast(y, tf.float32))
        return y, tape.gradient(loss, x)

    graph = step.get_concrete_function(tf.TensorSpec(shape, tf.float32)).graph
    types = set()
    for graph_ in [graph, *getattr(graph, "_functions", {}).values()]:
        inner = getattr(graph_, "graph", graph_)
        types |= {op.type for op in inner.get_operations()}
    return types


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_training_runs_the_fused_kernel(policy):
    layer = _layer(FusedBatchNormalization, SHAPE, dtype=policy)
    types = _op_types(layer, SHAPE, training=True)
    assert "FusedBatchNormV3" in types and "FusedBatchNormGradV3" in types
    assert "Mean" not in types  # no moments-and-normalise graph besides it
    reference = _op_types(_layer(keras.layers.BatchNormalization, SHAPE, dtype=policy),
                          SHAPE, training=True)
    assert "FusedBatchNormV3" not in reference  # Keras 3 itself does not fuse


@pytest.mark.parametrize("case", [
    "inference", "frozen", "channels_first", "rank_2", "renorm", "no_scale", "no_center",
    "mask"])
def test_keras_path_where_the_fused_kernel_does_not_apply(case):
    shape, kwargs, training = SHAPE, {}, True
    if case == "inference":
        training = False
    elif case == "channels_first":
        kwargs = {"axis": 1}
    elif case == "rank_2":
        shape = (16, 8)
    elif case == "renorm":
        kwargs = {"renorm": True}
    elif case == "no_scale":
        kwargs = {"scale": False}
    elif case == "no_center":
        kwargs = {"center": False}
    x = _inputs(shape)[0]
    fused = _layer(FusedBatchNormalization, shape, **kwargs)
    plain = _layer(keras.layers.BatchNormalization, shape, **kwargs)
    if case == "frozen":
        fused.trainable = plain.trainable = False
    for layer in (fused, plain):  # the same non-trivial state in both
        layer.moving_mean.assign(np.linspace(-1, 1, layer.moving_mean.shape[0]))
        layer.moving_variance.assign(np.linspace(0.5, 2, layer.moving_mean.shape[0]))
    assert "FusedBatchNormV3" not in _op_types(fused, shape, training, mask=case == "mask")
    mask = {"mask": tf.ones(shape[:-1], tf.bool)} if case == "mask" else {}
    np.testing.assert_array_equal(fused(x, training=training, **mask),
                                  plain(x, training=training, **mask))
    np.testing.assert_array_equal(fused.moving_mean, plain.moving_mean)
    np.testing.assert_array_equal(fused.moving_variance, plain.moving_variance)


def _reference(x, upstream, gamma, beta):
    """Training-mode batch norm in float64: outputs, moving statistics after one
    update from the initial (0, 1), and the gradients of sum(y * upstream)."""
    x, w = x.astype("float64"), upstream.astype("float64")
    axes = (0, 1, 2)
    mean, var = x.mean(axes), x.var(axes)  # biased variance, as Keras
    inv = 1.0 / np.sqrt(var + EPSILON)
    xhat = (x - mean) * inv
    y = gamma * xhat + beta
    moving_mean = MOMENTUM * 0.0 + (1 - MOMENTUM) * mean
    moving_var = MOMENTUM * 1.0 + (1 - MOMENTUM) * var
    dbeta = w.sum(axes)
    dgamma = (w * xhat).sum(axes)
    dx = gamma * inv * (w - w.mean(axes) - xhat * (w * xhat).mean(axes))
    return [y, moving_mean, moving_var, dx, dgamma, dbeta]


def _train_once(cls, policy, x, upstream, gamma, beta):
    layer = _layer(cls, x.shape, gamma, beta, dtype=policy)
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
    grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
    return [np.asarray(tf.cast(t, tf.float64)) for t in
            (y, layer.moving_mean, layer.moving_variance, *grads)]


NAMES = ("outputs", "moving mean", "moving variance", "d inputs", "d gamma", "d beta")


def test_float32_fused_matches_a_float64_reference():
    x, upstream, gamma, beta = _inputs()
    reference = _reference(x, upstream, gamma, beta)
    for name, got, want in zip(NAMES, _train_once(FusedBatchNormalization, "float32", x,
                                                  upstream, gamma, beta), reference):
        scale = np.max(np.abs(want))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale, err_msg=name)


def test_bfloat16_fused_is_as_close_to_float64_as_keras():
    """In bfloat16 (8 significant bits) outputs and input gradients are rounded to
    about 2**-8 of their magnitude: the old fused-against-Keras comparison
    needed 7e-2. Both layers see the same bfloat16 inputs, so the reference is
    computed from those; the fused layer must be within bfloat16 rounding of it
    and no further from it than Keras' own bfloat16 layer (times 2)."""
    x, upstream, gamma, beta = _inputs()
    x16 = np.asarray(tf.cast(tf.cast(x, tf.bfloat16), tf.float32))
    reference = _reference(x16, upstream, gamma, beta)
    fused = _train_once(FusedBatchNormalization, "mixed_bfloat16", x, upstream, gamma, beta)
    plain = _train_once(keras.layers.BatchNormalization, "mixed_bfloat16", x, upstream,
                        gamma, beta)
    for name, f, p, want in zip(NAMES, fused, plain, reference):
        scale = np.max(np.abs(want))
        fused_error, keras_error = (np.max(np.abs(v - want)) / scale for v in (f, p))
        assert fused_error <= 2 ** -7, (name, fused_error)
        assert fused_error <= 2 * keras_error + 1e-6, (name, fused_error, keras_error)
