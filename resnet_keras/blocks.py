"""Building blocks: one conv-BN-ReLU helper, the stems, residual blocks and stages.

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
import math

from keras import layers

from resnet_keras.layers import CONV_INIT, BatchNormalization, DropPath, ShortcutPad


def se_channels(channels, reduction=16, divisor=8):
    """Squeeze-and-excitation width: ``channels / reduction`` rounded to the
    nearest multiple of ``divisor``, at least ``divisor`` (timm's rule)."""
    return max(divisor, int(channels / reduction + divisor / 2) // divisor * divisor)


def eca_kernel_size(channels, gamma=2, beta=1):
    """ECA-Net's adaptive kernel size for ``channels``: odd, at least 3."""
    t = int(abs(math.log2(channels) + beta) / gamma)
    return max(t if t % 2 else t + 1, 3)


def drop_path_rates(spec):
    """Per residual stage, the drop-path rate of each of its blocks.

    Rates grow linearly from 0 at the first block to ``drop_path_rate`` at
    the last, counted over the whole network; plain conv stages get ``()``.
    """
    counts = [0 if kind == "conv" else depth for depth, kind in zip(spec.depths, spec.kinds)]
    total, index, out = sum(counts), 0, []
    for count in counts:
        out.append(tuple(spec.drop_path_rate * (index + b) / max(total - 1, 1)
                         for b in range(count)))
        index += count
    return out


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
            width = se_channels(channels, spec.se_reduction)
            s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_se_pool")(x)
            s = layers.Conv2D(width, 1, kernel_initializer=CONV_INIT,
                              name=f"{name}_se_reduce")(s)
            s = layers.ReLU(name=f"{name}_se_relu")(s)
            s = layers.Conv2D(channels, 1, kernel_initializer=CONV_INIT,
                              name=f"{name}_se_expand")(s)
            s = layers.Activation("sigmoid", name=f"{name}_se_gate")(s)
            return layers.Multiply(name=f"{name}_se_scale")([x, s])
        if spec.attention == "eca":
            kernel = spec.eca_kernel_size or eca_kernel_size(channels)
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


def stem(ops, x, spec):
    """The spec's stem (``conv1_*``, then ``pool1_*`` after an ImageNet stem)."""
    if spec.stem in ("imagenet", "imagenet_v2", "deep"):
        if spec.stem == "deep":
            half = spec.stem_width // 2
            x = ops.conv_bn(x, half, 3, 2, name="conv1_1")
            x = ops.conv_bn(x, half, 3, 1, name="conv1_2")
            x = ops.conv(x, spec.stem_width, 3, 1, name="conv1_3")
            x = ops.bn(name="conv1_bn")(x)
            x = layers.ReLU(name="conv1_relu")(x)
        elif spec.stem == "imagenet":
            x = ops.conv_bn(x, spec.stem_width, 7, 2, name="conv1")
        else:  # pre-activation: the first block normalises
            x = ops.conv(x, spec.stem_width, 7, 2, use_bias=True, name="conv1")
        x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
        return layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    kernel = 3 if spec.stem == "cifar" else 7
    return ops.conv_bn(x, spec.stem_width, kernel, 1, name="conv1")
