"""Export a classifier as a TF Serving SavedModel (``resnet-keras export``).

Layout written by :func:`export_saved_model`::

    BASE/<version>/saved_model.pb
    BASE/<version>/variables/
    BASE/<version>/assets/labels.txt    class names, one a line, index order
    BASE/<version>/assets.extra/tf_serving_warmup_requests

Signatures (tag ``serve``):

- ``serving_default``: ``images`` uint8 ``[batch, height, width, 3]``
- ``serving_bytes``: ``image_bytes`` string ``[batch]`` (encoded JPEG or PNG)

both returning ``logits`` float32 ``[batch, classes]``, ``probabilities``
float32 ``[batch, classes]`` and ``classes`` int32 ``[batch]``; and
``classify`` (TF Serving's Classify API, see :mod:`resnet_keras.tf_serving`).
Resizing, cropping and normalisation (:func:`preprocessing.eval_transform`,
in the model's input convention) run inside the graph, so clients send raw
pixels or files. The graph computes in float32, with the BatchNormalizations
that follow convolutions folded into them (:mod:`resnet_keras.folding`).

Writing is atomic (:mod:`resnet_keras.serving_layout`): a version is built in
a hidden staging folder and renamed into place. Reading an export back and
``resnet-keras predict`` are in :mod:`resnet_keras.predict`; LiteRT and ONNX
files in :mod:`resnet_keras.formats`.
"""
import os

import keras
import tensorflow as tf

from resnet_keras import preprocessing, tf_serving
from resnet_keras.classifier_head import (check_class_names, check_model, classifier_layer,
                                          logits_function)
from resnet_keras.conventions import convention_of
from resnet_keras.folding import fold_batch_norms
from resnet_keras.predict import (describe_signatures, get_signature, load_serving,
                                  read_labels, top_k)
from resnet_keras.serving_layout import (LABELS_FILE, OUTPUTS, SAVED_MODEL_FILE,
                                         SERVING_BYTES, SERVING_DEFAULT, SIGNATURES,
                                         check_export_base, labels_table, list_versions,
                                         next_version, remove_dead_staging, staged_version,
                                         write_labels)

# The export API in one place (reading and layout names come from their modules).
__all__ = ["LABELS_FILE", "OUTPUTS", "SAVED_MODEL_FILE", "SERVING_BYTES", "SERVING_DEFAULT",
           "SIGNATURES", "build_archive", "check_class_names", "check_export_base",
           "describe_signatures", "export_main", "export_saved_model", "get_signature",
           "list_versions", "load_serving", "logits_function", "next_version", "read_labels",
           "remove_dead_staging", "serving_functions", "top_k"]


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


def serving_functions(model, image_size, convention=None):
    """(serve_images, serve_bytes): the two serving functions, not yet traced.

    CONVENTION: the input convention (default: the model's own, see
    :func:`resnet_keras.conventions.convention_of`). They run a float32 copy of
    MODEL with its BatchNormalizations folded into the convolutions
    (:func:`resnet_keras.folding.fold_batch_norms`; MODEL itself if already so)."""
    size = int(image_size)
    convention = convention_of(convention or model)
    model = fold_batch_norms(model)
    logits_of = _skip_empty(logits_function(model), model.outputs[0].shape[-1])

    def serve_images(images):
        return _outputs(logits_of(preprocessing.eval_transform(images, size, convention)))

    def decode_one(data):
        image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
        return preprocessing.eval_transform(image, size, convention)

    def serve_bytes(image_bytes):
        images = tf.map_fn(
            decode_one, image_bytes,
            fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
        return _outputs(logits_of(images))

    return serve_images, serve_bytes


def build_archive(model, image_size, labels_path, convention=None):
    """A ``keras.export.ExportArchive`` with the predict signatures and the
    classify signature (see :mod:`resnet_keras.tf_serving`), serving (and
    tracking the variables of) MODEL's folded float32 copy."""
    model = fold_batch_norms(model)
    serve_images, serve_bytes = serving_functions(model, image_size, convention)
    labels = labels_table(labels_path)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(labels)
    archive.add_endpoint(SERVING_DEFAULT, serve_images, input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    archive.add_endpoint(SERVING_BYTES, serve_bytes, input_signature=[
        tf.TensorSpec([None], tf.string, name="image_bytes")])
    classify = tf_serving.classify_function(serve_bytes, labels, model.outputs[0].shape[-1])
    archive.add_endpoint(tf_serving.CLASSIFY, classify, input_signature=[
        tf.TensorSpec([None], tf.string, name=tf_serving.CLASSIFY_INPUTS)])
    return archive


def export_saved_model(model, export_base, *, image_size, class_names=None, version=None,
                       preprocessing=None):
    """Write MODEL as ``EXPORT_BASE/<version>/`` for TF Serving; returns that path.

    ``version`` defaults to one more than the highest integer name present.
    ``class_names=None`` labels the classes ``0..N-1``. The graph applies
    the model's input convention (``model.preprocessing``, set by the
    builders from the weights; "torch" for a model without one), or
    ``preprocessing`` ("torch", "caffe", "tf") when given. The SavedModel is
    written to a hidden sibling folder and renamed into place, so a server
    watching EXPORT_BASE never sees a partial version; staging folders of
    killed exporters are removed first (see the module docstring). An
    existing version, or an EXPORT_BASE that is itself a version, raises
    ``ValueError``; nothing is overwritten.
    """
    from resnet_keras import segmentation_export  # DRNSeg: per-pixel outputs

    if segmentation_export.is_segmentation_model(model):
        return segmentation_export.export_segmentation_model(
            model, export_base, image_size=image_size, class_names=class_names,
            version=version, preprocessing=preprocessing)
    image_size = int(image_size)
    if class_names is None:
        class_names = [str(i) for i in range(classifier_layer(model).output.shape[-1])]
    names = check_model(model, image_size, class_names)
    with staged_version(export_base, version) as (staging, target):
        labels_path = write_labels(os.path.join(staging, "labels"), names)
        archive = build_archive(model, image_size, labels_path, preprocessing)
        staged = os.path.join(staging, "model")
        archive.write_out(staged, verbose=False)
        tf_serving.mark_classify_method(staged)
        tf_serving.write_warmup(staged, image_size, {
            "images": SERVING_DEFAULT, "bytes": SERVING_BYTES, "classify": tf_serving.CLASSIFY})
    return target


# --------------------------------------------------------------------------
# Command line


def export_main(args):
    """``resnet-keras export --model-dir DIR --export-dir BASE [--version N]
    [--serving-config]``."""
    from resnet_keras import rundir

    rundir.check_writable_dir(args.export_dir, "export dir")
    fmt, quantize = getattr(args, "format", "saved_model"), getattr(args, "quantize", "none")
    if fmt == "saved_model":
        if quantize != "none":
            raise ValueError(f"--quantize {quantize} is a LiteRT option (--format litert)")
        check_export_base(args.export_dir)
    from resnet_keras.training import record as record_lib

    model, record = record_lib.load_trained(args.model_dir)
    image_size, class_names = record.config.data.image_size, list(record.facts.class_names)
    name = record.config.model.name or model.name
    missing = [key for key, value in (("image_size", image_size), ("class_names", class_names))
               if not value]
    if missing:
        raise ValueError(
            f"run config in {args.model_dir!r} lacks {', '.join(missing)}; cannot export")
    if fmt != "saved_model":
        from resnet_keras import formats

        return formats.export_main(args, model, name, record)
    path = export_saved_model(model, args.export_dir, image_size=image_size,
                              class_names=class_names, version=args.version)
    print(f"exported {name} to {path}")
    for line in describe_signatures(load_serving(path)):
        print(f"  {line}")
    if getattr(args, "serving_config", False):
        paths, command = tf_serving.write_serving_config(
            args.export_dir, name=name)
        print(f"serving config: {', '.join(paths.values())}\nserve with: {command}")
    return 0
