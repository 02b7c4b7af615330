"""The package's own Keras layers, registered for saving.

``ShortcutPad`` (a parameter-free CIFAR shortcut), ``BatchNormalization``
(Keras' layer with a fused training kernel), ``DropPath`` (stochastic depth)
and ``DepthwiseConvTranspose2D`` (DRNSeg's per-class upsampling). Each is
registered under the package ``resnet_keras``, so saved ``.keras`` models
load with ``keras.saving.load_model`` (``safe_mode=True``).
"""
import math

import keras
import numpy as np
from keras import layers, ops

# torchvision's init: kaiming normal, fan_out, for ReLU networks.
CONV_INIT = {"class_name": "VarianceScaling",
             "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"}}


@keras.saving.register_keras_serializable(package="resnet_keras")
class ShortcutPad(layers.Layer):
    """Parameter-free shortcut (He et al. 2016, CIFAR option A).

    Subsamples the input spatially by ``stride`` and zero-pads its channels
    to ``channels`` (half the new channels before, half after).
    """

    def __init__(self, stride, channels, **kwargs):
        super().__init__(**kwargs)
        self.stride = int(stride)
        self.channels = int(channels)

    def call(self, inputs):
        x = inputs[:, ::self.stride, ::self.stride, :] if self.stride > 1 else inputs
        extra = self.channels - x.shape[-1]
        before = extra // 2
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [before, extra - before]])

    def compute_output_shape(self, input_shape):
        def sub(size):
            return None if size is None else -(-size // self.stride)
        return (input_shape[0], sub(input_shape[1]), sub(input_shape[2]), self.channels)

    def get_config(self):
        return {**super().get_config(), "stride": self.stride, "channels": self.channels}


@keras.saving.register_keras_serializable(package="resnet_keras")
class BatchNormalization(layers.BatchNormalization):
    """BatchNormalization that trains with TensorFlow's fused kernel.

    It keeps Keras' class name: Keras weight files key layers by it, so
    keras.applications ``.weights.h5`` files load unchanged.

    The same variables, config and inference outputs as Keras'
    BatchNormalization. In training on the TensorFlow backend, one
    FusedBatchNormV3 op (oneDNN on CPUs, cuDNN on GPUs), forward and backward,
    replaces the moments-and-normalise graph of Keras 3; the moving statistics
    follow Keras' rule (biased batch variance). Other backends, masks and
    renorm take Keras' path.
    """

    def _fusable(self, inputs, training, mask):
        return (bool(training) and self.trainable and mask is None and not self.renorm
                and not self.synchronized and self.scale and self.center
                and keras.backend.backend() == "tensorflow" and len(inputs.shape) == 4
                and self.axis in (3, -1))

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = inputs if inputs.dtype in (tf.float32, tf.bfloat16, tf.float16) \
            else tf.cast(inputs, tf.float32)
        empty = tf.constant([], tf.float32)
        y, mean, variance = tf.raw_ops.FusedBatchNormV3(
            x=x, scale=self.gamma, offset=self.beta, mean=empty, variance=empty,
            epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC",
            is_training=True)[:3]
        # The op returns the unbiased (n - 1) variance; Keras averages the biased one.
        n = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), tf.float32)
        variance = variance * tf.where(n > 1, (n - 1) / tf.maximum(n, 1), 1.0)
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(
            self.moving_variance * momentum + variance * (1.0 - momentum))
        return tf.cast(y, self.compute_dtype)


@keras.saving.register_keras_serializable(package="resnet_keras")
class DropPath(layers.Layer):
    """Stochastic depth (Huang et al. 2016): in training, zero the whole input
    of a sample with probability ``rate`` and scale the kept ones by
    ``1 / (1 - rate)``; the identity at inference.

    Applied to a residual branch before the addition, it drops the block
    for that sample (timm's DropPath).
    """

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise ValueError(f"DropPath rate={rate!r}: must be a number in [0, 1)")
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        noise_shape = (None,) + (1,) * (len(inputs.shape) - 1)
        return keras.random.dropout(inputs, self.rate, noise_shape=noise_shape,
                                    seed=self.seed_generator)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


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
