"""Image folders: ``PATH/<split>/<class>/*.{jpg,jpeg,png}``.

The layout and example order are those of ``tfds.folder_dataset.ImageFolder``;
entries whose names start with a dot (``.ipynb_checkpoints``, ``._x.jpg``)
are not part of a folder, and entries that are not regular files (a named
pipe called ``x.jpg``) are never opened and count as unreadable images.
"""
import dataclasses
import os
import random
import stat
from typing import List

import tensorflow as tf

# The files an image folder's class folders are read for (tfds ImageFolder's).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


@dataclasses.dataclass
class FolderSplit:
    """One split of an image folder: image paths and their class names, in order."""

    classes: List[str]  # the split's class folders, sorted
    paths: List[str]
    labels: List[str]
    other_files: List[str]  # files in class folders that are not images, sorted


def subfolders(path):
    """The sorted names of PATH's subfolders, dot-names left out."""
    return sorted(
        name for name in os.listdir(path)
        if os.path.isdir(os.path.join(path, name)) and not name.startswith("."))


def read_image_folder(root):
    """``({split: FolderSplit}, class names)`` of the image folder ROOT.

    The layout and order are those of ``tfds.folder_dataset.ImageFolder``:
    splits are the subfolders holding class folders; each split lists its
    classes' images sorted, then shuffled with ``random.Random(split)``; the
    class names are sorted over all splits. Names starting with a dot are
    left out at every level.
    """
    splits, classes = {}, set()
    for split in subfolders(root):
        split_dir = os.path.join(root, split)
        names = subfolders(split_dir)
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


def encoded_split(root, split, examples, class_names):
    """``(dataset, names)`` of one split of the folder ROOT.

    The dataset yields ``(path, is a regular file, int64 label)`` per image of
    EXAMPLES (a :class:`FolderSplit`), in order; NAMES are the images' paths
    relative to ROOT. ValueError (one line: the class folders and the other
    files found) when the split holds no image.
    """
    if not examples.paths:
        raise ValueError(_no_images_message(root, split, examples))
    index = {name: i for i, name in enumerate(class_names)}
    regular = [_is_regular_file(path) for path in examples.paths]
    labels = [index[label] for label in examples.labels]
    dataset = tf.data.Dataset.from_tensor_slices(
        (examples.paths, regular, tf.constant(labels, tf.int64)))
    return dataset, [os.path.relpath(path, root) for path in examples.paths]


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
