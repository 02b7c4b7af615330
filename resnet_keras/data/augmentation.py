"""Training augmentation, seeded by stateless random ops.

Small (CIFAR-sized) images: pad 4, random crop and horizontal flip, on whole
batches; larger ones: random resized crop (scale 0.08-1, ratio 3/4-4/3) and
flip, per image. A stateless seed pair decides every random choice, so the
same seed gives the same images on any number of threads or replicas.
"""
import tensorflow as tf

from resnet_keras import preprocessing
from resnet_keras.conventions import DEFAULT_CONVENTION

PAD = 4
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)


def _has_size(image, size):
    """Whether one image [H, W, C] is SIZE x SIZE (a boolean tensor)."""
    shape = tf.shape(image)
    return tf.logical_and(tf.equal(shape[0], size), tf.equal(shape[1], size))


def _resized(image, size):
    """One image resized (antialiased) to SIZE x SIZE, as float32."""
    return tf.image.resize(tf.cast(image, tf.float32), (size, size), antialias=True)


def resize_if_needed(image, size):
    """One image -> float32 [size, size, 3], resized (antialiased) only if needed."""
    image = tf.cond(_has_size(image, size), lambda: tf.cast(image, tf.float32),
                    lambda: _resized(image, size))
    return tf.ensure_shape(image, [size, size, 3])


def sized_uint8(image, size):
    """One image -> uint8 [size, size, 3]: unchanged if it has that size, else
    resized (antialiased) and rounded to the nearest pixel value.

    The training pipeline applies it before its cache, so that each epoch
    reads images ready to batch (a quarter of float32's memory)."""
    image = tf.cond(_has_size(image, size), lambda: tf.saturate_cast(image, tf.uint8),
                    lambda: tf.saturate_cast(tf.round(_resized(image, size)), tf.uint8))
    return tf.ensure_shape(image, [size, size, 3])


def augment_small_batch(images, seed, convention=DEFAULT_CONVENTION):
    """CIFAR recipe on a batch [B, S, S, 3]: pad 4, random crop, horizontal flip.

    ``images``: uint8 or [0, 255] floats; the crop and flip move pixels in
    that dtype (uint8: a quarter of float32's bytes), then they are
    normalised. ``seed``: a stateless seed pair for the whole batch. Returns
    float32 images in the input CONVENTION.
    """
    images = tf.convert_to_tensor(images)
    batch, size = tf.shape(images)[0], images.shape[1]
    offsets = tf.random.stateless_uniform([batch, 2], seed, 0, 2 * PAD + 1, dtype=tf.int32)
    flips = tf.random.stateless_uniform([batch], seed[::-1], 0, 2, dtype=tf.int32) > 0
    padded = tf.pad(images, [[0, 0], [PAD, PAD], [PAD, PAD], [0, 0]])
    window = tf.range(size)
    rows = offsets[:, :1] + window
    # A mirrored crop reads its columns right to left.
    cols = offsets[:, 1:] + tf.where(flips[:, None], window[::-1], window)
    cropped = tf.gather(tf.gather(padded, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)
    return preprocessing.normalize(cropped, convention)


def augment_large(image, size, seed):
    """ImageNet recipe: random resized crop (scale 0.08-1, ratio 3/4-4/3), flip."""
    box_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=box_seed, min_object_covered=0.0, aspect_ratio_range=CROP_RATIO,
        area_range=CROP_SCALE, max_attempts=10, use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, crop_size)
    image = tf.image.resize(tf.cast(image, tf.float32), (size, size), antialias=True)
    return _random_flip(tf.clip_by_value(image, 0.0, 255.0), flip_seed)


def _random_flip(image, seed):
    flip = tf.random.stateless_uniform([], seed, 0, 2, dtype=tf.int32)
    return tf.cond(flip > 0, lambda: tf.image.flip_left_right(image), lambda: image)


def augment(image, image_size, seed, convention=DEFAULT_CONVENTION):
    """Training augmentation of one uint8 image -> float32 [S, S, 3] in the
    input CONVENTION.

    Small sizes: resize if needed, pad 4, random crop, flip; larger: random
    resized crop and flip. ``seed``: a stateless seed pair.
    """
    size = int(image_size)
    if preprocessing.is_small(size):
        return augment_small_batch(resize_if_needed(image, size)[None], seed, convention)[0]
    return preprocessing.normalize(tf.ensure_shape(augment_large(image, size, seed),
                                                   [size, size, 3]), convention)
