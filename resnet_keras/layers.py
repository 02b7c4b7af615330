"""Building blocks: one conv-BN-ReLU helper, residual blocks and stages.

Layer names follow keras.applications (``conv2_block1_1_conv``,
``conv2_block1_0_conv`` for a projection shortcut, ``_bn``, ``_relu``,
``_add``, ``_out``); they are the contract that weight files rely on.
Strided convs are padded symmetrically (explicit ZeroPadding2D + "valid"),
as PyTorch pads, so ported weights give the same numbers.

The refinements of the modern ResNets add, per block ``{block}``:
``{block}_se_pool/_reduce/_relu/_expand/_gate/_scale`` (squeeze-and-excitation),
``{block}_eca_pool/_reshape/_conv/_gate/_expand/_scale`` (efficient channel
attention), ``{block}_0_pool`` (the average pool of a ResNet-D shortcut) and
``{block}_drop_path`` (stochastic depth); a deep stem is ``conv1_1``,
``conv1_2``, ``conv1_3`` (``_conv``/``_bn``/``_relu``) with its last BN and
ReLU named ``conv1_bn`` / ``conv1_relu`` as in the 7x7 stem.
"""
import functools

import keras
from keras import layers, ops

from resnet_keras import specs as specs_lib

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


class Ops:
    """Conv / BN / ReLU factories configured once from a spec."""

    def __init__(self, spec):
        self.spec = spec
        self.bn = functools.partial(
            BatchNormalization, axis=-1,
            epsilon=spec.bn_epsilon, momentum=spec.bn_momentum)

    def conv(self, x, filters, kernel, stride=1, dilation=1, groups=1,
             use_bias=None, name=None):
        """Conv with symmetric padding; adds ``{name}_pad`` when strided."""
        if stride > 1 and dilation > 1:
            raise ValueError(f"{name}: a conv cannot be both strided and dilated")
        pad = dilation * (kernel - 1) // 2
        padding = "same"
        if stride > 1 or kernel == 1:
            padding = "valid"
            if pad:
                x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        return layers.Conv2D(
            filters, kernel, strides=stride, padding=padding, dilation_rate=dilation,
            groups=groups, use_bias=self.spec.conv_bias if use_bias is None else use_bias,
            kernel_initializer=CONV_INIT, name=f"{name}_conv")(x)

    def conv_bn(self, x, filters, kernel, stride=1, dilation=1, groups=1,
                relu=True, zero_gamma=False, name=None):
        """``{name}_conv`` -> ``{name}_bn`` [-> ``{name}_relu``].

        ``zero_gamma`` starts the BN's gamma at 0 (a zero-initialised
        residual branch).
        """
        x = self.conv(x, filters, kernel, stride, dilation, groups, name=name)
        gamma = "zeros" if zero_gamma else "ones"
        x = self.bn(gamma_initializer=gamma, name=f"{name}_bn")(x)
        return layers.ReLU(name=f"{name}_relu")(x) if relu else x

    def norm_relu(self, x, name):
        """BN + ReLU named ``{name}_bn`` / ``{name}_relu`` (pre-activation)."""
        x = self.bn(name=f"{name}_bn")(x)
        return layers.ReLU(name=f"{name}_relu")(x)

    def shortcut(self, x, channels, stride, name, dilation=1):
        """Identity, projection (``_0_conv``/``_0_bn``), option-A padding, or
        ResNet-D's average pool (``_0_pool``) then a 1x1 projection.

        The average pool is 2x2 with the block's stride (a partial window at
        an odd edge averages what it covers); in a dilated stage (``dilation``
        > 1) it is 2x2 with stride 1 over the input zero-padded by one row and
        column at the bottom and right (timm's ``AvgPool2dSame``).
        """
        if stride == 1 and x.shape[-1] == channels:
            return x
        if self.spec.shortcut == "pad":
            return ShortcutPad(stride, channels, name=f"{name}_0_pad")(x)
        if self.spec.shortcut == "avgpool":
            if stride > 1:
                x = layers.AveragePooling2D(2, stride, padding="same",
                                            name=f"{name}_0_pool")(x)
            elif dilation > 1:
                x = layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"{name}_0_pad")(x)
                x = layers.AveragePooling2D(2, 1, name=f"{name}_0_pool")(x)
            return self.conv_bn(x, channels, 1, 1, relu=False, name=f"{name}_0")
        return self.conv_bn(x, channels, 1, stride, relu=False, name=f"{name}_0")

    def attention(self, x, name):
        """The spec's channel attention on ``x`` (a residual branch), or ``x``."""
        spec, channels = self.spec, x.shape[-1]
        if spec.attention == "se":
            width = specs_lib.se_channels(channels, spec.se_reduction)
            s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_pool")(x)
            s = layers.Conv2D(width, 1, kernel_initializer=CONV_INIT,
                              name=f"{name}_se_reduce")(s)
            s = layers.ReLU(name=f"{name}_se_relu")(s)
            s = layers.Conv2D(channels, 1, kernel_initializer=CONV_INIT,
                              name=f"{name}_se_expand")(s)
            s = layers.Activation("sigmoid", name=f"{name}_se_gate")(s)
            return layers.Multiply(name=f"{name}_se_scale")([x, s])
        if spec.attention == "eca":
            kernel = spec.eca_kernel_size or specs_lib.eca_kernel_size(channels)
            s = layers.GlobalAveragePooling2D(name=f"{name}_eca_pool")(x)
            s = layers.Reshape((channels, 1), name=f"{name}_eca_reshape")(s)
            s = layers.Conv1D(1, kernel, padding="same", use_bias=False,
                              name=f"{name}_eca_conv")(s)
            s = layers.Activation("sigmoid", name=f"{name}_eca_gate")(s)
            s = layers.Reshape((1, 1, channels), name=f"{name}_eca_expand")(s)
            return layers.Multiply(name=f"{name}_eca_scale")([x, s])
        return x

    def residual_end(self, y, drop_rate, name):
        """Attention, then stochastic depth, on a residual branch's output."""
        y = self.attention(y, name)
        if drop_rate > 0:
            y = DropPath(drop_rate, name=f"{name}_drop_path")(y)
        return y


def basic_block(ops, x, width, stride, dilation, first_dilation, residual=True,
                drop_rate=0.0, name=None):
    """Two 3x3 convs; ``residual=False`` drops the addition (DRN degridding)."""
    shortcut = ops.shortcut(x, width, stride, name, dilation) if residual else None
    y = ops.conv_bn(x, width, 3, stride, first_dilation, name=f"{name}_1")
    y = ops.conv_bn(y, width, 3, 1, dilation, relu=False, name=f"{name}_2",
                    zero_gamma=residual and ops.spec.zero_init_last)
    if residual:
        y = ops.residual_end(y, drop_rate, name)
        y = layers.Add(name=f"{name}_add")([shortcut, y])
    else:
        y = ops.attention(y, name)
    return layers.ReLU(name=f"{name}_out")(y)


def bottleneck_block(ops, x, width, stride, dilation, first_dilation, drop_rate=0.0,
                     name=None):
    """1x1 -> 3x3 (grouped, strided, dilated) -> 1x1 (x expansion)."""
    spec = ops.spec
    inner, out = spec.bottleneck_width(width), width * spec.expansion
    s1, s3 = (stride, 1) if spec.stride_in_1x1 else (1, stride)
    shortcut = ops.shortcut(x, out, stride, name, dilation)
    y = ops.conv_bn(x, inner, 1, s1, name=f"{name}_1")
    y = ops.conv_bn(y, inner, 3, s3, first_dilation, spec.groups, name=f"{name}_2")
    y = ops.conv_bn(y, out, 1, relu=False, zero_gamma=spec.zero_init_last, name=f"{name}_3")
    y = ops.residual_end(y, drop_rate, name)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def preact_block(ops, x, width, stride, dilation, drop_rate=0.0, name=None):
    """Pre-activation bottleneck (keras.applications ``block2``)."""
    spec = ops.spec
    inner, out = spec.bottleneck_width(width), width * spec.expansion
    preact = ops.norm_relu(x, f"{name}_preact")
    if x.shape[-1] != out:
        shortcut = ops.conv(preact, out, 1, stride, use_bias=True, name=f"{name}_0")
    elif stride > 1:
        shortcut = layers.MaxPooling2D(1, strides=stride, name=f"{name}_0_pool")(x)
    else:
        shortcut = x
    y = ops.conv_bn(preact, inner, 1, name=f"{name}_1")
    y = ops.conv_bn(y, inner, 3, stride, dilation, spec.groups, name=f"{name}_2")
    y = ops.conv(y, out, 1, use_bias=True, name=f"{name}_3")
    y = ops.residual_end(y, drop_rate, name)
    return layers.Add(name=f"{name}_out")([shortcut, y])


def conv_stage(ops, x, width, depth, stride, dilation, name):
    """Plain stack of 3x3 conv-BN-ReLU (DRN-D levels 1, 2, 7, 8)."""
    for i in range(depth):
        x = ops.conv_bn(x, width, 3, stride if i == 0 else 1, dilation,
                        name=f"{name}_conv{i + 1}")
    return x


def residual_stage(ops, x, index, depth, stride, dilation, first_dilation, name,
                   on_level=None, drop_rates=None):
    """``depth`` residual blocks of stage ``index``.

    Post-activation stages stride in their first block, whose 3x3 uses
    ``first_dilation``; pre-activation (v2) stages stride in their last block
    and use ``first_dilation`` throughout. ``on_level(x)`` is called with the
    input of a v2 stage's last block when that block has a nominal stride
    (the last feature map at the stage's input resolution). ``drop_rates``
    gives each block's stochastic-depth rate (default none).
    """
    spec = ops.spec
    width, block = spec.widths[index], spec.stage_block(index)
    drop_rates = drop_rates or (0.0,) * depth
    for b in range(depth):
        block_name = f"{name}_block{b + 1}"
        if spec.preact:
            last = b == depth - 1
            if last and on_level is not None and spec.strides[index] > 1:
                on_level(x)
            x = preact_block(ops, x, width, stride if last else 1, first_dilation,
                             drop_rate=drop_rates[b], name=block_name)
            continue
        s, d1 = (stride, first_dilation) if b == 0 else (1, dilation)
        if block == "bottleneck":
            x = bottleneck_block(ops, x, width, s, dilation, d1, drop_rate=drop_rates[b],
                                 name=block_name)
        else:
            x = basic_block(ops, x, width, s, dilation, d1,
                            residual=spec.kinds[index] != "degrid",
                            drop_rate=drop_rates[b], name=block_name)
    return x
