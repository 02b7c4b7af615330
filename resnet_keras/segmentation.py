"""Dense prediction: DRNSeg (fyu/drn ``segment.py``).

The trunk's final features (output stride 8 for the DRNs) go through a 1x1
conv with bias to the classes (``seg``), are upsampled back to the input size
by a frozen, bilinear-initialised, per-class transposed conv (``up``: kernel
2s, stride s, padding s/2, one group per class) and end in a softmax. Any
input whose sides are multiples of the output stride gives an output of the
input's size.
"""
import math

import keras
import numpy as np
from keras import layers, ops

from resnet_keras import models as models_lib
from resnet_keras import specs as specs_lib
from resnet_keras import weights as weights_lib
from resnet_keras.layers import CONV_INIT, Ops


def bilinear_kernel(size):
    """fyu/drn's ``fill_up_weights``: a ``size x size`` bilinear kernel."""
    f = math.ceil(size / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    ramp = 1 - np.abs(np.arange(size) / f - c)
    return np.outer(ramp, ramp)


def _phase_taps(kernel_size, stride, padding):
    """Polyphase form of a 1-D transposed conv.

    Output ``stride * q + r`` sums ``x[q + d] * w[r + padding - stride * d]``
    over the offsets ``d`` that give a kernel index in range. Returns
    ``(pad_before, pad_after, index)`` where ``index[a, r]`` is the kernel
    index used by tap ``a`` (offset ``a - pad_before``) for phase ``r``, or
    ``kernel_size`` (a zero) where the tap is unused.
    """
    offsets = [d for r in range(stride) for d in range(-kernel_size, kernel_size + 1)
               if 0 <= r + padding - stride * d < kernel_size]
    d_min, d_max = min(offsets), max(offsets)
    index = np.full((d_max - d_min + 1, stride), kernel_size, dtype="int32")
    for a, d in enumerate(range(d_min, d_max + 1)):
        for r in range(stride):
            k = r + padding - stride * d
            if 0 <= k < kernel_size:
                index[a, r] = k
    return -d_min, d_max, index


@keras.saving.register_keras_serializable(package="resnet_keras")
class DepthwiseConvTranspose2D(layers.Layer):
    """Transposed conv with one group per channel (torch ``groups=channels``).

    Computes ``ConvTranspose2d(C, C, kernel_size, stride=strides,
    padding=padding, groups=C, bias=False)`` exactly, as a depthwise conv of
    ``strides**2`` phases followed by a depth-to-space shuffle. The kernel,
    shape ``(k, k, C, 1)``, starts bilinear (fyu/drn's ``fill_up_weights``).
    The output is ``strides`` times the input, so ``kernel_size - 2 *
    padding`` must equal ``strides``.
    """

    def __init__(self, kernel_size=16, strides=8, padding=4, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size, self.strides, self.padding = int(kernel_size), int(strides), int(padding)
        if self.kernel_size - 2 * self.padding != self.strides or self.padding < 0:
            raise ValueError(
                f"kernel_size={kernel_size}, strides={strides}, padding={padding}: "
                "kernel_size - 2 * padding must equal strides (output = strides x input)")
        self._taps = _phase_taps(self.kernel_size, self.strides, self.padding)

    def build(self, input_shape):
        channels = input_shape[-1]
        bilinear = bilinear_kernel(self.kernel_size)

        def init(shape, dtype=None):
            return ops.convert_to_tensor(
                np.broadcast_to(bilinear[:, :, None, None], shape), dtype=dtype)

        self.kernel = self.add_weight(
            name="kernel", shape=(self.kernel_size, self.kernel_size, channels, 1),
            initializer=init)

    def _phase_kernel(self):
        """``(taps, taps, C, strides**2)`` depthwise kernel of the phases."""
        _, _, index = self._taps
        taps, s = index.shape
        w = ops.cast(self.kernel[:, :, :, 0], self.compute_dtype)
        w = ops.pad(w, [[0, 1], [0, 1], [0, 0]])  # index kernel_size reads a zero
        w = ops.take(w, index, axis=0)  # (taps, s, k + 1, C)
        w = ops.take(w, index, axis=2)  # (taps, s, taps, s, C)
        w = ops.transpose(w, (0, 2, 4, 1, 3))
        return ops.reshape(w, (taps, taps, w.shape[2], s * s))

    def call(self, inputs):
        before, after, _ = self._taps
        s = self.strides
        x = ops.pad(inputs, [[0, 0], [before, after], [before, after], [0, 0]])
        y = ops.depthwise_conv(x, self._phase_kernel(), strides=1, padding="valid")
        shape = ops.shape(inputs)
        n, h, w, c = shape[0], shape[1], shape[2], inputs.shape[-1]
        y = ops.reshape(y, (n, h, w, c, s, s))
        y = ops.transpose(y, (0, 1, 4, 2, 5, 3))
        return ops.reshape(y, (n, h * s, w * s, c))

    def compute_output_shape(self, input_shape):
        def up(side):
            return None if side is None else side * self.strides
        return (input_shape[0], up(input_shape[1]), up(input_shape[2]), input_shape[3])

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size,
                "strides": self.strides, "padding": self.padding}


def _check_input_size(input_shape, stride, model_name):
    for side in input_shape[:2]:
        if side is not None and side % stride:
            raise ValueError(
                f"input_shape={tuple(input_shape)!r} for {model_name} segmentation: "
                f"height and width must be multiples of the output stride {stride}")


def build_segmentation_model(model_name, /, classes, *, input_shape=None, weights=None,
                             input_tensor=None, classifier_activation="softmax",
                             output_stride=None, name=None, **overrides):
    """DRNSeg: trunk -> 1x1 conv ``seg`` -> x``output_stride`` ``up`` -> softmax.

    Args:
        model_name: a registered name; the DRNs (output stride 8) are the
            reference. Other names default to ``output_stride=8`` where
            allowed.
        classes: number of segmentation classes.
        input_shape: ``(height, width, channels)``, sides None or multiples
            of the output stride. Default ``(None, None, 3)``.
        weights: None; "imagenet" (classification weights for the trunk,
            fyu/drn's default); or a file: a Keras weights file, or a
            PyTorch checkpoint / ``.npz`` state dict, either a fyu/drn
            segmentation checkpoint (``base.*``, ``seg.*``, ``up.*``) or a
            classification one (trunk only).
        input_tensor: optional Keras tensor to use as the model's input.
        classifier_activation: "softmax" (default) or None for logits.
        output_stride: the trunk's output stride (the upsampling factor).
        name: the Keras model's name (default ``f"{model_name}_seg"``).
        **overrides: spec overrides, as for ``build_model``.

    Returns:
        A ``keras.Model`` mapping images to ``(batch, height, width, classes)``.
    """
    spec = specs_lib.get_spec(model_name)
    if output_stride is None and spec.native_output_stride != 8 and 8 in spec.output_strides:
        output_stride = 8
    spec = specs_lib.resolve_spec(model_name, output_stride=output_stride, **overrides)
    stride = spec.output_stride or spec.native_output_stride
    models_lib._check_head(False, None, classes, classifier_activation, model_name)
    if stride < 2 or stride % 2:
        raise ValueError(f"{model_name} has output stride {stride}; segmentation needs "
                         "an even output stride (8 for the DRNs)")
    weights_lib.check_weights_arg(weights, model_name, False, None)
    inputs, model_inputs = models_lib._make_input(input_tensor, input_shape, model_name)
    _check_input_size(inputs.shape[1:], stride, model_name)
    x, _ = models_lib._body(Ops(spec), inputs, spec)
    mixed = keras.config.dtype_policy().name.startswith("mixed")
    x = layers.Conv2D(classes, 1, use_bias=True, kernel_initializer=CONV_INIT,
                      name="seg")(x)
    x = DepthwiseConvTranspose2D(2 * stride, stride, stride // 2, trainable=False,
                                 name="up")(x)
    if classifier_activation is not None:
        x = layers.Activation(classifier_activation, dtype="float32" if mixed else None,
                              name="probabilities")(x)
    model = keras.Model(model_inputs, x, name=name or f"{model_name}_seg")
    if weights is not None:
        weights_lib.load_weights(model, weights, model_name)
    return model
