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

An image folder (``folder:PATH``) has the layout and example order of
``tfds.folder_dataset.ImageFolder``: ``PATH/<split>/<class>/*.{jpg,jpeg,png}``,
classes sorted by name over all splits; entries whose names start with a dot
(``.ipynb_checkpoints``, ``._x.jpg``) are not part of it, and entries that
are not regular files (a named pipe called ``x.jpg``) are never opened and
count as unreadable images.

With a seed, the training stream is a pure function of (seed, position):
the order of epoch ``e`` comes from a shuffle seeded with (seed, e), and the
augmentation of the element at stream position ``p`` from stateless random
ops seeded with (seed, p). Identical seeds give identical batches on any
number of threads, replicas or workers, and a resumed run sees the stream
from where it stopped.
"""
import contextlib
import dataclasses
import difflib
import os
import random
import socket
import stat
import sys
import tarfile
import tempfile
from typing import Dict, List, Optional

import numpy as np
import tensorflow as tf

from resnet_keras import decoder_messages, errors, preprocessing

AUTOTUNE = tf.data.AUTOTUNE
FOLDER_PREFIX = "folder:"
EVAL_SPLITS = ("test", "validation", "val")
PAD = 4
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
SHUFFLE_BUFFER_BYTES = 256 * 2**20
NATIVE_SIZE_PROBES = 8
# At load time, the first images of each split are decoded until
# NATIVE_SIZE_PROBES succeed; a split of at most PROBE_LIMIT images of which
# none decodes is an error then, before any training.
PROBE_LIMIT = 10_000
CACHE_DIR = "~/.cache/resnet_keras"
# The files an image folder's class folders are read for (tfds ImageFolder's).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# In the error of a training stream whose data yields no image at all.
EMPTY_PASS = "a whole pass over the training data yielded no image"
# Undecodable images named in messages.
EXAMPLES_SHOWN = 3


@dataclasses.dataclass
class DatasetSpec:
    """A parsed ``--dataset`` value: a TFDS name or an image folder."""

    kind: str  # "tfds" or "folder"
    name: str  # TFDS name (with config) or the folder path

    def __str__(self):
        return self.name if self.kind == "tfds" else FOLDER_PREFIX + self.name


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
            raise ValueError(self._nothing_decoded(decoder_messages.count() - hidden)) from None
        hidden = decoder_messages.count() - hidden
        if hidden:
            print(f"note: the image decoders printed {hidden} message(s) about damaged "
                  f"images of {self.spec}; they were hidden", file=sys.stderr)

    def _nothing_decoded(self, hidden):
        return _nothing_decoded(self.skipped["train"], self.spec, hidden)

    def default_image_size(self):
        """The native size for small (CIFAR-like) images, else 224."""
        if self.native_size and preprocessing.is_small(self.native_size):
            return self.native_size
        return 224


# --------------------------------------------------------------------------
# Loading


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
    splits = _subfolders(root)
    if "train" not in splits:
        raise ValueError(
            f"dataset folder {root!r} has no train/ split folder "
            f"(found: {', '.join(splits) or 'none'}; expected train and test or val)")
    if not _subfolders(os.path.join(root, "train")):
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
    builder = _tfds_builder(parsed.name, data_dir)
    image_key, label_key = _classification_keys(builder, str(parsed))
    _prepare(builder, parsed.name)
    splits = list(builder.info.splits.keys())
    if "train" not in splits:
        raise ValueError(
            f"dataset {str(parsed)!r} has no train split (splits: {', '.join(splits)})")
    eval_split = _pick_eval_split(str(parsed), splits, eval_split)
    sizes = {split: builder.info.splits[split].num_examples for split in ("train", eval_split)}
    raw = {split: _encoded_split(builder, split, image_key, label_key) for split in sizes}
    return _dataset(parsed, list(builder.info.features[label_key].names), raw, sizes,
                    eval_split, builder.info.features[image_key].shape, decode_image)


def _load_folder(parsed, eval_split):
    root, spec = parsed.name, str(parsed)
    splits, class_names = read_image_folder(root)
    if "train" not in splits:
        raise ValueError(
            f"dataset folder {root!r} has no train/ split with class folders "
            "(expected train/<class>/*.jpg)")
    eval_split = _pick_eval_split(spec, list(splits), eval_split)
    index = {name: i for i, name in enumerate(class_names)}
    raw, sizes, paths = {}, {}, {}
    for split in ("train", eval_split):
        examples = splits[split]
        if not examples.paths:
            raise ValueError(_no_images_message(root, split, examples))
        regular = [_is_regular_file(path) for path in examples.paths]
        labels = [index[label] for label in examples.labels]
        raw[split] = tf.data.Dataset.from_tensor_slices(
            (examples.paths, regular, tf.constant(labels, tf.int64)))
        sizes[split] = len(examples.paths)
        paths[split] = [os.path.relpath(path, root) for path in examples.paths]
    return _dataset(parsed, class_names, raw, sizes, eval_split, (None, None, 3),
                    read_and_decode_image, paths)


def _dataset(parsed, class_names, raw, sizes, eval_split, image_shape, decode, paths=None):
    """The :class:`Dataset` of encoded splits RAW ({split: (*encoded, label)})."""
    trackers = {split: SkippedImages(split, sizes[split], (paths or {}).get(split))
                for split in raw}
    decoded = {split: skip_undecodable(raw[split], trackers[split], decode) for split in raw}
    shapes = {split: _probe(raw[split], decode, trackers[split], str(parsed)) for split in raw}
    native = _native_size(image_shape, shapes["train"])
    return Dataset(
        spec=str(parsed), class_names=class_names, train=decoded["train"],
        eval=decoded[eval_split], num_train=sizes["train"], num_eval=sizes[eval_split],
        eval_split=eval_split, native_size=native, skipped=trackers)


def _probe(encoded, decode, tracker, spec):
    """Shapes of the first few images of a split that decode; ValueError if none
    does and the probe saw the whole split."""
    hidden = decoder_messages.count()
    shapes = encoded.take(PROBE_LIMIT).map(
        lambda *example: tf.shape(decode(*example[:-1]))[:2],
        num_parallel_calls=AUTOTUNE, deterministic=True).ignore_errors()
    with decoder_messages.hidden():
        found = [tuple(shape.numpy()) for shape in shapes.take(NATIVE_SIZE_PROBES)]
    if found or tracker.size > PROBE_LIMIT:
        return found
    tracker.flags.assign(tf.ones([tracker.size], tf.int32))
    raise ValueError(_nothing_decoded(tracker, spec, decoder_messages.count() - hidden))


def _nothing_decoded(tracker, spec, hidden):
    """One line: no image of TRACKER's split could be read or decoded."""
    note = f"{hidden} decoder message(s) hidden; " if hidden else ""
    examples = ", ".join(tracker.examples(2)) or "none recorded"
    return (f"none of the {tracker.size} {tracker.split} images of {spec} could be read or "
            f"decoded ({note}e.g. {examples}); replace or remove them")


@dataclasses.dataclass
class FolderSplit:
    """One split of an image folder: image paths and their class names, in order."""

    classes: List[str]  # the split's class folders, sorted
    paths: List[str]
    labels: List[str]
    other_files: List[str]  # files in class folders that are not images, sorted


def read_image_folder(root):
    """``({split: FolderSplit}, class names)`` of the image folder ROOT.

    The layout and order are those of ``tfds.folder_dataset.ImageFolder``:
    splits are the subfolders holding class folders; each split lists its
    classes' images sorted, then shuffled with ``random.Random(split)``; the
    class names are sorted over all splits. Names starting with a dot are
    left out at every level.
    """
    splits, classes = {}, set()
    for split in _subfolders(root):
        split_dir = os.path.join(root, split)
        names = _subfolders(split_dir)
        if not names:
            continue
        classes.update(names)
        examples, others = [], []
        for name in names:
            images, rest = _image_files(os.path.join(split_dir, name))
            examples += [(path, name) for path in images]
            others += rest
        random.Random(split).shuffle(examples)
        splits[split] = FolderSplit(names, [path for path, _ in examples],
                                    [label for _, label in examples], sorted(others))
    return splits, sorted(classes)


def _image_files(folder):
    """(image paths, other file paths) of FOLDER, sorted, dot-names left out."""
    images, others = [], []
    for name in sorted(os.listdir(folder)):
        if name.startswith("."):
            continue
        path = os.path.join(folder, name)
        if name.lower().endswith(IMAGE_EXTENSIONS):
            images.append(path)
        elif not os.path.isdir(path):
            others.append(path)
    return images, others


def _is_regular_file(path):
    """Whether PATH is a regular file (following links); a named pipe, a device or
    a folder called ``x.jpg`` is not, and is never opened."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _no_images_message(root, split, examples):
    classes = _listing(examples.classes)
    found = ""
    if examples.other_files:
        names = [os.path.relpath(p, os.path.join(root, split)) for p in examples.other_files]
        found = f"; other files found: {_listing(names)}"
    return (f"split {split!r} of dataset folder {root!r} has no images: its class folders "
            f"{classes} hold no {', '.join('*' + e for e in IMAGE_EXTENSIONS)} files{found}")


def _listing(names, limit=10):
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def tfds():
    """tensorflow_datasets, imported on first use (it is slow to import)."""
    import tensorflow_datasets

    return tensorflow_datasets


def _subfolders(path):
    return sorted(
        name for name in os.listdir(path)
        if os.path.isdir(os.path.join(path, name)) and not name.startswith("."))


def _tfds_builder(name, data_dir):
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
    lib = tfds()
    try:
        builder = lib.builder(name, data_dir=data_dir)
    except (lib.core.registered.DatasetNotFoundError, ValueError):
        base, _, config = name.partition("/")
        configs = _configs(base) if config else None
        if configs is not None:
            raise ValueError(
                f"unknown config {config!r} of TFDS dataset {base!r}; choices: "
                f"{', '.join(configs) or f'none (use {base!r} alone)'}") from None
        raise ValueError(
            f"unknown dataset {name!r}; expected folder:PATH or a TFDS image "
            f"classification dataset{_suggest(name)}") from None
    return builder


def _configs(name):
    """Config names of a TFDS dataset, or None if there is no such dataset."""
    try:
        return [config.name for config in tfds().builder_cls(name).BUILDER_CONFIGS]
    except Exception:  # unknown dataset
        return None


def _prepare(builder, name):
    """Download and prepare a TFDS dataset unless it is already prepared."""
    if _is_prepared(builder):
        return
    hint = "pass --data-dir with a prepared copy or use folder:PATH"
    if not _online():
        raise ValueError(
            f"TFDS dataset {name!r} is not prepared in {builder.data_dir!r} and there is "
            f"no network to download it; {hint}")
    try:
        builder.download_and_prepare()
    except Exception as err:  # download refused, manual download needed, disk full, ...
        raise ValueError(
            f"TFDS dataset {name!r} is not prepared in {builder.data_dir!r} and could "
            f"not be downloaded ({errors.first_line(err)}); {hint}") from None


def _online(host="storage.googleapis.com", timeout=5.0):
    """Whether the TFDS download host is reachable (assumed so behind a proxy)."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY")):
        return True
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _is_prepared(builder):
    check = getattr(builder, "is_prepared", None)
    if check is not None:
        return check()
    return tf.io.gfile.exists(os.path.join(builder.data_dir, "dataset_info.json"))


def _suggest(name):
    try:
        known = tfds().list_builders(with_community_datasets=False)
    except Exception:  # listing is best effort
        return " (e.g. cifar10, imagenette/160px)"
    close = difflib.get_close_matches(name.split("/")[0], known, n=3)
    return f" (did you mean: {', '.join(close)}?)" if close else " (e.g. cifar10, imagenette/160px)"


def _classification_keys(builder, spec):
    lib = tfds()
    keys = builder.info.supervised_keys
    features = builder.info.features
    ok = (isinstance(keys, (tuple, list)) and len(keys) == 2
          and all(isinstance(k, str) and k in features for k in keys)
          and isinstance(features[keys[0]], lib.features.Image)
          and isinstance(features[keys[1]], lib.features.ClassLabel))
    if not ok:
        raise ValueError(
            f"dataset {spec!r} is not an image classification dataset "
            f"(supervised keys {keys!r}; expected an Image and a ClassLabel)")
    return keys


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


def extract_image_folder(archive, cache_dir=CACHE_DIR):
    """Extract an image-folder tarball into CACHE_DIR once; return the folder.

    The archive's single top folder (e.g. ``cifar10_jpeg/``) is returned as
    an absolute path; later calls reuse it. Extraction goes to a temporary
    folder first, so an interrupted one is never mistaken for a complete copy.
    """
    cache_dir = os.path.expanduser(cache_dir)
    with tarfile.open(archive, "r:*") as tar:
        top = tar.next().name.split("/")[0]
        target = os.path.join(cache_dir, top)
        if os.path.isdir(target):
            return target
        os.makedirs(cache_dir, exist_ok=True)
        scratch = tempfile.mkdtemp(prefix=".extract-", dir=cache_dir)
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(scratch, **safe)
    os.replace(os.path.join(scratch, top), target)
    os.rmdir(scratch)
    return target


def extract_subset(archive, dest, per_class_train, per_class_test):
    """Copy the first N images per class of an image-folder tarball into DEST.

    The archive holds ``TOP/{train,test}/<class>/<file>``; DEST gets
    ``DEST/{train,test}/<class>/<file>`` (a ``folder:`` dataset). Only the
    wanted members are written, so small subsets of CIFAR-10 take seconds.
    Returns DEST.
    """
    wanted = {"train": per_class_train, "test": per_class_test}
    counts = {}
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 4 or parts[1] not in wanted:
                continue
            _, split, label, filename = parts
            if counts.get((split, label), 0) >= wanted[split]:
                continue
            counts[(split, label)] = counts.get((split, label), 0) + 1
            out_dir = os.path.join(dest, split, label)
            os.makedirs(out_dir, exist_ok=True)
            with tar.extractfile(member) as src, \
                    open(os.path.join(out_dir, filename), "wb") as out:
                out.write(src.read())
    return dest


def default_cifar10_archive():
    """``$RESNET_KERAS_SHARED/datasets/cifar10_jpeg.tar.gz`` (default: ``../shared``
    beside the repository)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shared = os.environ.get("RESNET_KERAS_SHARED", os.path.join(os.path.dirname(repo), "shared"))
    return os.path.join(shared, "datasets", "cifar10_jpeg.tar.gz")


def local_cifar10(archive=None, cache_dir=CACHE_DIR):
    """``folder:`` spec of the offline CIFAR-10 JPEG copy, extracted on first use.

    ``archive`` defaults to ``$RESNET_KERAS_SHARED/datasets/cifar10_jpeg.tar.gz``
    (``RESNET_KERAS_SHARED`` defaults to ``../shared`` beside the repository).
    """
    archive = archive or default_cifar10_archive()
    if not os.path.isfile(archive):
        raise ValueError(f"CIFAR-10 archive {archive!r} not found; pass its path, or use "
                         "the TFDS dataset cifar10")
    return FOLDER_PREFIX + extract_image_folder(archive, cache_dir)


# --------------------------------------------------------------------------
# Decoding, with undecodable images skipped and counted


def decode_image(encoded):
    """Encoded JPEG / PNG / GIF / BMP bytes -> uint8 [H, W, 3] (gray and RGBA too)."""
    image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)
    return tf.ensure_shape(image, [None, None, 3])


def _encoded_split(builder, split, image_key, label_key):
    """The split as (encoded image bytes, int64 label), in the builder's order."""
    skip = tfds().decode.SkipDecoding()
    raw = builder.as_dataset(split=split, shuffle_files=False, decoders={image_key: skip})
    return raw.map(lambda ex: (ex[image_key], tf.cast(ex[label_key], tf.int64)))


def read_and_decode_image(path, regular):
    """An image file -> uint8 [H, W, 3]; an error (never a read) unless REGULAR."""
    encoded = tf.cond(regular, lambda: tf.io.read_file(path), lambda: tf.constant(b""))
    return decode_image(encoded)


def skip_undecodable(encoded, skipped, decode=decode_image):
    """(*encoded, label) -> (uint8 image, label), skipping images that fail to decode.

    ``decode(*encoded)`` makes the image. Failures are dropped with
    ``ignore_errors``; the gaps they leave in the element indices are flagged
    in ``skipped`` (a :class:`SkippedImages`; a sentinel closes the last gap).
    """
    indexed = encoded.enumerate().map(
        lambda i, example: (i, decode(*example[:-1]), example[-1]),
        num_parallel_calls=AUTOTUNE, deterministic=True).ignore_errors()
    sentinel = tf.data.Dataset.from_tensors(
        (tf.constant(-1, tf.int64), tf.zeros([1, 1, 3], tf.uint8), tf.constant(-1, tf.int64)))
    end = tf.constant(skipped.size, tf.int64)

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

    counted = indexed.concatenate(sentinel).scan(tf.constant(0, tf.int64), count_gap)
    return counted.filter(real).map(drop_index)


# --------------------------------------------------------------------------
# Augmentation


def resize_if_needed(image, size):
    """One image -> float32 [size, size, 3], resized (antialiased) only if needed."""
    shape = tf.shape(image)
    same = tf.logical_and(tf.equal(shape[0], size), tf.equal(shape[1], size))
    image = tf.cond(same, lambda: tf.cast(image, tf.float32),
                    lambda: tf.image.resize(tf.cast(image, tf.float32), (size, size),
                                            antialias=True))
    return tf.ensure_shape(image, [size, size, 3])


def augment_small_batch(images, seed):
    """CIFAR recipe on a batch [B, S, S, 3]: pad 4, random crop, horizontal flip.

    ``seed``: a stateless seed pair for the whole batch. Returns normalised
    float32 images.
    """
    images = tf.cast(images, tf.float32)
    batch, size = tf.shape(images)[0], images.shape[1]
    offsets = tf.random.stateless_uniform([batch, 2], seed, 0, 2 * PAD + 1, dtype=tf.int32)
    flips = tf.random.stateless_uniform([batch], seed[::-1], 0, 2, dtype=tf.int32) > 0
    padded = tf.pad(images, [[0, 0], [PAD, PAD], [PAD, PAD], [0, 0]])
    window = tf.range(size)
    rows = offsets[:, :1] + window
    cols = offsets[:, 1:] + window
    cropped = tf.gather(tf.gather(padded, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)
    flipped = tf.where(flips[:, None, None, None], tf.reverse(cropped, axis=[2]), cropped)
    return preprocessing.normalize(flipped)


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


def augment(image, image_size, seed):
    """Training augmentation of one uint8 image -> normalised float32 [S, S, 3].

    Small sizes: resize if needed, pad 4, random crop, flip; larger: random
    resized crop and flip. ``seed``: a stateless seed pair.
    """
    size = int(image_size)
    if preprocessing.is_small(size):
        return augment_small_batch(resize_if_needed(image, size)[None], seed)[0]
    return preprocessing.normalize(tf.ensure_shape(augment_large(image, size, seed),
                                                   [size, size, 3]))


# --------------------------------------------------------------------------
# Pipelines


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
                   input_context=None):
    """Endless, shuffled, augmented batches of (float32 images, int64 labels).

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
    base = ds.cache() if cache else ds

    def one_epoch(epoch):
        shuffled = _seeded_shuffle(base, buffer, _epoch_seed(seed, epoch))
        skip = tf.where(tf.equal(epoch, first_epoch), tf.constant(offset, tf.int64), 0)
        return shuffled.skip(skip)

    stream = _fail_if_empty(ds, tf.data.Dataset.range(first_epoch, 2**62).flat_map(one_epoch))
    stream = stream.enumerate(start=consumed)
    per_replica, stream = _slice_for_pipeline(stream, batch_size, input_context)
    return _augmented_batches(stream, int(image_size), per_replica, seed,
                              deterministic).prefetch(AUTOTUNE)


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


def _augmented_batches(stream, size, batch, seed, deterministic):
    """(position, (image, label)) -> augmented batches; randomness from (seed, position).

    Small images are resized per image and augmented per batch (vectorised,
    seeded by the position of the batch's first image); large ones are
    cropped and resized per image.
    """
    def position_seed(position):
        return tf.stack([tf.constant(seed, tf.int64), position])

    if not preprocessing.is_small(size):
        stream = stream.map(
            lambda position, example: (augment(example[0], size, position_seed(position)),
                                       example[1]),
            num_parallel_calls=AUTOTUNE, deterministic=deterministic)
        return stream.batch(batch, drop_remainder=True)
    stream = stream.map(
        lambda position, example: (position, resize_if_needed(example[0], size), example[1]),
        num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    stream = stream.batch(batch, drop_remainder=True)
    return stream.map(
        lambda positions, images, labels: (
            augment_small_batch(images, position_seed(positions[0])), labels),
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


def eval_pipeline(ds, image_size, batch_size, cache=False, *, input_context=None):
    """Batches of (float32 images, labels) for evaluation: resize/centre crop, no shuffle.

    With an ``input_context`` the split is sharded across input pipelines and
    ``batch_size`` (global) is split across replicas; the last batch may be short.
    """
    if input_context is not None:
        if input_context.num_input_pipelines > 1:
            ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    if cache:
        ds = ds.cache()
    ds = ds.map(lambda image, label: (preprocessing.eval_transform(image, image_size), label),
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
