"""Export a classifier as a TF Serving SavedModel, and classify images with one.

Layout written by :func:`export_saved_model`::

    BASE/<version>/saved_model.pb
    BASE/<version>/variables/
    BASE/<version>/assets/labels.txt    class names, one a line, index order

Signatures (tag ``serve``):

- ``serving_default``: ``images`` uint8 ``[batch, height, width, 3]``
- ``serving_bytes``: ``image_bytes`` string ``[batch]`` (encoded JPEG or PNG)

both returning ``logits`` float32 ``[batch, classes]``, ``probabilities``
float32 ``[batch, classes]`` and ``classes`` int32 ``[batch]``. Resizing,
cropping and normalisation (:func:`preprocessing.eval_transform`) run inside
the graph, so clients send raw pixels or files.

Writing is atomic: the SavedModel is written to a hidden staging folder
``BASE/.tmp-<version>-<host>-<pid>-<start>`` and renamed into place, so a
numbered version is either complete or absent, even if the exporting
process is killed. A staging folder left by a killed exporter on this host
is removed by the next export into the same base; those of live exporters,
and of other hosts (a shared file system), are left alone.
"""
import hashlib
import os
import re
import shutil
import socket

import keras
import tensorflow as tf

from resnet_keras import preprocessing

SERVING_DEFAULT = "serving_default"
SERVING_BYTES = "serving_bytes"
SIGNATURES = (SERVING_DEFAULT, SERVING_BYTES)
OUTPUTS = ("logits", "probabilities", "classes")
LABELS_FILE = "labels.txt"
SAVED_MODEL_FILE = "saved_model.pb"


# --------------------------------------------------------------------------
# Versions


def list_versions(export_base):
    """Sorted integer version folders in EXPORT_BASE; other names are ignored."""
    if not os.path.isdir(export_base):
        return []
    return sorted(
        int(name) for name in os.listdir(export_base)
        if name.isascii() and name.isdigit()
        and os.path.isdir(os.path.join(export_base, name)))


def next_version(export_base):
    """One more than the highest version present, 1 if there is none.

    Integer names that are files, not folders, are skipped too, so the
    version returned is always free.
    """
    if not os.path.isdir(export_base):
        return 1
    taken = [int(name) for name in os.listdir(export_base) if name.isascii() and name.isdigit()]
    return max(taken) + 1 if taken else 1


def check_export_base(export_base):
    """ValueError (one line) unless EXPORT_BASE can hold numbered versions.

    Refused: a file, and a folder that is itself an exported version (holds
    ``saved_model.pb``), since versions written inside it would change it.
    """
    export_base = os.fspath(export_base)
    if os.path.exists(export_base) and not os.path.isdir(export_base):
        raise ValueError(f"export dir {export_base!r} is a file, not a folder")
    if os.path.isfile(os.path.join(export_base, SAVED_MODEL_FILE)):
        parent = os.path.dirname(os.path.abspath(export_base))
        raise ValueError(
            f"export dir {export_base!r} is an existing exported version (it holds "
            f"{SAVED_MODEL_FILE}); nothing was written: pass the folder of the versions, "
            f"e.g. {parent!r}")


def _check_version(export_base, version):
    if version is None:
        return next_version(export_base)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"export version must be a non-negative integer, got {version!r}")
    target = os.path.join(export_base, str(version))
    if os.path.exists(target):
        raise ValueError(
            f"export version {version} already exists at {target!r}; nothing was "
            f"overwritten (next free version: {next_version(export_base)})")
    return version


# --------------------------------------------------------------------------
# The model's classifier head


def _classifier_layer(model):
    """The model's last layer, which must produce its class scores."""
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        shapes = [tuple(t.shape) for t in model.outputs]
        raise ValueError(
            f"can only export a classifier with one [batch, classes] output, "
            f"got outputs {shapes} (build the model with include_top=True)")
    layer = model.layers[-1]
    if not isinstance(layer, (keras.layers.Dense, keras.layers.Activation)):
        raise ValueError(
            f"model {model.name!r} ends in a {type(layer).__name__} layer {layer.name!r}, "
            "not a classifier; expected a Dense or Activation layer ('predictions') "
            "(build the model with include_top=True)")
    if layer.output is not model.outputs[0]:
        raise ValueError(
            f"the last layer {layer.name!r} does not produce the model's output; "
            "expected a functional classifier ending in its 'predictions' layer")
    return layer


def _activation_name(layer):
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None) if activation is not None else "linear"


def logits_function(model):
    """A function mapping normalised images to float32 logits.

    Works whether the model ends in a linear classifier or in softmax: for a
    softmax ``Dense`` head the logits are recomputed from the head's input
    with its own kernel and bias (in the layer's compute dtype); for a softmax
    ``Activation`` layer they are the layer's input.
    """
    layer = _classifier_layer(model)
    activation = _activation_name(layer)
    if activation == "linear":
        return lambda x: tf.cast(model(x, training=False), tf.float32)
    if activation != "softmax":
        raise ValueError(
            f"cannot export a classifier whose {layer.name!r} layer has activation "
            f"{activation!r}; expected 'softmax' or None (linear)")
    features = keras.Model(model.inputs, layer.input, name=f"{model.name}_logits")
    if isinstance(layer, keras.layers.Activation):
        return lambda x: tf.cast(features(x, training=False), tf.float32)
    return lambda x: tf.cast(_dense_linear(layer, features(x, training=False)), tf.float32)


def _dense_linear(layer, inputs):
    """``inputs @ kernel + bias`` of a Dense layer, without its activation."""
    dtype = layer.compute_dtype
    outputs = tf.matmul(tf.cast(inputs, dtype), tf.cast(layer.kernel, dtype))
    if layer.use_bias:
        outputs = outputs + tf.cast(layer.bias, dtype)
    return outputs


def check_class_names(class_names):
    """ValueError unless every class name is a non-empty single line (labels.txt)."""
    bad = [name for name in map(str, class_names)
           if not name.strip() or "\n" in name or "\r" in name]
    if bad:
        raise ValueError(f"class names must be non-empty single lines, got {bad[0]!r}")


def _check_model(model, image_size, class_names):
    """The class names as a list of strings, checked against the model."""
    _classifier_layer(model)
    num_classes = model.outputs[0].shape[-1]
    names = [str(name) for name in class_names]
    if len(names) != num_classes:
        raise ValueError(
            f"got {len(names)} class names for a model with {num_classes} classes")
    check_class_names(names)
    input_shape = tuple(model.inputs[0].shape[1:])
    if input_shape[-1] != 3 or any(side not in (None, image_size) for side in input_shape[:2]):
        raise ValueError(
            f"model input shape {input_shape} does not take {image_size}x{image_size}x3 images")
    return names


# --------------------------------------------------------------------------
# Building and writing the archive


def _outputs(logits):
    return {
        "logits": logits,
        "probabilities": tf.nn.softmax(logits, axis=-1),
        "classes": tf.argmax(logits, axis=-1, output_type=tf.int32),
    }


def _skip_empty(logits_of, num_classes):
    """LOGITS_OF that also takes an empty batch (TF convs reject batch 0)."""
    def run(images):
        return tf.cond(
            tf.shape(images)[0] > 0, lambda: logits_of(images),
            lambda: tf.zeros([0, num_classes], tf.float32))

    return run


def serving_functions(model, image_size):
    """(serve_images, serve_bytes): the two serving functions, not yet traced."""
    size = int(image_size)
    logits_of = _skip_empty(logits_function(model), model.outputs[0].shape[-1])

    def serve_images(images):
        return _outputs(logits_of(preprocessing.eval_transform(images, size)))

    def decode_one(data):
        image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
        return preprocessing.eval_transform(image, size)

    def serve_bytes(image_bytes):
        images = tf.map_fn(
            decode_one, image_bytes,
            fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
        return _outputs(logits_of(images))

    return serve_images, serve_bytes


def _labels_table(labels_path):
    """A class-index -> name table read from LABELS_PATH.

    Tracking it in the archive makes the file a SavedModel asset, copied to
    ``assets/labels.txt`` of the export.
    """
    initializer = tf.lookup.TextFileInitializer(
        labels_path, key_dtype=tf.int64, key_index=tf.lookup.TextFileIndex.LINE_NUMBER,
        value_dtype=tf.string, value_index=tf.lookup.TextFileIndex.WHOLE_LINE)
    return tf.lookup.StaticHashTable(initializer, default_value="")


def build_archive(model, image_size, labels_path):
    """A ``keras.export.ExportArchive`` with both serving signatures."""
    serve_images, serve_bytes = serving_functions(model, image_size)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(_labels_table(labels_path))
    archive.add_endpoint(SERVING_DEFAULT, serve_images, input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    archive.add_endpoint(SERVING_BYTES, serve_bytes, input_signature=[
        tf.TensorSpec([None], tf.string, name="image_bytes")])
    return archive


def _write_labels(folder, class_names):
    os.makedirs(folder, exist_ok=True)
    labels_path = os.path.join(folder, LABELS_FILE)
    with open(labels_path, "w", encoding="utf-8") as f:
        f.write("".join(f"{name}\n" for name in class_names))
    return labels_path


# --------------------------------------------------------------------------
# Staging folders


_STAGING = re.compile(r"\.tmp-(\d+)-([0-9a-f]{8})-(\d+)-(\d+)")


def _host_tag():
    return hashlib.sha1(socket.gethostname().encode("utf-8")).hexdigest()[:8]


def _process_start(pid):
    """``(state, start time in clock ticks since boot)`` of PID from /proc, or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], fields[19]


def _staging_name(version):
    start = _process_start(os.getpid())
    return f".tmp-{version}-{_host_tag()}-{os.getpid()}-{start[1] if start else 0}"


def _owner_alive(pid, start):
    """Whether the process that made a staging folder on this host still runs."""
    info = _process_start(pid)
    if info is not None:
        state, started = info
        return state not in ("Z", "X") and (start == "0" or started == start)
    if os.path.isdir("/proc/self"):
        return False  # Linux: no /proc entry, no process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's live process
        return True
    return True


def remove_dead_staging(export_base):
    """Remove the staging folders of exporters on this host that no longer run.

    Returns the names removed. Folders of live processes, of other hosts and
    any other hidden names are kept.
    """
    if not os.path.isdir(export_base):
        return []
    removed, host = [], _host_tag()
    for name in sorted(os.listdir(export_base)):
        match = _STAGING.fullmatch(name)
        if not match or match.group(2) != host:
            continue
        if not _owner_alive(int(match.group(3)), match.group(4)):
            shutil.rmtree(os.path.join(export_base, name), ignore_errors=True)
            removed.append(name)
    return removed


def _publish(staged, target):
    """Rename the finished SavedModel into place; never replace a version."""
    if os.path.exists(target):
        raise ValueError(f"export version already exists at {target!r}; nothing was overwritten")
    try:
        os.rename(staged, target)
    except OSError as err:
        raise ValueError(f"could not move the export into {target!r}: {err}") from err


def export_saved_model(model, export_base, *, image_size, class_names=None, version=None):
    """Write MODEL as ``EXPORT_BASE/<version>/`` for TF Serving; returns that path.

    ``version`` defaults to one more than the highest integer name present.
    ``class_names=None`` labels the classes ``0..N-1``. The SavedModel is
    written to a hidden sibling folder and renamed into place, so a server
    watching EXPORT_BASE never sees a partial version; staging folders of
    killed exporters are removed first (see the module docstring). An
    existing version, or an EXPORT_BASE that is itself a version, raises
    ``ValueError``; nothing is overwritten.
    """
    image_size = int(image_size)
    if class_names is None:
        class_names = [str(i) for i in range(_classifier_layer(model).output.shape[-1])]
    names = _check_model(model, image_size, class_names)
    check_export_base(export_base)
    version = _check_version(export_base, version)
    remove_dead_staging(export_base)
    target = os.path.join(export_base, str(version))
    staging = os.path.join(export_base, _staging_name(version))
    shutil.rmtree(staging, ignore_errors=True)
    try:
        labels_path = _write_labels(os.path.join(staging, "labels"), names)
        archive = build_archive(model, image_size, labels_path)
        archive.write_out(os.path.join(staging, "model"), verbose=False)
        _publish(os.path.join(staging, "model"), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# --------------------------------------------------------------------------
# Reading an export the way TF Serving does


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


def export_main(args):
    """``resnet-keras export --model-dir DIR --export-dir BASE [--version N]``."""
    from resnet_keras import rundir

    rundir.check_writable_dir(args.export_dir, "export dir")
    check_export_base(args.export_dir)
    model, config = rundir.load_trained_model(args.model_dir)
    missing = [key for key in ("image_size", "class_names") if not config.get(key)]
    if missing:
        raise ValueError(
            f"run config in {args.model_dir!r} lacks {', '.join(missing)}; cannot export")
    path = export_saved_model(
        model, args.export_dir, image_size=config["image_size"],
        class_names=config["class_names"], version=args.version)
    print(f"exported {config.get('model', model.name)} to {path}")
    for line in describe_signatures(load_serving(path)):
        print(f"  {line}")
    return 0


def _read_images(paths):
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
    blobs = _read_images(paths)
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
