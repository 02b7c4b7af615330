"""Export a DRNSeg segmentation model (:func:`resnet_keras.build_segmentation_model`)
as a TF Serving SavedModel.

:func:`resnet_keras.export.export_saved_model` hands segmentation models
(one ``[batch, height, width, classes]`` output) to
:func:`export_segmentation_model`. The folder layout is the classifier's:
``BASE/<version>/`` written atomically (:mod:`resnet_keras.serving_layout`),
``assets/labels.txt`` and ``assets.extra/tf_serving_warmup_requests``.

Signatures (tag ``serve``):

- ``serving_default``: ``images`` uint8 ``[batch, height, width, 3]``
- ``serving_bytes``: ``image_bytes`` string ``[batch]`` (encoded JPEG or
  PNG, all images of a batch of one size)

both returning ``logits`` float32 ``[batch, height, width, classes]``,
``probabilities`` float32 (the same shape) and ``classes`` int32
``[batch, height, width]``. Images are used at their own size, which must be
a multiple of the model's output stride (8 for the DRNs) in both height and
width; other sizes fail with an error naming the shape. Normalisation
(:func:`preprocessing.normalize`) runs inside the graph. There is no
``classify`` signature: TF Serving's Classify API labels whole images.
"""
import numbers
import os

import keras
import tensorflow as tf

from resnet_keras import preprocessing, tf_serving
from resnet_keras.classifier_head import check_class_names
from resnet_keras.conventions import convention_of
from resnet_keras.folding import fold_batch_norms
from resnet_keras.layers import DepthwiseConvTranspose2D
from resnet_keras.serving_layout import (SERVING_BYTES, SERVING_DEFAULT, labels_table,
                                         staged_version, write_labels)

__all__ = ["export_segmentation_model", "is_segmentation_model", "segmentation_functions"]


def is_segmentation_model(model):
    """Whether MODEL maps images to one ``[batch, height, width, classes]`` output."""
    return len(model.outputs) == 1 and len(model.outputs[0].shape) == 4


def _upsampling(model):
    """The model's output stride, read from its ``up`` layer."""
    ups = [layer for layer in model.layers if isinstance(layer, DepthwiseConvTranspose2D)]
    if len(ups) != 1:
        raise ValueError(
            f"model {model.name!r} is not a DRNSeg segmentation model: expected one "
            f"DepthwiseConvTranspose2D upsampling layer ('up'), found {len(ups)} "
            "(build it with resnet_keras.build_segmentation_model)")
    return ups[0].strides


def _logits_model(model):
    """A model with MODEL's weights whose output is the logits."""
    layer = model.layers[-1]
    if isinstance(layer, DepthwiseConvTranspose2D):
        return model  # built with classifier_activation=None
    activation = getattr(getattr(layer, "activation", None), "__name__", None)
    if not isinstance(layer, keras.layers.Activation) or activation != "softmax":
        raise ValueError(
            f"cannot export a segmentation model ending in {type(layer).__name__} "
            f"{layer.name!r} (activation {activation!r}); expected a softmax Activation "
            "layer or the 'up' layer (classifier_activation='softmax' or None)")
    return keras.Model(model.inputs, layer.input, name=f"{model.name}_logits")


def _checked_size(images, stride):
    """IMAGES, after an in-graph check that their sides are multiples of STRIDE."""
    shape = tf.shape(images)
    check = tf.debugging.Assert(
        tf.reduce_all(tf.equal(shape[1:3] % stride, 0)),
        [f"image height and width must be multiples of the output stride {stride}; "
         "got images of shape [batch, height, width, channels] =", shape], summarize=4)
    with tf.control_dependencies([check]):
        return tf.identity(images)


def _decode(data):
    return tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)


def _decode_batch(image_bytes):
    """A uint8 batch of the encoded images, which must all have one size."""
    first = tf.cond(tf.size(image_bytes) > 0, lambda: tf.shape(_decode(image_bytes[0])),
                    lambda: tf.constant([0, 0, 3]))

    def decode_same(data):
        image = _decode(data)
        check = tf.debugging.Assert(
            tf.reduce_all(tf.equal(tf.shape(image), first)),
            ["images of one batch must have one size; the first is", first,
             "another is", tf.shape(image)])
        with tf.control_dependencies([check]):
            return tf.identity(image)

    return tf.cond(  # an empty batch: [0, 0, 0, 3]
        tf.size(image_bytes) > 0,
        lambda: tf.map_fn(decode_same, image_bytes,
                          fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8)),
        lambda: tf.zeros([0, 0, 0, 3], tf.uint8))


def segmentation_functions(model, convention=None):
    """(serve_images, serve_bytes): the two serving functions, not yet traced;
    CONVENTION: the input convention (default: the model's own). They run a
    float32 copy of MODEL with its BatchNormalizations folded into the
    convolutions (:func:`resnet_keras.folding.fold_batch_norms`)."""
    convention = convention_of(convention or model)
    model = fold_batch_norms(model)
    stride, logits_model = _upsampling(model), _logits_model(model)
    num_classes = int(model.outputs[0].shape[-1])

    def serve_images(images):
        images = _checked_size(images, stride)
        shape = tf.shape(images)
        logits = tf.cond(  # TF convolutions reject an empty batch
            shape[0] > 0,
            lambda: tf.cast(logits_model(preprocessing.normalize(images, convention),
                                         training=False),
                            tf.float32),
            lambda: tf.zeros([0, shape[1], shape[2], num_classes], tf.float32))
        return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1),
                "classes": tf.argmax(logits, axis=-1, output_type=tf.int32)}

    def serve_bytes(image_bytes):
        return serve_images(_decode_batch(image_bytes))

    return serve_images, serve_bytes


def _archive(model, labels_path, convention):
    model = fold_batch_norms(model)  # the archive tracks the variables the functions read
    serve_images, serve_bytes = segmentation_functions(model, convention)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(labels_table(labels_path))  # makes the file an asset
    archive.add_endpoint(SERVING_DEFAULT, serve_images, input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
    archive.add_endpoint(SERVING_BYTES, serve_bytes, input_signature=[
        tf.TensorSpec([None], tf.string, name="image_bytes")])
    return archive


def _class_names(model, class_names):
    num_classes = int(model.outputs[0].shape[-1])
    names = [str(i) for i in range(num_classes)] if class_names is None else \
        [str(name) for name in class_names]
    if len(names) != num_classes:
        raise ValueError(
            f"got {len(names)} class names for a segmentation model with {num_classes} classes")
    check_class_names(names)
    return names


def export_segmentation_model(model, export_base, *, image_size, class_names=None,
                              version=None, preprocessing=None):
    """Write the DRNSeg MODEL as ``EXPORT_BASE/<version>/`` for TF Serving; returns that path.

    Every height and width that is a multiple of the output stride is
    served; ``image_size`` (such a multiple) is the side of the warm-up
    requests' images. ``class_names=None`` labels the classes ``0..N-1``;
    ``preprocessing`` is the input convention (default: the model's own).
    Versions, staging and refusals are those of
    :func:`resnet_keras.export.export_saved_model`.
    """
    stride = _upsampling(model)
    if isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral) \
            or image_size <= 0 or image_size % stride:
        raise ValueError(f"image_size={image_size!r}: a segmentation export needs a positive "
                         f"multiple of the output stride {stride} (e.g. {4 * stride})")
    image_size = int(image_size)
    names = _class_names(model, class_names)
    _logits_model(model)  # refuse other heads before anything is written
    with staged_version(export_base, version) as (staging, target):
        labels_path = write_labels(os.path.join(staging, "labels"), names)
        staged = os.path.join(staging, "model")
        _archive(model, labels_path, preprocessing).write_out(staged, verbose=False)
        tf_serving.write_warmup(staged, image_size,
                                {"images": SERVING_DEFAULT, "bytes": SERVING_BYTES})
    return target
