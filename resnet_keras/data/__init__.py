"""Image classification datasets (TFDS or image folders) and tf.data pipelines.

:func:`load_dataset` returns decoded ``(uint8 image [H, W, 3], int64 label)``
splits; :func:`train_pipeline` and :func:`eval_pipeline` turn a split into
batches of normalised float32 images; :func:`distribute` hands per-replica
batches to a ``tf.distribute`` strategy.

Images that cannot be read or decoded are skipped, never fatal; each is
counted once in :attr:`Dataset.skipped_images`, however many passes meet it.
A training stream whose every image fails raises instead of waiting forever
(:meth:`Dataset.reading` turns that into a one-line ValueError and keeps the
image decoders' own stderr lines out of sight).

A dataset spec is a TFDS name (``cifar10``, ``imagenette/160px``) or an image
folder ``folder:PATH`` laid out as ``PATH/<split>/<class>/*.{jpg,jpeg,png}``.
With a seed, the training stream is a pure function of (seed, position), on
any number of threads, replicas or workers, and a resumed run sees it from
where it stopped.

The modules: :mod:`~resnet_keras.data.datasets` (``--dataset`` values and
:class:`Dataset`), :mod:`~resnet_keras.data.folders` (image folders),
:mod:`~resnet_keras.data.tfds_source` (TFDS), :mod:`~resnet_keras.data.decoding`
(decoding and skipped images), :mod:`~resnet_keras.data.decoder_messages`
(the decoders' stderr lines), :mod:`~resnet_keras.data.augmentation`,
:mod:`~resnet_keras.data.pipelines` (tf.data and distribution) and
:mod:`~resnet_keras.data.archives` (the offline CIFAR-10 copy). A setting is
changed in the module that reads it (``resnet_keras.data.datasets.PROBE_LIMIT``).
"""
from resnet_keras.data.archives import (CACHE_DIR, default_cifar10_archive,
                                        extract_image_folder, extract_subset, local_cifar10)
from resnet_keras.data.augmentation import (CROP_RATIO, CROP_SCALE, PAD, augment,
                                            augment_large, augment_small_batch,
                                            resize_if_needed, sized_uint8)
from resnet_keras.data.datasets import (EVAL_SPLITS, FOLDER_PREFIX, Dataset, DatasetSpec,
                                        load_dataset, parse_dataset_spec)
from resnet_keras.data.decoding import (EXAMPLES_SHOWN, SkippedImages, decode_image,
                                        read_and_decode_image, skip_undecodable)
from resnet_keras.data.folders import IMAGE_EXTENSIONS, FolderSplit, read_image_folder
from resnet_keras.data.pipelines import (AUTOTUNE, EMPTY_PASS, SHUFFLE_BUFFER_BYTES,
                                         check_batch_size, distribute, eval_pipeline,
                                         shuffle_buffer_size, train_pipeline)
from resnet_keras.data.tfds_source import tfds

__all__ = [
    "AUTOTUNE", "CACHE_DIR", "CROP_RATIO", "CROP_SCALE", "EMPTY_PASS", "EVAL_SPLITS",
    "EXAMPLES_SHOWN", "FOLDER_PREFIX", "IMAGE_EXTENSIONS", "PAD", "SHUFFLE_BUFFER_BYTES",
    "Dataset", "DatasetSpec", "FolderSplit", "SkippedImages", "augment", "augment_large",
    "augment_small_batch", "check_batch_size", "decode_image", "default_cifar10_archive",
    "distribute", "eval_pipeline", "extract_image_folder", "extract_subset", "load_dataset",
    "local_cifar10", "parse_dataset_spec", "read_and_decode_image", "read_image_folder",
    "resize_if_needed", "shuffle_buffer_size", "sized_uint8", "skip_undecodable", "tfds",
    "train_pipeline",
]
