"""``--dataset`` values parsed and loaded: decoded splits and their skipped images.

:func:`load_dataset` returns a :class:`Dataset` of decoded ``(uint8 image
[H, W, 3], int64 label)`` splits, from TFDS or from an image folder
(``folder:PATH``, see :mod:`resnet_keras.data.folders`). At load time the
first images of each split are decoded until :data:`NATIVE_SIZE_PROBES`
succeed; a split of at most :data:`PROBE_LIMIT` images of which none decodes
is an error then, before any training.
"""
import contextlib
import dataclasses
import os
import sys
from typing import Callable, Dict, List, Optional

import tensorflow as tf

from resnet_keras import preprocessing
from resnet_keras.data import decoder_messages, folders, tfds_source
from resnet_keras.data.decoding import (EXAMPLES_SHOWN, SkippedImages, decode_image,
                                        read_and_decode_image, skip_undecodable)
from resnet_keras.data.pipelines import EMPTY_PASS

FOLDER_PREFIX = "folder:"
EVAL_SPLITS = ("test", "validation", "val")
NATIVE_SIZE_PROBES = 8
PROBE_LIMIT = 10_000


@dataclasses.dataclass
class DatasetSpec:
    """A parsed ``--dataset`` value: a TFDS name or an image folder."""

    kind: str  # "tfds" or "folder"
    name: str  # TFDS name (with config) or the folder path

    def __str__(self):
        return self.name if self.kind == "tfds" else FOLDER_PREFIX + self.name


@dataclasses.dataclass
class Dataset:
    """Decoded splits of an image classification dataset."""

    spec: str
    class_names: List[str]
    train: tf.data.Dataset
    eval: tf.data.Dataset
    num_train: int
    num_eval: int
    eval_split: str
    native_size: Optional[int]
    skipped: Dict[str, SkippedImages] = dataclasses.field(repr=False)
    slicer: Callable = dataclasses.field(repr=False)  # (start, stop) -> decoded train slice

    def train_slice(self, start=0, stop=None):
        """The decoded training images at indices [start, stop) of the split
        (stop None: to the end), cut before decoding: a held-out slice at the
        end reads none of the images before it, and a training part never
        reaches into it, whichever images fail to decode."""
        return self.slicer(start, stop)

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def skipped_images(self):
        """Distinct images of the train and eval splits found undecodable so far
        (each counts once, however many passes meet it)."""
        return sum(tracker.count for tracker in self.skipped.values())

    def skipped_report(self):
        """One line: how many images of which split are skipped, with examples;
        None while none is."""
        parts, examples = [], []
        for tracker in self.skipped.values():
            count = tracker.count
            if count:
                parts.append(f"{count} of {tracker.size} {tracker.split} images")
                examples += tracker.examples()
        if not parts:
            return None
        return (f"{' and '.join(parts)} of {self.spec} could not be read or decoded and "
                f"are skipped (e.g. {', '.join(examples[:EXAMPLES_SHOWN])})")

    @contextlib.contextmanager
    def reading(self):
        """A block that iterates this dataset's pipelines (a training run).

        The image decoders' own stderr lines are counted, not printed (one
        note at the end says how many); a training stream of which no image
        decodes raises ValueError (one line: the images found, none decoded)
        instead of ``tf.errors.InvalidArgumentError``.
        """
        hidden = decoder_messages.count()
        try:
            with decoder_messages.hidden():
                yield self
        except tf.errors.OpError as err:
            if EMPTY_PASS not in str(err):
                raise
            raise ValueError(self.skipped["train"].nothing_decoded(
                self.spec, decoder_messages.count() - hidden)) from None
        hidden = decoder_messages.count() - hidden
        if hidden:
            print(f"note: the image decoders printed {hidden} message(s) about damaged "
                  f"images of {self.spec}; they were hidden", file=sys.stderr)

    def default_image_size(self):
        """The native size for small (CIFAR-like) images, else 224."""
        if self.native_size and preprocessing.is_small(self.native_size):
            return self.native_size
        return 224


def parse_dataset_spec(spec):
    """``"cifar10"`` or ``"folder:PATH"`` -> :class:`DatasetSpec`.

    Folders are checked here (they exist and hold split folders); TFDS names
    are checked when loaded.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(
            f"dataset must be a TFDS name (e.g. cifar10) or folder:PATH, got {spec!r}")
    spec = spec.strip()
    if not spec.startswith(FOLDER_PREFIX):
        return DatasetSpec("tfds", spec)
    root = os.path.abspath(os.path.expanduser(spec[len(FOLDER_PREFIX):]))
    if not os.path.isdir(root):
        raise ValueError(f"dataset folder {root!r} does not exist (from {spec!r})")
    splits = folders.subfolders(root)
    if "train" not in splits:
        raise ValueError(
            f"dataset folder {root!r} has no train/ split folder "
            f"(found: {', '.join(splits) or 'none'}; expected train and test or val)")
    if not folders.subfolders(os.path.join(root, "train")):
        raise ValueError(
            f"dataset folder {os.path.join(root, 'train')!r} has no class folders "
            "(expected train/<class>/*.jpg)")
    return DatasetSpec("folder", root)


def load_dataset(spec, data_dir=None, eval_split=None):
    """Load a dataset by spec (see :func:`parse_dataset_spec`).

    ``eval_split``: the split to evaluate on; default ``test``, else
    ``validation`` or ``val``. Raises ValueError with one line naming the bad
    value and the choices for an unknown dataset, a bad folder, a missing or
    empty split or a dataset that is not image classification.
    """
    parsed = parse_dataset_spec(spec) if not isinstance(spec, DatasetSpec) else spec
    if parsed.kind == "folder":
        return _load_folder(parsed, eval_split)
    builder = tfds_source.tfds_builder(parsed.name, data_dir)
    image_key, label_key = tfds_source.classification_keys(builder, str(parsed))
    tfds_source.prepare(builder, parsed.name)
    splits = list(builder.info.splits.keys())
    if "train" not in splits:
        raise ValueError(
            f"dataset {str(parsed)!r} has no train split (splits: {', '.join(splits)})")
    eval_split = _pick_eval_split(str(parsed), splits, eval_split)
    sizes = {split: builder.info.splits[split].num_examples for split in ("train", eval_split)}
    raw = {split: tfds_source.encoded_split(builder, split, image_key, label_key)
           for split in sizes}
    return _dataset(parsed, list(builder.info.features[label_key].names), raw, sizes,
                    eval_split, builder.info.features[image_key].shape, decode_image)


def _load_folder(parsed, eval_split):
    root, spec = parsed.name, str(parsed)
    splits, class_names = folders.read_image_folder(root)
    if "train" not in splits:
        raise ValueError(
            f"dataset folder {root!r} has no train/ split with class folders "
            "(expected train/<class>/*.jpg)")
    eval_split = _pick_eval_split(spec, list(splits), eval_split)
    raw, sizes, paths = {}, {}, {}
    for split in ("train", eval_split):
        raw[split], paths[split] = folders.encoded_split(root, split, splits[split],
                                                         class_names)
        sizes[split] = len(paths[split])
    return _dataset(parsed, class_names, raw, sizes, eval_split, (None, None, 3),
                    read_and_decode_image, paths)


def _dataset(parsed, class_names, raw, sizes, eval_split, image_shape, decode, paths=None):
    """The :class:`Dataset` of encoded splits RAW ({split: (*encoded, label)})."""
    trackers = {split: SkippedImages(split, sizes[split], (paths or {}).get(split))
                for split in raw}
    decoded = {split: skip_undecodable(raw[split], trackers[split], decode) for split in raw}

    def slicer(start, stop):
        return skip_undecodable(raw["train"], trackers["train"], decode, start, stop)

    shapes = {split: _probe(raw[split], decode, trackers[split], str(parsed)) for split in raw}
    native = _native_size(image_shape, shapes["train"])
    return Dataset(
        spec=str(parsed), class_names=class_names, train=decoded["train"],
        eval=decoded[eval_split], num_train=sizes["train"], num_eval=sizes[eval_split],
        eval_split=eval_split, native_size=native, skipped=trackers, slicer=slicer)


def _probe(encoded, decode, tracker, spec):
    """Shapes of the first few images of a split that decode; ValueError if none
    does and the probe saw the whole split."""
    hidden = decoder_messages.count()
    shapes = encoded.take(PROBE_LIMIT).map(
        lambda *example: tf.shape(decode(*example[:-1]))[:2],
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors()
    with decoder_messages.hidden():
        found = [tuple(shape.numpy()) for shape in shapes.take(NATIVE_SIZE_PROBES)]
    if found or tracker.size > PROBE_LIMIT:
        return found
    tracker.flags.assign(tf.ones([tracker.size], tf.int32))
    raise ValueError(tracker.nothing_decoded(spec, decoder_messages.count() - hidden))


def _pick_eval_split(spec, splits, wanted):
    if wanted is not None:
        if wanted not in splits:
            raise ValueError(
                f"dataset {spec!r} has no split {wanted!r} (splits: {', '.join(splits)})")
        return wanted
    for name in EVAL_SPLITS:
        if name in splits:
            return name
    raise ValueError(
        f"dataset {spec!r} has no evaluation split (splits: {', '.join(splits)}; "
        f"expected one of {', '.join(EVAL_SPLITS)})")


def _native_size(shape, probed):
    """Square side of the dataset's images (declared, else of the PROBED shapes),
    or None when it varies."""
    height, width = shape[0], shape[1]
    if height is not None:
        return int(height) if height == width else None
    sizes = set(probed)
    if len(sizes) == 1:
        (height, width), = sizes
        return int(height) if height == width else None
    return None
