"""SavedModel export of the DRNSeg segmentation model for TF Serving.

The export is loaded in a fresh process the way the model server does (tag
``serve``, signatures by name, through a session and through the TF2
loader); its per-pixel outputs must match the Keras model on real CIFAR-10
test photos, at 32x32 and at 32x48, within 1e-5.
"""
import glob
import hashlib
import os
import socket
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import CIFAR_CLASSES
from resnet_keras import build_segmentation_model, export, preprocessing
from test_export import decode, saved_model_proto, serve_in_fresh_process, tensor_spec

TOLERANCE = 1e-5
CLASSES = 4
WIDTHS = (8, 16, 16, 16, 16, 16, 16, 16)  # a narrow drn_d_22: fast to export


def small_seg_model(classifier_activation="softmax", seed=3):
    """A deterministic narrow DRN-D-22 DRNSeg; its ``seg`` weights are scaled
    to give logits of order 1 (random ones reach 20, where float32 round-off
    alone exceeds the 1e-5 the outputs are compared at)."""
    keras.utils.set_random_seed(seed)
    model = build_segmentation_model("drn_d_22", CLASSES, widths=WIDTHS,
                                     classifier_activation=classifier_activation)
    seg = model.get_layer("seg")
    seg.set_weights([w / 8 for w in seg.get_weights()])
    return model


def keras_reference(model, twin, images):
    batch = preprocessing.normalize(tf.constant(np.stack(images)))
    return {"probabilities": np.asarray(model(batch, training=False)),
            "logits": np.asarray(twin(batch, training=False))}


def assert_matches(served, reference):
    for key in ("logits", "probabilities"):
        assert served[key].dtype == np.float32
        np.testing.assert_allclose(served[key], reference[key], atol=TOLERANCE, rtol=0)
    assert served["classes"].dtype == np.int32
    assert served["classes"].shape == reference["logits"].shape[:-1]
    # Each pixel's class is the reference's best one (up to float round-off).
    chosen = np.take_along_axis(reference["logits"], served["classes"][..., None], -1)[..., 0]
    np.testing.assert_allclose(chosen, reference["logits"].max(-1), atol=TOLERANCE, rtol=0)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model, logits twin, version dir): one export into a base that holds a
    non-export folder "3" and a killed exporter's staging folder."""
    model = small_seg_model()
    twin = small_seg_model(classifier_activation=None)
    twin.set_weights(model.get_weights())
    base = tmp_path_factory.mktemp("seg_export")
    os.makedirs(base / "3")
    finished = subprocess.Popen(["true"])
    finished.wait()
    host = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
    os.makedirs(base / f".tmp-3-{host}-{finished.pid}-0" / "model")
    version_dir = export.export_saved_model(model, str(base), image_size=32)
    assert version_dir == str(base / "4")
    assert sorted(os.listdir(base)) == ["3", "4"]  # dead staging removed, none left
    return model, twin, version_dir


@pytest.fixture(scope="module")
def photos(cifar_subset):
    """One real CIFAR-10 test JPEG per class (paths), and their pixels."""
    paths = [sorted(glob.glob(os.path.join(cifar_subset, "test", name, "*.jpg")))[0]
             for name in CIFAR_CLASSES]
    return paths, [decode(path) for path in paths]


def test_signatures_as_the_server_reads_them(exported):
    _, _, version_dir = exported
    signatures = saved_model_proto(version_dir).signature_def
    assert {"serving_default", "serving_bytes"} <= set(signatures)
    assert "classify" not in signatures  # a per-image API
    outputs = {"logits": ("float32", [-1, -1, -1, CLASSES]),
               "probabilities": ("float32", [-1, -1, -1, CLASSES]),
               "classes": ("int32", [-1, -1, -1])}
    for name, inputs in {"serving_default": {"images": ("uint8", [-1, -1, -1, 3])},
                         "serving_bytes": {"image_bytes": ("string", [-1])}}.items():
        assert signatures[name].method_name == "tensorflow/serving/predict"
        assert {k: tensor_spec(v) for k, v in signatures[name].inputs.items()} == inputs
        assert {k: tensor_spec(v) for k, v in signatures[name].outputs.items()} == outputs


def test_labels_default_to_class_indices(exported):
    _, _, version_dir = exported
    with open(os.path.join(version_dir, "assets", "labels.txt")) as f:
        assert f.read() == "0\n1\n2\n3\n"
    assert "labels.txt" in [a.filename for a in saved_model_proto(version_dir).asset_file_def]
    assert export.read_labels(version_dir, CLASSES) == ["0", "1", "2", "3"]


def test_served_outputs_match_keras_on_real_images(exported, photos, tmp_path):
    """32x32 photos and 32x48 ones (two photos side by side), as pixels and as
    files (the JPEGs themselves, lossless PNGs of the wide ones)."""
    model, twin, version_dir = exported
    paths, pixels = photos
    wide = [np.concatenate([a, b[:, :16]], axis=1) for a, b in zip(pixels[:5], pixels[5:])]
    assert wide[0].shape == (32, 48, 3)
    wide_paths = []
    for i, image in enumerate(wide):
        wide_paths.append(str(tmp_path / f"wide{i}.png"))
        tf.io.write_file(wide_paths[-1], tf.io.encode_png(image))
    np.save(tmp_path / "square.npy", np.stack(pixels))
    np.save(tmp_path / "wide.npy", np.stack(wide))
    requests = [{"signature": "serving_default", "npy": str(tmp_path / "square.npy")},
                {"signature": "serving_default", "npy": str(tmp_path / "wide.npy")},
                {"signature": "serving_bytes", "files": paths},
                {"signature": "serving_bytes", "files": wide_paths}]

    served = serve_in_fresh_process(version_dir, requests, str(tmp_path / "out"))

    square, wide_reference = keras_reference(model, twin, pixels), keras_reference(
        model, twin, wide)
    for (by_session, by_loader), reference in zip(served, [square, wide_reference] * 2):
        assert_matches(by_session, reference)
        assert_matches(by_loader, reference)
    assert served[1][0]["classes"].shape == (5, 32, 48)


def test_sizes_that_are_not_multiples_of_8_fail_clearly(exported, photos):
    _, _, version_dir = exported
    loaded = export.load_serving(version_dir)
    serve_images, serve_bytes = (loaded.signatures[n] for n in export.SIGNATURES)
    for shape in [(1, 30, 32, 3), (2, 32, 36, 3)]:
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=r"multiples of the output stride 8.*\[" +
                           " ".join(map(str, shape)) + r"\]"):
            serve_images(images=tf.zeros(shape, tf.uint8))
    odd = tf.io.encode_png(photos[1][0][:, :20]).numpy()
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[1 32 20 3\]"):
        serve_bytes(image_bytes=tf.constant([odd]))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"one size; the first is\] \[32 32 3\] \[another is\] \[32 48 3\]"):
        mixed = [tf.io.encode_png(photos[1][0]).numpy(),
                 tf.io.encode_png(np.concatenate([photos[1][0], photos[1][1][:, :16]], 1)).numpy()]
        serve_bytes(image_bytes=tf.constant(mixed))


def test_empty_batches_give_empty_outputs(exported):
    _, _, version_dir = exported
    loaded = export.load_serving(version_dir)
    served = loaded.signatures["serving_default"](images=tf.zeros([0, 16, 24, 3], tf.uint8))
    assert served["logits"].shape == (0, 16, 24, CLASSES) and served["classes"].shape == (0, 16, 24)
    served = loaded.signatures["serving_bytes"](image_bytes=tf.constant([], tf.string))
    assert served["probabilities"].shape[0] == 0 and served["classes"].shape[0] == 0


def test_warmup_requests_replay_like_keras(exported, tmp_path):
    pytest.importorskip("tensorflow_serving.apis.prediction_log_pb2")
    from test_tf_serving import _logs, _replay

    model, twin, version_dir = exported
    path = os.path.join(version_dir, "assets.extra", "tf_serving_warmup_requests")
    logs = _logs(path)
    assert [(log.WhichOneof("log_type"), log.predict_log.request.model_spec.signature_name)
            for log in logs] == [("predict_log", "serving_default"),
                                 ("predict_log", "serving_bytes")] * 2
    for log, output in zip(logs, _replay(version_dir, path, str(tmp_path / "replay"))):
        inputs = log.predict_log.request.inputs
        images = tf.make_ndarray(inputs["images"]) if "images" in inputs else [
            decode_blob(b) for b in tf.make_ndarray(inputs["image_bytes"])]
        assert np.shape(images)[1:] == (32, 32, 3)
        assert_matches(output, keras_reference(model, twin, list(images)))


def decode_blob(blob):
    return tf.io.decode_image(blob, channels=3, expand_animations=False).numpy()


def test_a_logits_model_serves_softmax_probabilities():
    """A model built with classifier_activation=None: its output is the logits."""
    from resnet_keras.segmentation_export import segmentation_functions

    model = small_seg_model(classifier_activation=None)
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 24, 3), dtype=np.uint8)
    serve_images, _ = segmentation_functions(model)
    served = {k: v.numpy() for k, v in serve_images(tf.constant(images)).items()}
    logits = np.asarray(model(preprocessing.normalize(images)))
    assert_matches(served, {"logits": logits, "probabilities": tf.nn.softmax(logits).numpy()})


@pytest.mark.parametrize("make, kwargs, message", [
    (small_seg_model, {"image_size": 30}, r"image_size=30: .* multiple of the output stride 8"),
    (small_seg_model, {"class_names": ["a", "b"]},
     "2 class names for a segmentation model with 4 classes"),
    (small_seg_model, {"class_names": ["a", "b", "", "d"]}, "single lines"),
    (small_seg_model, {"version": -1}, "non-negative integer, got -1"),
    (lambda: small_seg_model(classifier_activation="sigmoid"), {},
     r"\(activation 'sigmoid'\); expected a softmax"),
    (lambda: keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(4, 1)]), {},
     "is not a DRNSeg segmentation model"),
])
def test_bad_export_arguments(make, kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        export.export_saved_model(make(), str(tmp_path), **{"image_size": 32, **kwargs})
    assert os.listdir(tmp_path) == []
