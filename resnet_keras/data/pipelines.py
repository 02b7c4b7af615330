"""tf.data pipelines: endless shuffled, augmented training batches, evaluation
batches, and their distribution over the replicas of a ``tf.distribute`` strategy.

With a seed, the training stream is a pure function of (seed, position):
the order of epoch ``e`` comes from a shuffle seeded with (seed, e), and the
augmentation of the element at stream position ``p`` from stateless random
ops seeded with (seed, p). Identical seeds give identical batches on any
number of threads, replicas or workers, and a resumed run sees the stream
from where it stopped. A training stream whose every image fails raises
(its message holds :data:`EMPTY_PASS`) instead of waiting forever.
"""
import random

import tensorflow as tf

from resnet_keras import preprocessing
from resnet_keras.conventions import DEFAULT_CONVENTION
from resnet_keras.data.augmentation import augment, augment_small_batch, sized_uint8

AUTOTUNE = tf.data.AUTOTUNE
SHUFFLE_BUFFER_BYTES = 256 * 2**20
# In the error of a training stream whose data yields no image at all.
EMPTY_PASS = "a whole pass over the training data yielded no image"


def shuffle_buffer_size(num_examples, native_size):
    """Shuffle buffer: the whole split for small images, else ~256 MiB of them."""
    side = native_size or 400
    fits = max(1024, SHUFFLE_BUFFER_BYTES // (side * side * 3))
    return int(min(num_examples, fits)) if num_examples else fits


def _seeded_shuffle(ds, buffer, seed):
    """``ds.shuffle`` with a tensor seed, independent of the global random seed.

    The graph-level seed is cleared while the op is created, so the order is
    a function of ``seed`` alone (``tf.random.set_seed`` has no effect on it).
    """
    graph = tf.compat.v1.get_default_graph()
    saved = graph.seed
    graph.seed = None
    try:
        return ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=False)
    finally:
        graph.seed = saved


def _epoch_seed(seed, epoch):
    return tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(epoch, tf.int64)


def train_pipeline(ds, image_size, batch_size, seed=None, cache=False, *,
                   num_examples=None, start_step=0, shuffle_buffer=None,
                   input_context=None, convention=DEFAULT_CONVENTION):
    """Endless, shuffled, augmented batches of (float32 images, int64 labels).

    Images come out in the input CONVENTION ("torch", "caffe" or "tf"; see
    :mod:`resnet_keras.conventions`).

    ``batch_size`` is the global batch. With an ``input_context`` (from
    :func:`distribute`) this pipeline yields only its replicas' slices of each
    global batch, each of ``batch_size / replicas`` images, so the union over
    all pipelines is exactly the single-pipeline stream. ``start_step`` skips
    that many global batches (to resume); it needs ``num_examples``.
    """
    deterministic = seed is not None
    seed = random.SystemRandom().randrange(2**31) if seed is None else int(seed)
    num_examples = _num_examples(ds, num_examples, start_step)
    consumed = int(start_step) * int(batch_size)
    first_epoch, offset = divmod(consumed, num_examples) if num_examples else (0, 0)
    buffer = shuffle_buffer or shuffle_buffer_size(
        num_examples, image_size if preprocessing.is_small(image_size) else None)
    if preprocessing.is_small(image_size):
        ds = ds.map(lambda image, label: (sized_uint8(image, int(image_size)), label),
                    num_parallel_calls=AUTOTUNE, deterministic=True)
    base = ds.cache() if cache else ds

    def one_epoch(epoch):
        shuffled = _seeded_shuffle(base, buffer, _epoch_seed(seed, epoch))
        skip = tf.where(tf.equal(epoch, first_epoch), tf.constant(offset, tf.int64), 0)
        return shuffled.skip(skip)

    stream = _fail_if_empty(ds, tf.data.Dataset.range(first_epoch, 2**62).flat_map(one_epoch))
    stream = stream.enumerate(start=consumed)
    per_replica, stream = _slice_for_pipeline(stream, batch_size, input_context)
    return _augmented_batches(stream, int(image_size), per_replica, seed,
                              deterministic, convention).prefetch(AUTOTUNE)


def _fail_if_empty(ds, stream):
    """STREAM if DS yields an element; else one InvalidArgumentError (its message
    holds EMPTY_PASS), then the end.

    An endless stream of empty epochs would never yield a batch. DS is read
    up to its first element (all of it when none arrives) before STREAM starts.
    """
    first = ds.take(1).map(lambda *example: tf.constant(True))
    nonempty = first.concatenate(tf.data.Dataset.from_tensors(False)).take(1)

    def fail(*example):
        with tf.control_dependencies([tf.debugging.Assert(tf.constant(False), [EMPTY_PASS])]):
            example = tf.nest.map_structure(tf.identity, example)
        return example if len(example) > 1 else example[0]

    failure = tf.data.Dataset.from_tensors(_placeholder(stream.element_spec)).map(fail)
    none, everything = tf.constant(0, tf.int64), tf.constant(-1, tf.int64)
    return nonempty.flat_map(lambda ok: stream.take(tf.where(ok, everything, none)).concatenate(
        failure.take(tf.where(ok, none, tf.constant(1, tf.int64)))))


def _placeholder(spec):
    """A value of the structure SPEC (unknown dimensions 0), never yielded."""
    def value(tensor_spec):
        shape = [0 if dim is None else dim for dim in tensor_spec.shape]
        if tensor_spec.dtype == tf.string:
            return tf.fill(shape, "")
        return tf.zeros(shape, tensor_spec.dtype)

    return tf.nest.map_structure(value, spec)


def _augmented_batches(stream, size, batch, seed, deterministic, convention):
    """(position, (image, label)) -> augmented batches; randomness from (seed, position).

    Small images (already of SIZE, see :func:`sized_uint8`) are batched,
    then augmented per batch (vectorised, seeded by the position of the
    batch's first image); large ones are cropped and resized per image.
    """
    def position_seed(position):
        return tf.stack([tf.constant(seed, tf.int64), position])

    if not preprocessing.is_small(size):
        stream = stream.map(
            lambda position, example: (augment(example[0], size, position_seed(position),
                                               convention), example[1]),
            num_parallel_calls=AUTOTUNE, deterministic=deterministic)
        return stream.batch(batch, drop_remainder=True)
    stream = stream.batch(batch, drop_remainder=True)
    return stream.map(
        lambda positions, example: (
            augment_small_batch(example[0], position_seed(positions[0]), convention),
            example[1]),
        num_parallel_calls=AUTOTUNE, deterministic=deterministic)


def _num_examples(ds, num_examples, start_step):
    if num_examples:
        return int(num_examples)
    cardinality = int(ds.cardinality())
    if cardinality > 0:
        return cardinality
    if start_step:
        raise ValueError("train_pipeline needs num_examples to resume at start_step > 0")
    return 0


def _slice_for_pipeline(stream, batch_size, input_context):
    """Keep this input pipeline's contiguous share of every global batch."""
    if input_context is None or input_context.num_input_pipelines == 1:
        per_replica = (input_context.get_per_replica_batch_size(batch_size)
                       if input_context else batch_size)
        return per_replica, stream
    per_replica = input_context.get_per_replica_batch_size(batch_size)
    share = batch_size // input_context.num_input_pipelines
    pipeline = input_context.input_pipeline_id
    mine = stream.filter(lambda position, _: (position % batch_size) // share == pipeline)
    return per_replica, mine


def eval_pipeline(ds, image_size, batch_size, cache=False, *, input_context=None,
                  convention=DEFAULT_CONVENTION):
    """Batches of (float32 images, labels) for evaluation: resize/centre crop, no
    shuffle; images in the input CONVENTION.

    With an ``input_context`` the split is sharded across input pipelines and
    ``batch_size`` (global) is split across replicas; the last batch may be short.
    """
    if input_context is not None:
        if input_context.num_input_pipelines > 1:
            ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    if cache:
        ds = ds.cache()
    ds = ds.map(lambda image, label: (
        preprocessing.eval_transform(image, image_size, convention), label),
        num_parallel_calls=AUTOTUNE)
    return ds.batch(batch_size).prefetch(AUTOTUNE)


def check_batch_size(batch_size, num_replicas):
    """ValueError unless the global batch splits evenly across the replicas."""
    if int(batch_size) % int(num_replicas):
        raise ValueError(
            f"batch size {batch_size} is not divisible by the {num_replicas} replicas; "
            f"use a multiple of {num_replicas}")


def distribute(strategy, make_dataset, batch_size):
    """``make_dataset(input_context)`` -> per-replica batches on ``strategy``.

    ``batch_size`` is global; it must be divisible by the number of replicas.
    """
    check_batch_size(batch_size, strategy.num_replicas_in_sync)
    return strategy.distribute_datasets_from_function(make_dataset)
