"""Image decoding, with images that cannot be read or decoded skipped and counted.

:func:`skip_undecodable` drops the images that fail to decode and flags them
in a :class:`SkippedImages`, once per image however many passes meet it.
"""
import numpy as np
import tensorflow as tf

# Undecodable images named in messages.
EXAMPLES_SHOWN = 3


class SkippedImages:
    """The images of one split that could not be read or decoded.

    Each image counts once, however many passes over the split meet it (a
    flag per example, set by :func:`skip_undecodable`).
    """

    def __init__(self, split, size, names=None):
        self.split, self.size, self.names = split, int(size), names
        with tf.device("/cpu:0"):
            self.flags = tf.Variable(tf.zeros([self.size], tf.int32), trainable=False,
                                     name="skipped_images")

    def mark(self, begin, end):
        """Graph op: flag the examples at indices [begin, end) as skipped."""
        indices = tf.range(begin, tf.minimum(end, self.size))
        self.flags.scatter_update(tf.IndexedSlices(tf.ones_like(indices, tf.int32), indices))
        return tf.size(indices)

    @property
    def count(self):
        """Distinct examples of the split skipped so far."""
        return int(tf.reduce_sum(self.flags))

    def examples(self, limit=EXAMPLES_SHOWN):
        """Up to LIMIT skipped examples: file names for folders, else ``#index``."""
        indices = np.flatnonzero(self.flags.numpy())[:limit]
        if self.names is None:
            return [f"#{index}" for index in indices]
        return [self.names[index] for index in indices]

    def nothing_decoded(self, spec, hidden):
        """One line: no image of this split of SPEC could be read or decoded (HIDDEN:
        the decoder messages kept off stderr meanwhile)."""
        note = f"{hidden} decoder message(s) hidden; " if hidden else ""
        examples = ", ".join(self.examples(2)) or "none recorded"
        return (f"none of the {self.size} {self.split} images of {spec} could be read or "
                f"decoded ({note}e.g. {examples}); replace or remove them")


def decode_image(encoded):
    """Encoded JPEG / PNG / GIF / BMP bytes -> uint8 [H, W, 3] (gray and RGBA too)."""
    image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)
    return tf.ensure_shape(image, [None, None, 3])


def read_and_decode_image(path, regular):
    """An image file -> uint8 [H, W, 3]; an error (never a read) unless REGULAR."""
    encoded = tf.cond(regular, lambda: tf.io.read_file(path), lambda: tf.constant(b""))
    return decode_image(encoded)


def skip_undecodable(encoded, skipped, decode=decode_image, start=0, stop=None):
    """(*encoded, label) -> (uint8 image, label), skipping images that fail to decode.

    ``decode(*encoded)`` makes the image. Failures are dropped with
    ``ignore_errors``; the gaps they leave in the element indices are flagged
    in ``skipped`` (a :class:`SkippedImages`; a sentinel closes the last gap).
    ``start`` and ``stop`` keep the examples at indices [start, stop) of
    ENCODED (stop None: to the end), cut before decoding, so the examples
    outside are never read.
    """
    stop = skipped.size if stop is None else min(int(stop), skipped.size)
    start = min(int(start), stop)
    indexed = encoded.skip(start).take(stop - start).enumerate(start).map(
        lambda i, example: (i, decode(*example[:-1]), example[-1]),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors()
    sentinel = tf.data.Dataset.from_tensors(
        (tf.constant(-1, tf.int64), tf.zeros([1, 1, 3], tf.uint8), tf.constant(-1, tf.int64)))
    end = tf.constant(stop, tf.int64)

    def count_gap(expected, element):
        index, image, label = element
        position = tf.where(index < 0, tf.maximum(end, expected), index)
        marked = tf.cond(position > expected, lambda: skipped.mark(expected, position),
                         lambda: tf.constant(0, tf.int32))
        with tf.control_dependencies([marked]):
            return position + 1, (tf.identity(index), image, label)

    def real(index, image, label):
        return index >= 0

    def drop_index(index, image, label):
        return image, label

    counted = indexed.concatenate(sentinel).scan(tf.constant(start, tf.int64), count_gap)
    return counted.filter(real).map(drop_index)
