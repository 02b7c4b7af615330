"""Read an export the way TF Serving does, and classify image files with it
(``resnet-keras predict``)."""
import os

import tensorflow as tf

from resnet_keras.serving_layout import (LABELS_FILE, OUTPUTS, SAVED_MODEL_FILE,
                                         SERVING_BYTES, SERVING_DEFAULT, list_versions)


def resolve_export(path):
    """The SavedModel folder for PATH: a version folder, or the newest in a base."""
    if not os.path.isdir(path):
        raise ValueError(f"export dir {path!r} does not exist")
    if os.path.isfile(os.path.join(path, SAVED_MODEL_FILE)):
        return path
    versions = list_versions(path)
    if not versions:
        raise ValueError(
            f"no export found in {path!r}: expected {SAVED_MODEL_FILE} or integer "
            "version folders (write one with 'resnet-keras export')")
    newest = os.path.join(path, str(versions[-1]))
    if not os.path.isfile(os.path.join(newest, SAVED_MODEL_FILE)):
        raise ValueError(f"newest export {newest!r} is not a SavedModel (no {SAVED_MODEL_FILE})")
    return newest


def load_serving(version_dir):
    """Load a SavedModel with tag ``serve``, as TF Serving does."""
    try:
        return tf.saved_model.load(version_dir, tags=["serve"])
    except (OSError, RuntimeError, ValueError, tf.errors.OpError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot load SavedModel {version_dir!r}: {first}") from err


def get_signature(loaded, name):
    """The named serving signature; ValueError listing the ones present."""
    if name not in loaded.signatures:
        raise ValueError(
            f"export has no signature {name!r}; it has: {', '.join(sorted(loaded.signatures))}")
    return loaded.signatures[name]


def read_labels(version_dir, num_classes=None):
    """Class names from ``assets/labels.txt``, or None if the export has none.

    With NUM_CLASSES, a file with another number of lines (one name a line,
    in class-index order) raises ValueError naming the file and both counts.
    """
    labels_path = os.path.join(version_dir, "assets", LABELS_FILE)
    if not os.path.isfile(labels_path):
        return None
    try:
        with open(labels_path, encoding="utf-8") as f:
            labels = f.read().split("\n")
        if labels and not labels[-1]:
            labels.pop()  # the last line's newline
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read labels file {labels_path!r}: {err}") from None
    if num_classes is not None and len(labels) != num_classes:
        raise ValueError(
            f"labels file {labels_path!r} has {len(labels)} lines for a model with "
            f"{num_classes} classes; it needs one class name a line, in class-index order")
    return labels


def num_classes_of(signature):
    """The number of classes a serving signature's ``logits`` output has."""
    return int(signature.structured_outputs["logits"].shape[-1])


def _spec_text(spec):
    dims = ", ".join("?" if d is None else str(d) for d in spec.shape.as_list())
    return f"{spec.dtype.name} [{dims}]"


def describe_signatures(loaded):
    """One line per signature: named inputs and outputs with dtype and shape."""
    lines = []
    for name in sorted(loaded.signatures, key=lambda n: (n != SERVING_DEFAULT, n)):
        function = loaded.signatures[name]
        inputs = function.structured_input_signature[1]
        outputs = function.structured_outputs
        keys = [k for k in OUTPUTS if k in outputs] + sorted(set(outputs) - set(OUTPUTS))
        lines.append(
            f"{name}: "
            + ", ".join(f"{key} {_spec_text(spec)}" for key, spec in sorted(inputs.items()))
            + " -> "
            + ", ".join(f"{key} {_spec_text(outputs[key])}" for key in keys))
    return lines


# --------------------------------------------------------------------------
# Command line


def read_images(paths):
    """The bytes of each file; ValueError naming a missing or unreadable one."""
    blobs = []
    for path in paths:
        if os.path.isdir(path):
            raise ValueError(f"image {path!r} is a directory; pass image files "
                             f"(e.g. {os.path.join(path, '*.jpg')!r})")
        if not os.path.isfile(path):
            raise ValueError(f"image file {path!r} not found")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as err:
            raise ValueError(f"cannot read image file {path!r}: "
                             f"{err.strerror or err}") from None
        try:
            tf.io.decode_image(data, channels=3, expand_animations=False)
        except (tf.errors.InvalidArgumentError, ValueError):
            raise ValueError(
                f"cannot decode image {path!r}: expected a JPEG or PNG file") from None
        blobs.append(data)
    return blobs


def classify_files(export_dir, paths):
    """(version_dir, class names or None, outputs dict of numpy arrays) for image files."""
    version_dir = resolve_export(export_dir)
    blobs = read_images(paths)
    loaded = load_serving(version_dir)
    signature = get_signature(loaded, SERVING_BYTES)
    labels = read_labels(version_dir, num_classes_of(signature))
    outputs = signature(image_bytes=tf.constant(blobs, dtype=tf.string))
    return version_dir, labels, {k: v.numpy() for k, v in outputs.items()}


def top_k(probabilities, k, labels=None):
    """[(class name, probability)] of the K most likely classes, best first."""
    order = probabilities.argsort()[::-1][:k]
    name = (lambda i: labels[i]) if labels else str
    return [(name(int(i)), float(probabilities[i])) for i in order]


def predict_main(args):
    """``resnet-keras predict --export-dir BASE IMAGE... [--top K]``."""
    version_dir, labels, outputs = classify_files(args.export_dir, args.images)
    print(f"model: {version_dir}")
    for path, probabilities in zip(args.images, outputs["probabilities"]):
        print(path)
        for rank, (name, probability) in enumerate(top_k(probabilities, args.top, labels), 1):
            print(f"  {rank}. {name:20s} {probability:.4f}")
    return 0
