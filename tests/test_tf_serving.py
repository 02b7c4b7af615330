"""TF Serving's warm-up file, Classify signature and server configuration.

Requests are read with TF Serving's own protos (``tensorflow-serving-api``)
and run in a fresh process through the session loader, the way the model
server loads a SavedModel and replays its warm-up records; every output is
compared with the Keras model on the same images.
"""
import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import CIFAR_CLASSES
from resnet_keras import cli, export, preprocessing, tf_serving
from test_export import logits_twin, saved_model_proto, small_model, tensor_spec

serving_apis = pytest.importorskip("tensorflow_serving.apis.prediction_log_pb2")
from tensorflow_serving.apis import classification_pb2, prediction_log_pb2  # noqa: E402

CLASSES = list(CIFAR_CLASSES)
TOLERANCE = 1e-5

# Replays a TFRecord of PredictionLogs (argv[2]) against the export (argv[1])
# as TF Serving does: session loader, signature_def by name; writes out-I.npz.
REPLAY = r"""
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

export_dir, records_path, out_dir = sys.argv[1:4]
logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
        for r in tf.data.TFRecordDataset(records_path)]
with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
    meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], export_dir)
    for i, log in enumerate(logs):
        kind = log.WhichOneof("log_type")
        request = getattr(log, kind).request
        signature = meta.signature_def[request.model_spec.signature_name or "serving_default"]
        if kind == "predict_log":
            assert signature.method_name == "tensorflow/serving/predict"
            feeds = {signature.inputs[k].name: tf.make_ndarray(v)
                     for k, v in request.inputs.items()}
        else:
            assert kind == "classify_log", kind
            assert signature.method_name == "tensorflow/serving/classify"
            examples = [e.SerializeToString() for e in request.input.example_list.examples]
            feeds = {signature.inputs["inputs"].name: np.array(examples, dtype=object)}
        fetches = {k: v.name for k, v in signature.outputs.items()}
        np.savez(os.path.join(out_dir, f"out-{i}.npz"), **sess.run(fetches, feeds))
print(len(logs))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = small_model()
    base = str(tmp_path_factory.mktemp("serving"))
    version_dir = export.export_saved_model(model, base, image_size=32, class_names=CLASSES)
    return model, logits_twin(model, 32), version_dir


def _replay(version_dir, records_path, work_dir):
    os.makedirs(work_dir, exist_ok=True)
    done = subprocess.run([sys.executable, "-c", REPLAY, version_dir, records_path, work_dir],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    outputs = []
    for i in range(int(done.stdout.split()[-1])):
        with np.load(os.path.join(work_dir, f"out-{i}.npz"), allow_pickle=True) as data:
            outputs.append(dict(data))
    return outputs


def _logs(path):
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(path)]


def _reference(model, images):
    batch = tf.stack([preprocessing.eval_transform(tf.constant(i), 32) for i in images])
    return np.asarray(model(batch, training=False), np.float64)


def _decode(blob):
    return tf.io.decode_image(blob, channels=3, expand_animations=False).numpy()


def _assert_classified(output, probabilities):
    k = min(5, len(CLASSES))
    order = np.argsort(-probabilities, axis=1)[:, :k]
    assert output["scores"].shape == (len(probabilities), k)
    np.testing.assert_allclose(output["scores"], np.take_along_axis(probabilities, order, 1),
                               atol=TOLERANCE, rtol=0)
    # Labels of the best classes (ties within round-off would swap; none here).
    assert [[c.decode() for c in row] for row in output["classes"]] == \
        [[CLASSES[j] for j in row] for row in order]


def test_classify_signature_as_the_server_reads_it(exported):
    _, _, version_dir = exported
    signature = saved_model_proto(version_dir).signature_def["classify"]
    assert signature.method_name == "tensorflow/serving/classify"
    assert {k: tensor_spec(v) for k, v in signature.inputs.items()} == \
        {"inputs": ("string", [-1])}
    assert {k: tensor_spec(v) for k, v in signature.outputs.items()} == \
        {"classes": ("string", [-1, 5]), "scores": ("float32", [-1, 5])}
    # The predict signatures keep their method name.
    for name in export.SIGNATURES:
        assert saved_model_proto(version_dir).signature_def[name].method_name == \
            "tensorflow/serving/predict"


def test_warmup_requests_parse_and_replay_like_keras(exported, tmp_path):
    model, twin, version_dir = exported
    path = os.path.join(version_dir, "assets.extra", "tf_serving_warmup_requests")
    logs = _logs(path)
    kinds = [(log.WhichOneof("log_type"), getattr(log, log.WhichOneof("log_type"))
              .request.model_spec.signature_name) for log in logs]
    assert kinds == [("predict_log", "serving_default"), ("predict_log", "serving_bytes"),
                     ("classify_log", "classify")] * 2
    outputs = _replay(version_dir, path, str(tmp_path / "replay"))
    sizes = []
    for log, output in zip(logs, outputs):
        if log.WhichOneof("log_type") == "predict_log":
            inputs = log.predict_log.request.inputs
            if "images" in inputs:
                images = tf.make_ndarray(inputs["images"])
            else:
                images = [_decode(b) for b in tf.make_ndarray(inputs["image_bytes"])]
            reference = _reference(model, images)
            np.testing.assert_allclose(output["probabilities"], reference, atol=TOLERANCE)
            np.testing.assert_allclose(output["logits"], np.asarray(twin(tf.stack([
                preprocessing.eval_transform(tf.constant(i), 32) for i in images]))),
                atol=TOLERANCE)
        else:
            examples = log.classify_log.request.input.example_list.examples
            images = [_decode(e.features.feature["image/encoded"].bytes_list.value[0])
                      for e in examples]
            _assert_classified(output, _reference(model, images))
        sizes.append(np.asarray(images).shape)
    assert sizes == [(1, 32, 32, 3)] * 3 + [(4, 32, 32, 3)] * 3


def test_classify_real_jpegs_through_the_server_path(exported, cifar_subset, tmp_path):
    model, _, version_dir = exported
    paths = [sorted(glob.glob(os.path.join(cifar_subset, "test", name, "*.jpg")))[0]
             for name in CLASSES]
    log = prediction_log_pb2.PredictionLog()
    request = classification_pb2.ClassificationRequest()
    request.model_spec.signature_name = "classify"
    for path in paths:
        example = request.input.example_list.examples.add()
        with open(path, "rb") as f:
            example.features.feature["image/encoded"].bytes_list.value.append(f.read())
    log.classify_log.request.CopyFrom(request)
    records = str(tmp_path / "requests.tfrecord")
    with tf.io.TFRecordWriter(records) as writer:
        writer.write(log.SerializeToString())
    (output,) = _replay(version_dir, records, str(tmp_path / "replay"))
    _assert_classified(output, _reference(model, [_decode(open(p, "rb").read()) for p in paths]))


def _batching_parameters_message():
    """TF Serving's BatchingParameters (session_bundle_config.proto; the pip
    package does not ship it), its fields as the server defines them."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from google.protobuf import wrappers_pb2  # noqa: F401  (registers the wrappers)

    file = descriptor_pb2.FileDescriptorProto(
        name="test_batching.proto", package="test_serving", syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"])
    message = file.message_type.add(name="BatchingParameters")
    label, repeated = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL, \
        descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
    for number, name, kind in ((1, "max_batch_size", "Int64Value"),
                               (2, "batch_timeout_micros", "Int64Value"),
                               (3, "max_enqueued_batches", "Int64Value"),
                               (4, "num_batch_threads", "Int64Value"),
                               (5, "thread_pool_name", "StringValue")):
        message.field.add(name=name, number=number, label=label,
                          type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
                          type_name=f".google.protobuf.{kind}")
    message.field.add(name="allowed_batch_sizes", number=6, label=repeated,
                      type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64)
    message.field.add(name="pad_variable_length_inputs", number=7, label=label,
                      type=descriptor_pb2.FieldDescriptorProto.TYPE_BOOL)
    pool = descriptor_pool.Default()
    try:
        pool.Add(file)
    except TypeError:
        pass  # added by an earlier call
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("test_serving.BatchingParameters"))()


def test_serving_config_parses_as_tf_serving_protos(exported, tmp_path, capsys):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    _, _, version_dir = exported
    base = os.path.dirname(version_dir)
    paths, command = tf_serving.write_serving_config(base, name="resnet20")
    config = text_format.Parse(open(paths["models.config"]).read(),
                               model_server_config_pb2.ModelServerConfig())
    (entry,) = config.model_config_list.config
    assert (entry.name, entry.base_path, entry.model_platform) == \
        ("resnet20", os.path.abspath(base), "tensorflow")
    batching = text_format.Parse(open(paths["batching_parameters.txt"]).read(),
                                 _batching_parameters_message())
    assert batching.max_batch_size.value == 32
    assert list(batching.allowed_batch_sizes)[-1] == 32
    assert batching.num_batch_threads.value == os.cpu_count()
    assert f"--model_config_file={paths['models.config']}" in command
    assert "--enable_batching" in command


def test_cli_export_writes_the_serving_config(exported, tmp_path, capsys):
    from test_export import make_model_dir

    model, _, _ = exported
    model_dir = make_model_dir(tmp_path / "run", model)
    base = str(tmp_path / "serving")
    status = cli.main(["export", "--model-dir", model_dir, "--export-dir", base,
                       "--serving-config"])
    out = capsys.readouterr().out
    assert status == 0
    assert os.path.isfile(os.path.join(base, "1", "assets.extra", "tf_serving_warmup_requests"))
    assert os.path.isfile(os.path.join(base, "models.config"))
    assert "tensorflow_model_server" in out and "--model_config_file=" in out
