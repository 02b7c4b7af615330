"""Input conventions: how pixels become a network's input, per weights.

Pretrained weights expect the input their authors trained on:

* ``"torch"``: RGB scaled to [0, 1], minus torchvision's ImageNet mean, over
  its std: torchvision, timm and fyu/drn weights, and every model trained
  here from scratch (the default);
* ``"caffe"``: RGB -> BGR, minus the per-channel ImageNet mean, 0-255 scale:
  keras.applications ResNet50/101/152 (``keras.applications.resnet``);
* ``"tf"``: pixels scaled to [-1, 1]: keras.applications ResNet50V2/101V2/152V2.

A model built with weights carries its convention as ``model.preprocessing``
(see :func:`convention_of`); a trained run records it in run_config.json,
and training, evaluation, ``predict`` and the exported graphs apply it.

    x = resnet_keras.preprocess_input(images, model)      # or "caffe", "tf", "torch"

The arithmetic is written once (:func:`apply_convention`) for numpy arrays
and TensorFlow tensors alike; this module imports neither TensorFlow nor Keras
unless a non-numpy input is given.
"""
import numpy as np

CONVENTIONS = ("torch", "caffe", "tf")
DEFAULT_CONVENTION = "torch"
TORCH_MEAN = np.array((0.485, 0.456, 0.406), np.float32)
TORCH_STD = np.array((0.229, 0.224, 0.225), np.float32)
# keras.applications.imagenet_utils, "caffe" mode: per-channel mean, BGR order.
CAFFE_MEAN_BGR = np.array((103.939, 116.779, 123.68), np.float32)


def check_convention(convention, what="preprocessing"):
    """CONVENTION if it is one of :data:`CONVENTIONS`, else a one-line ValueError."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown {what} convention {convention!r}; choices: "
                         f"{', '.join(CONVENTIONS)}")
    return convention


def convention_of(model_or_convention):
    """The convention of a model (its ``preprocessing`` attribute; models
    without one, e.g. loaded from a ``.keras`` file, read as the default
    ``"torch"``) or a convention name checked."""
    if isinstance(model_or_convention, str):
        return check_convention(model_or_convention)
    if model_or_convention is None:
        return DEFAULT_CONVENTION
    value = getattr(model_or_convention, "preprocessing", None)
    return check_convention(value or DEFAULT_CONVENTION,
                            f"{getattr(model_or_convention, 'name', 'model')!r} preprocessing")


def apply_convention(pixels, convention):
    """float32 RGB PIXELS in [0, 255] (numpy array or tensor, channels last)
    -> the network input of CONVENTION."""
    if check_convention(convention) == "torch":
        return (pixels / np.float32(255.0) - TORCH_MEAN) / TORCH_STD
    if convention == "caffe":
        return pixels[..., ::-1] - CAFFE_MEAN_BGR
    return pixels / np.float32(127.5) - np.float32(1.0)


def restore_pixels(inputs, convention):
    """The inverse of :func:`apply_convention` on numpy INPUTS: RGB in [0, 255]."""
    inputs = np.asarray(inputs, np.float32)
    if check_convention(convention) == "torch":
        return (inputs * TORCH_STD + TORCH_MEAN) * np.float32(255.0)
    if convention == "caffe":
        return (inputs + CAFFE_MEAN_BGR)[..., ::-1]
    return (inputs + np.float32(1.0)) * np.float32(127.5)


def preprocess_input(images, model_or_convention=DEFAULT_CONVENTION):
    """RGB images (uint8 or float in [0, 255], channels last, any batch shape)
    -> float32 network input for a model or a convention name.

    ``model_or_convention``: a model built by this package (its
    ``preprocessing``), or ``"torch"``, ``"caffe"``, ``"tf"``. For
    keras.applications users: ``preprocess_input(x, "caffe")`` equals
    ``keras.applications.resnet.preprocess_input(x)`` and ``"tf"`` equals
    ``keras.applications.resnet_v2.preprocess_input(x)``. A numpy input gives
    a numpy array; a tensor gives a tensor of the Keras backend.
    """
    convention = convention_of(model_or_convention)
    if isinstance(images, (np.ndarray, list, tuple, int, float)):
        return apply_convention(np.asarray(images, np.float32), convention)
    from keras import ops

    pixels = ops.cast(images, "float32")
    if convention == "caffe":
        pixels = ops.flip(pixels, axis=-1)
        return pixels - ops.convert_to_tensor(CAFFE_MEAN_BGR)
    return apply_convention(pixels, convention)
