"""Dense prediction: DRNSeg (fyu/drn ``segment.py``).

The trunk's final features (output stride 8 for the DRNs) go through a 1x1
conv with bias to the classes (``seg``), are upsampled back to the input size
by a frozen, bilinear-initialised, per-class transposed conv (``up``: kernel
2s, stride s, padding s/2, one group per class) and end in a softmax. Any
input whose sides are multiples of the output stride gives an output of the
input's size.
"""
import keras
from keras import layers

from resnet_keras import models as models_lib
from resnet_keras import specs as specs_lib
from resnet_keras import weights as weights_lib
from resnet_keras.layers import CONV_INIT, DepthwiseConvTranspose2D, bilinear_kernel

__all__ = ["DepthwiseConvTranspose2D", "bilinear_kernel", "build_segmentation_model"]


def _check_input_size(input_shape, stride, model_name):
    for side in input_shape[:2]:
        if side is not None and side % stride:
            raise ValueError(
                f"input_shape={tuple(input_shape)!r} for {model_name} segmentation: "
                f"height and width must be multiples of the output stride {stride}")


def build_segmentation_model(model_name, /, classes, *, input_shape=None, weights=None,
                             input_tensor=None, classifier_activation="softmax",
                             output_stride=None, name=None, preprocessing=None, **overrides):
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
        preprocessing: the input convention, as for ``build_model``.
        **overrides: spec overrides, as for ``build_model``.

    Returns:
        A ``keras.Model`` mapping images to ``(batch, height, width, classes)``.
    """
    spec = specs_lib.get_spec(model_name)
    if output_stride is None and spec.native_output_stride != 8 and 8 in spec.output_strides:
        output_stride = 8
    spec = specs_lib.resolve_spec(model_name, output_stride=output_stride, **overrides)
    stride = spec.output_stride or spec.native_output_stride
    models_lib.check_head(False, None, classes, classifier_activation, model_name)
    if stride < 2 or stride % 2:
        raise ValueError(f"{model_name} has output stride {stride}; segmentation needs "
                         "an even output stride (8 for the DRNs)")
    weights_lib.check_weights_arg(weights, model_name, False, None)
    convention = models_lib.resolve_convention(preprocessing, weights, model_name)
    inputs, model_inputs = models_lib.make_input(input_tensor, input_shape, model_name)
    _check_input_size(inputs.shape[1:], stride, model_name)
    x, _ = models_lib.assemble(spec, inputs)
    mixed = keras.config.dtype_policy().name.startswith("mixed")
    x = layers.Conv2D(classes, 1, use_bias=True, kernel_initializer=CONV_INIT,
                      name="seg")(x)
    x = DepthwiseConvTranspose2D(2 * stride, stride, stride // 2, trainable=False,
                                 name="up")(x)
    if classifier_activation is not None:
        x = layers.Activation(classifier_activation, dtype="float32" if mixed else None,
                              name="probabilities")(x)
    model = keras.Model(model_inputs, x, name=name or f"{model_name}_seg")
    return models_lib.attach_weights(model, weights, model_name, convention)
