"""What TF Serving needs beyond the SavedModel's predict signatures.

* The ``classify`` signature (method ``tensorflow/serving/classify``), for
  TF Serving's Classify API (REST ``:classify``, gRPC ``Classify``): input
  ``inputs``, serialized ``tf.Example`` protos whose ``image/encoded``
  feature holds a JPEG or PNG; outputs ``classes`` (label strings) and
  ``scores`` (probabilities) of the top classes, best first.
* ``assets.extra/tf_serving_warmup_requests``: a TFRecord file of
  ``PredictionLog`` protos, which TF Serving replays when it loads a version
  so that the first client request does not pay for graph warm-up (see TF
  Serving's "SavedModel Warmup" guide).
* ``models.config`` and ``batching_parameters.txt`` for
  ``tensorflow_model_server --model_config_file=... --enable_batching
  --batching_parameters_file=...``.

TensorFlow 2 writes every signature with the predict method name; the
classify signature's method name is set in ``saved_model.pb`` after writing.
The warm-up protos are encoded here from their field numbers (the
``tensorflow-serving-api`` package, which pins the full ``tensorflow``
package, is not needed to write them; the tests read them back with it).
"""
import os

import numpy as np
import tensorflow as tf

from resnet_keras.atomic import write_atomic

CLASSIFY = "classify"
CLASSIFY_METHOD = "tensorflow/serving/classify"
CLASSIFY_INPUTS = "inputs"
IMAGE_FEATURE = "image/encoded"
CLASSIFY_TOP_K = 5
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
WARMUP_BATCHES = (1, 4)
MODELS_CONFIG = "models.config"
BATCHING_FILE = "batching_parameters.txt"


# --------------------------------------------------------------------------
# The classify signature


def classify_function(serve_bytes, labels_table, num_classes, top_k=CLASSIFY_TOP_K):
    """The classify endpoint: serialized Examples -> {"classes", "scores"}.

    ``serve_bytes`` maps a string batch of encoded images to the predict
    outputs; ``labels_table`` maps a class index (int64) to its name.
    """
    k = min(int(top_k), int(num_classes))

    def classify(inputs):
        features = tf.io.parse_example(
            inputs, {IMAGE_FEATURE: tf.io.FixedLenFeature([], tf.string)})
        probabilities = serve_bytes(features[IMAGE_FEATURE])["probabilities"]
        scores, indices = tf.math.top_k(probabilities, k=k)
        return {"classes": labels_table.lookup(tf.cast(indices, tf.int64)), "scores": scores}

    return classify


def image_example(encoded):
    """A serialized ``tf.Example`` holding one encoded image, as classify takes."""
    feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded]))
    return tf.train.Example(features=tf.train.Features(
        feature={IMAGE_FEATURE: feature})).SerializeToString()


def mark_classify_method(saved_model_dir, signature=CLASSIFY):
    """Give SIGNATURE the classify method name in SAVED_MODEL_DIR/saved_model.pb."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = os.path.join(saved_model_dir, "saved_model.pb")
    proto = saved_model_pb2.SavedModel()
    with open(path, "rb") as f:
        proto.ParseFromString(f.read())
    for meta_graph in proto.meta_graphs:
        if signature in meta_graph.signature_def:
            meta_graph.signature_def[signature].method_name = CLASSIFY_METHOD
    write_atomic(path, proto.SerializeToString())


# --------------------------------------------------------------------------
# Warm-up requests: PredictionLog protos, encoded by field number


def _varint(value):
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number, payload):
    """A length-delimited protobuf field (wire type 2)."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _model_spec(signature):
    return _field(3, signature)  # ModelSpec.signature_name


def predict_log(signature, inputs):
    """A serialized ``PredictionLog`` with a PredictRequest for SIGNATURE;
    INPUTS maps input names to numpy arrays."""
    request = _field(1, _model_spec(signature))  # PredictRequest.model_spec
    for name, value in inputs.items():  # PredictRequest.inputs: map<string, TensorProto>
        tensor = tf.make_tensor_proto(value).SerializeToString()
        request += _field(2, _field(1, name) + _field(2, tensor))
    return _field(6, _field(1, request))  # PredictionLog.predict_log.request


def classify_log(signature, examples):
    """A serialized ``PredictionLog`` with a ClassificationRequest of EXAMPLES
    (serialized tf.Example protos)."""
    example_list = b"".join(_field(1, example) for example in examples)
    request = _field(1, _model_spec(signature)) + _field(2, _field(1, example_list))
    return _field(2, _field(1, request))  # PredictionLog.classify_log.request


def _warmup_images(image_size, batch):
    rng = np.random.default_rng(batch)
    return rng.integers(0, 256, (batch, image_size, image_size, 3), dtype=np.uint8)


def _png(image):
    return tf.io.encode_png(image).numpy()


def warmup_records(image_size, signatures):
    """Serialized PredictionLogs: a batch of 1 and one of 4 images for each of
    SIGNATURES ({"images": name, "bytes": name, "classify": name or None})."""
    records = []
    for batch in WARMUP_BATCHES:
        images = _warmup_images(int(image_size), batch)
        encoded = [_png(image) for image in images]
        records.append(predict_log(signatures["images"], {"images": images}))
        records.append(predict_log(signatures["bytes"],
                                   {"image_bytes": np.array(encoded, dtype=object)}))
        if signatures.get("classify"):
            records.append(classify_log(signatures["classify"],
                                        [image_example(e) for e in encoded]))
    return records


def write_warmup(saved_model_dir, image_size, signatures):
    """Write ``assets.extra/tf_serving_warmup_requests`` into SAVED_MODEL_DIR."""
    path = os.path.join(saved_model_dir, WARMUP_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for record in warmup_records(image_size, signatures):
            writer.write(record)
    return path


# --------------------------------------------------------------------------
# Server configuration


def models_config(name, base_path):
    """A ``--model_config_file`` text proto serving every version of BASE_PATH
    (the latest is served; TF Serving picks up new versions as they appear)."""
    return ("model_config_list {\n  config {\n"
            f"    name: {_quoted(name)}\n    base_path: {_quoted(base_path)}\n"
            '    model_platform: "tensorflow"\n  }\n}\n')


def batching_parameters(num_cores=None):
    """``--batching_parameters_file`` defaults for CPU serving: batches of up
    to 32 images, a 2 ms wait for a batch to fill, one batch thread per core."""
    threads = max(1, int(num_cores or os.cpu_count() or 1))
    return ("max_batch_size { value: 32 }\n"
            "batch_timeout_micros { value: 2000 }\n"
            "max_enqueued_batches { value: 100 }\n"
            f"num_batch_threads {{ value: {threads} }}\n"
            "allowed_batch_sizes: 1\nallowed_batch_sizes: 2\nallowed_batch_sizes: 4\n"
            "allowed_batch_sizes: 8\nallowed_batch_sizes: 16\nallowed_batch_sizes: 32\n")


def _quoted(text):
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_serving_config(export_base, name=None):
    """``models.config`` and ``batching_parameters.txt`` in EXPORT_BASE; their
    paths and the ``tensorflow_model_server`` command line that uses them."""
    base = os.path.abspath(export_base)
    name = name or os.path.basename(base.rstrip(os.sep)) or "model"
    paths = {}
    for file_name, text in ((MODELS_CONFIG, models_config(name, base)),
                            (BATCHING_FILE, batching_parameters())):
        path = write_atomic(os.path.join(base, file_name), text)
        paths[file_name] = path
    command = (f"tensorflow_model_server --port=8500 --rest_api_port=8501 "
               f"--model_config_file={paths[MODELS_CONFIG]} --enable_batching "
               f"--batching_parameters_file={paths[BATCHING_FILE]}")
    return paths, command
