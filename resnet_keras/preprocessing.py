"""Image preprocessing shared by the input pipeline and the exported graph.

A model takes float32 images in its weights' input convention
(:mod:`resnet_keras.conventions`: ``"torch"``, the default and what models
trained here from scratch use, ``(pixels / 255 - IMAGENET_MEAN) /
IMAGENET_STD``; ``"caffe"`` and ``"tf"`` for the keras.applications weights).
The training pipeline, evaluation and the SavedModel export all call
:func:`eval_transform` / :func:`normalize` with the run's convention, so a
served model sees exactly what it was evaluated on.
"""
import tensorflow as tf

from resnet_keras.conventions import (CONVENTIONS, DEFAULT_CONVENTION, TORCH_MEAN, TORCH_STD,
                                      apply_convention, check_convention)

IMAGENET_MEAN = tuple(float(v) for v in TORCH_MEAN)
IMAGENET_STD = tuple(float(v) for v in TORCH_STD)
__all__ = ["CONVENTIONS", "CROP_FRACTION", "DEFAULT_CONVENTION", "IMAGENET_MEAN",
           "IMAGENET_STD", "SMALL_IMAGE_MAX", "check_convention", "eval_transform",
           "is_small", "normalize"]

# Images at or below this side length are treated as CIFAR-like: no centre
# crop at evaluation time, pad-and-crop augmentation at training time.
SMALL_IMAGE_MAX = 64
# Fraction of the resized image kept by the evaluation centre crop
# (224 / 256, the torchvision / Keras convention).
CROP_FRACTION = 0.875


def is_small(image_size):
    """True for CIFAR-sized training resolutions."""
    return int(image_size) <= SMALL_IMAGE_MAX


def normalize(images, convention=DEFAULT_CONVENTION):
    """uint8 or [0, 255] float RGB images -> float32 network input of CONVENTION."""
    return apply_convention(tf.cast(images, tf.float32), convention)


def _resize(images, height, width):
    return tf.image.resize(
        tf.cast(images, tf.float32), (height, width),
        method="bilinear", antialias=True)


def eval_transform(images, image_size, convention=DEFAULT_CONVENTION):
    """Deterministic evaluation transform for one image or a batch.

    ``images``: uint8 ``[H, W, 3]`` or ``[B, H, W, 3]``, any H and W.
    Small sizes are resized straight to ``image_size``; larger ones have
    their shorter side resized to ``image_size / 0.875`` (not resized when it
    already is) and are then centre cropped to ``image_size``. Returns float32
    images in CONVENTION (see :func:`normalize`).
    """
    size = int(image_size)
    images = tf.convert_to_tensor(images)
    shape = tf.shape(images)
    height, width = shape[-3], shape[-2]
    if is_small(size):
        same = tf.logical_and(tf.equal(height, size), tf.equal(width, size))
        out = tf.cond(
            same, lambda: tf.cast(images, tf.float32),
            lambda: _resize(images, size, size))
    else:
        short = tf.cast(tf.minimum(height, width), tf.float32)
        scale = tf.cast(round(size / CROP_FRACTION), tf.float32) / short
        new_h = tf.cast(tf.round(tf.cast(height, tf.float32) * scale), tf.int32)
        new_w = tf.cast(tf.round(tf.cast(width, tf.float32) * scale), tf.int32)
        new_h = tf.maximum(new_h, size)
        new_w = tf.maximum(new_w, size)
        unchanged = tf.logical_and(tf.equal(new_h, height), tf.equal(new_w, width))
        resized = tf.cond(unchanged, lambda: tf.cast(images, tf.float32),
                          lambda: _resize(images, new_h, new_w))
        top = (new_h - size) // 2
        left = (new_w - size) // 2
        out = tf.image.crop_to_bounding_box(resized, top, left, size, size)
    out = tf.clip_by_value(out, 0.0, 255.0)
    if images.shape.rank == 4:
        out = tf.ensure_shape(out, [None, size, size, 3])
    else:
        out = tf.ensure_shape(out, [size, size, 3])
    return normalize(out, convention)
