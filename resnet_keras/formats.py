"""Classifier exports for other runtimes: LiteRT (TFLite) and ONNX.

Both take uint8 pixels ``images [batch, S, S, 3]`` at the export's image size
S (clients resize on the device), normalise inside the graph exactly as the
SavedModel does, run the model in float32 with its BatchNormalizations folded
into the convolutions (:mod:`resnet_keras.folding`), and return
``probabilities`` float32 ``[batch, classes]`` and ``classes`` int32
``[batch]``::

    BASE/model.tflite            LiteRT, float32        (--quantize none)
    BASE/model-float16.tflite    LiteRT, float16 weights
    BASE/model-int8.tflite       LiteRT, full-integer int8 (uint8 in)
    BASE/model.onnx              ONNX (tf2onnx), opset ONNX_OPSET
    BASE/labels.txt              class names, one a line, index order

Each file is written under a hidden temporary name and renamed into place; an
existing file is never overwritten. int8 calibration runs the graph on
representative images, which :func:`export_main` draws from the run's own
training data (the images the model was trained on, before normalisation).
"""
import os

import keras
import numpy as np
import tensorflow as tf

from resnet_keras import preprocessing
from resnet_keras.atomic import write_atomic
from resnet_keras.classifier_head import check_model, logits_function
from resnet_keras.conventions import convention_of
from resnet_keras.folding import fold_batch_norms
from resnet_keras.serving_layout import LABELS_FILE

FORMATS = ("saved_model", "litert", "onnx")
QUANTIZE = ("none", "float16", "int8")
ONNX_OPSET = 17
REPRESENTATIVE_IMAGES = 200


def file_name(fmt, quantize="none"):
    """The file an export of FMT (litert or onnx) at QUANTIZE writes."""
    if fmt == "onnx":
        return "model.onnx"
    return "model.tflite" if quantize == "none" else f"model-{quantize}.tflite"


def _check(fmt, quantize):
    if fmt not in ("litert", "onnx"):
        raise ValueError(f"unknown format {fmt!r} for a file export; choices: litert, onnx")
    if quantize not in QUANTIZE:
        raise ValueError(f"unknown quantization {quantize!r}; choices: {', '.join(QUANTIZE)}")
    if fmt == "onnx" and quantize != "none":
        raise ValueError(f"ONNX exports are float32; --quantize {quantize} is a LiteRT option")


def serving_function(model, image_size):
    """uint8 ``images`` [batch, S, S, 3] -> {"probabilities", "classes"}, in the
    model's input convention (``model.preprocessing``), computed in float32 by a
    copy of MODEL with its BatchNormalizations folded into the convolutions
    (:func:`resnet_keras.folding.fold_batch_norms`; MODEL itself if already so).

    The LiteRT converter and onnxruntime take no bfloat16 convolutions."""
    size = int(image_size)
    convention = convention_of(model)
    model = fold_batch_norms(model)
    logits_of = logits_function(model)

    def serve(images):
        if preprocessing.is_small(size):
            pixels = tf.cast(images, tf.float32)  # eval_transform keeps S x S as it is
        else:
            # eval_transform of an S x S image: zoom to S / crop fraction, centre crop.
            zoomed = round(size / preprocessing.CROP_FRACTION)
            pixels = tf.image.resize(tf.cast(images, tf.float32), (zoomed, zoomed))
            offset = (zoomed - size) // 2
            pixels = tf.clip_by_value(pixels[:, offset:offset + size, offset:offset + size],
                                      0.0, 255.0)
        logits = logits_of(preprocessing.normalize(pixels, convention))
        return {"probabilities": tf.nn.softmax(logits, axis=-1),
                "classes": tf.argmax(logits, axis=-1, output_type=tf.int32)}

    return serve, [tf.TensorSpec([None, size, size, 3], tf.uint8, name="images")]


def _saved_model_for_conversion(model, image_size, folder):
    """The serving function as a SavedModel (the converter freezes its variables)."""
    model = fold_batch_norms(model)  # the archive tracks the variables the function reads
    serve, signature = serving_function(model, image_size)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=signature)
    archive.write_out(folder, verbose=False)
    return folder


def litert_bytes(model, image_size, quantize="none", representative_images=None, scratch=None):
    """The LiteRT flatbuffer of MODEL. int8 needs ``representative_images``
    (uint8 ``[N, S, S, 3]``) for calibration."""
    _check("litert", quantize)
    import tempfile

    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        converter = tf.lite.TFLiteConverter.from_saved_model(
            _saved_model_for_conversion(model, image_size, os.path.join(tmp, "model")))
        if quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            images = _representative(representative_images, image_size)
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([image[None]] for image in images)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.uint8
            converter.inference_output_type = tf.float32
        return converter.convert()


def _representative(images, image_size):
    if images is None or len(images) == 0:
        raise ValueError("int8 quantization needs representative images (uint8 "
                         f"[N, {image_size}, {image_size}, 3]) to calibrate on")
    images = np.asarray(images)
    expected = (int(image_size), int(image_size), 3)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != expected:
        raise ValueError(f"representative images must be uint8 [N, {image_size}, {image_size}, 3], "
                         f"got {images.dtype} {list(images.shape)}")
    return images


def onnx_bytes(model, image_size, opset=ONNX_OPSET):
    """The ONNX model of MODEL (tf2onnx from the serving function)."""
    try:
        import tf2onnx
    except ImportError:
        raise ValueError("ONNX export needs tf2onnx: pip install 'resnet-keras[onnx]'") from None
    serve, signature = serving_function(model, image_size)
    proto, _ = tf2onnx.convert.from_function(
        tf.function(serve, input_signature=signature), input_signature=signature,
        opset=int(opset))
    return proto.SerializeToString()


def _refuse_existing(path):
    if os.path.exists(path):
        raise ValueError(f"{path!r} already exists; nothing was overwritten (export into "
                         "another --export-dir or remove it)")


def _write_atomic(path, data):
    _refuse_existing(path)
    return write_atomic(path, data)


def export_file(model, export_base, *, fmt, image_size, class_names=None, quantize="none",
                representative_images=None):
    """Write MODEL as ``EXPORT_BASE/<file_name(fmt, quantize)>`` and
    ``EXPORT_BASE/labels.txt``; the model file's path."""
    _check(fmt, quantize)
    if class_names is None:
        class_names = [str(i) for i in range(model.outputs[0].shape[-1])]
    class_names = check_model(model, int(image_size), class_names)
    os.makedirs(export_base, exist_ok=True)
    target = os.path.join(export_base, file_name(fmt, quantize))
    _refuse_existing(target)  # before the conversion, which takes a while
    if fmt == "litert":
        data = litert_bytes(model, image_size, quantize, representative_images)
    else:
        data = onnx_bytes(model, image_size)
    labels = "".join(f"{name}\n" for name in class_names).encode("utf-8")
    labels_path = os.path.join(export_base, LABELS_FILE)
    if not os.path.exists(labels_path):
        _write_atomic(labels_path, labels)
    else:
        with open(labels_path, "rb") as f:
            if f.read() != labels:
                raise ValueError(f"{labels_path!r} holds other class names; export into "
                                 "another --export-dir")
    return _write_atomic(target, data)


def training_images(dataset, data_dir, image_size, count=REPRESENTATIVE_IMAGES):
    """The first COUNT training images of DATASET, uint8 at S x S."""
    from resnet_keras import data as data_lib

    data = data_lib.load_dataset(dataset, data_dir)
    size = int(image_size)
    images = []
    with data.reading():
        for image, _ in data.train.take(count):
            if image.shape[0] != size or image.shape[1] != size:
                image = tf.image.resize(tf.cast(image, tf.float32), (size, size))
            images.append(np.clip(np.round(np.asarray(image, np.float32)), 0, 255)
                          .astype(np.uint8))
    return np.stack(images)


def export_main(args, model, name, record):
    """``resnet-keras export --format litert|onnx [--quantize ...]`` of a trained run
    (RECORD: its :class:`resnet_keras.training.record.RunRecord`)."""
    quantize = getattr(args, "quantize", "none")
    _check(args.format, quantize)
    size, class_names = record.config.data.image_size, list(record.facts.class_names)
    representative = None
    if quantize == "int8":
        representative = training_images(record.config.data.dataset,
                                          record.config.data.data_dir, size)
    path = export_file(model, args.export_dir, fmt=args.format, image_size=size,
                       class_names=class_names, quantize=quantize,
                       representative_images=representative)
    print(f"exported {name} to {path} ({os.path.getsize(path):,} bytes): input images uint8 "
          f"[batch, {size}, {size}, 3]; outputs probabilities float32 "
          f"[batch, {len(class_names)}], classes int32 [batch]")
    return 0
