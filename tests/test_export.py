"""SavedModel export for TF Serving, the ``export`` / ``predict`` commands and
the export example.

Exports are loaded in a fresh Python process the way the model server does:
by tag ``serve`` through a session and the MetaGraphDef's signature_def map
(the SavedModelBundle path), and through the TF2 loader with signatures
looked up by name. Outputs must match the Keras model on the same
preprocessed real CIFAR-10 images.
"""
import glob
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from conftest import CIFAR_CLASSES, CIFAR_TARBALL, REPO
from resnet_keras import build_model, cli, export, preprocessing, rundir

CLASSES = list(CIFAR_CLASSES)
TOLERANCE = 1e-5

# Loads an export in a fresh process, as the server does, and runs requests
# from a JSON list: {"signature": NAME, "npy": uint8 batch} or
# {"signature": NAME, "files": [image paths]}; writes session-I.npz and
# eager-I.npz with each request's outputs.
SERVING_CLIENT = r"""
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import tensorflow as tf

export_dir, requests_path, out_dir = sys.argv[1:4]
with open(requests_path) as f:
    requests = json.load(f)

def feed_of(request):
    if "npy" in request:
        return np.load(request["npy"])
    blobs = []
    for path in request["files"]:
        with open(path, "rb") as f:
            blobs.append(f.read())
    return np.array(blobs, dtype=object)

with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
    meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], export_dir)
    for i, request in enumerate(requests):
        signature = meta.signature_def[request["signature"]]
        (tensor_info,) = signature.inputs.values()
        fetches = {k: v.name for k, v in signature.outputs.items()}
        out = sess.run(fetches, {tensor_info.name: feed_of(request)})
        np.savez(os.path.join(out_dir, f"session-{i}.npz"), **out)

loaded = tf.saved_model.load(export_dir, tags=["serve"])
for i, request in enumerate(requests):
    function = loaded.signatures[request["signature"]]
    (key,) = function.structured_input_signature[1]
    out = function(**{key: tf.constant(feed_of(request))})
    np.savez(os.path.join(out_dir, f"eager-{i}.npz"),
             **{k: v.numpy() for k, v in out.items()})
"""


# Exports a small ResNet-20 into BASE in a fresh process. With HOOK
# "before-rename" / "after-rename" it touches PAUSED and sleeps right before /
# after the rename that publishes the version (the test then kills it).
EXPORTER_SCRIPT = r"""
import os, sys, time
base, hook, paused = sys.argv[1:4]
import keras
from resnet_keras import build_model, export

real_rename = os.rename

def rename(src, dst):
    if os.path.dirname(os.path.abspath(dst)) != os.path.abspath(base):
        return real_rename(src, dst)
    if hook == "before-rename":
        open(paused, "w").close()
        time.sleep(600)
    real_rename(src, dst)
    if hook == "after-rename":
        open(paused, "w").close()
        time.sleep(600)

os.rename = rename
keras.utils.set_random_seed(1)
model = build_model("resnet20", classes=10, input_shape=(32, 32, 3), depths=(1, 1, 1))
print(export.export_saved_model(model, base, image_size=32))
"""


# --------------------------------------------------------------------------
# Helpers


def small_model(image_size=32, classifier_activation="softmax", seed=1):
    """A deterministic, randomly initialised one-block-per-stage ResNet-20."""
    keras.utils.set_random_seed(seed)
    return build_model(
        "resnet20", classes=10, input_shape=(image_size, image_size, 3),
        depths=(1, 1, 1), classifier_activation=classifier_activation)


def logits_twin(model, image_size):
    """The same network and weights ending in linear logits."""
    twin = small_model(image_size, classifier_activation=None)
    twin.set_weights(model.get_weights())
    return twin


def decode(path):
    with open(path, "rb") as f:
        return tf.io.decode_image(f.read(), channels=3, expand_animations=False).numpy()


def keras_reference(model, twin, images, image_size):
    """Keras outputs on each image preprocessed with eval_transform."""
    batch = tf.stack([
        preprocessing.eval_transform(tf.constant(image), image_size) for image in images])
    return {"probabilities": np.asarray(model(batch, training=False)),
            "logits": np.asarray(twin(batch, training=False))}


def assert_matches(served, reference):
    np.testing.assert_allclose(served["logits"], reference["logits"], atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(
        served["probabilities"], reference["probabilities"], atol=TOLERANCE, rtol=0)
    assert served["logits"].dtype == np.float32
    assert served["probabilities"].dtype == np.float32
    assert served["classes"].dtype == np.int32
    # The served class is the reference's best one (up to float round-off).
    rows = np.arange(len(served["classes"]))
    best = reference["logits"].max(axis=1)
    np.testing.assert_allclose(
        reference["logits"][rows, served["classes"]], best, atol=TOLERANCE, rtol=0)


def serve_in_fresh_process(version_dir, requests, work_dir):
    """[(session outputs, loader outputs)] per request, from a new Python process."""
    os.makedirs(work_dir, exist_ok=True)
    requests_path = os.path.join(work_dir, "requests.json")
    with open(requests_path, "w") as f:
        json.dump(requests, f)
    result = subprocess.run(
        [sys.executable, "-c", SERVING_CLIENT, version_dir, requests_path, work_dir],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    def load(name):
        with np.load(os.path.join(work_dir, name)) as data:
            return dict(data)

    return [(load(f"session-{i}.npz"), load(f"eager-{i}.npz")) for i in range(len(requests))]


def saved_model_proto(version_dir):
    """The MetaGraphDef tagged ``serve``, as the server reads it."""
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    (meta,) = [m for m in proto.meta_graphs if "serve" in m.meta_info_def.tags]
    return meta


def tensor_spec(tensor_info):
    return (tf.dtypes.as_dtype(tensor_info.dtype).name,
            [d.size for d in tensor_info.tensor_shape.dim])


# --------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def cifar_images(cifar_subset):
    """One real CIFAR-10 test JPEG per class, in class order."""
    return [sorted(glob.glob(os.path.join(cifar_subset, "test", name, "*.jpg")))[0]
            for name in CLASSES]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model, logits twin, version dir) of one export at 32x32."""
    model = small_model()
    base = str(tmp_path_factory.mktemp("export"))
    version_dir = export.export_saved_model(
        model, base, image_size=32, class_names=CLASSES)
    return model, logits_twin(model, 32), version_dir


# --------------------------------------------------------------------------
# The export's format


def test_signature_defs_as_the_server_reads_them(exported):
    _, _, version_dir = exported
    meta = saved_model_proto(version_dir)
    assert {"serving_default", "serving_bytes"} <= set(meta.signature_def)
    outputs = {"logits": ("float32", [-1, 10]), "probabilities": ("float32", [-1, 10]),
               "classes": ("int32", [-1])}
    expected_inputs = {"serving_default": {"images": ("uint8", [-1, -1, -1, 3])},
                       "serving_bytes": {"image_bytes": ("string", [-1])}}
    for name, inputs in expected_inputs.items():
        signature = meta.signature_def[name]
        assert signature.method_name == "tensorflow/serving/predict"
        assert {k: tensor_spec(v) for k, v in signature.inputs.items()} == inputs
        assert {k: tensor_spec(v) for k, v in signature.outputs.items()} == outputs


def test_labels_ship_as_an_asset(exported):
    _, _, version_dir = exported
    with open(os.path.join(version_dir, "assets", "labels.txt")) as f:
        assert f.read() == "".join(f"{name}\n" for name in CLASSES)
    assert "labels.txt" in [a.filename for a in saved_model_proto(version_dir).asset_file_def]
    assert export.read_labels(version_dir) == CLASSES


def test_served_outputs_match_keras_on_real_images(exported, cifar_images, tmp_path):
    model, twin, version_dir = exported
    pixels = [decode(path) for path in cifar_images]
    # A PNG of another size in the same bytes batch: decoded and resized per image.
    png_path = str(tmp_path / "wide.png")
    wide = tf.cast(tf.image.resize(pixels[3], (60, 80)), tf.uint8)
    tf.io.write_file(png_path, tf.io.encode_png(wide))
    np.save(tmp_path / "batch.npy", np.stack(pixels))
    files = cifar_images + [png_path]
    requests = [{"signature": "serving_default", "npy": str(tmp_path / "batch.npy")},
                {"signature": "serving_bytes", "files": files}]

    (by_pixels, by_bytes) = serve_in_fresh_process(version_dir, requests, str(tmp_path / "out"))

    pixel_reference = keras_reference(model, twin, pixels, 32)
    bytes_reference = keras_reference(model, twin, [decode(p) for p in files], 32)
    for served in by_pixels:
        assert_matches(served, pixel_reference)
    for served in by_bytes:
        assert_matches(served, bytes_reference)
        assert served["classes"].shape == (len(files),)


def test_bigger_model_resizes_and_crops_any_image_size(cifar_images, tmp_path):
    size = 72  # above preprocessing.SMALL_IMAGE_MAX: resize, then centre crop
    model = small_model(size)
    twin = logits_twin(model, size)
    version_dir = export.export_saved_model(
        model, str(tmp_path), image_size=size, class_names=CLASSES)
    loaded = export.load_serving(version_dir)
    small = decode(cifar_images[0])
    wide = tf.cast(tf.image.resize(decode(cifar_images[1]), (60, 80)), tf.uint8).numpy()
    serve_images = loaded.signatures["serving_default"]
    for image in (small, wide):
        served = {k: v.numpy() for k, v in serve_images(images=tf.constant(image[None])).items()}
        assert_matches(served, keras_reference(model, twin, [image], size))
    blobs = [tf.io.encode_png(small).numpy(), tf.io.encode_jpeg(wide).numpy()]
    served = loaded.signatures["serving_bytes"](image_bytes=tf.constant(blobs))
    decoded = [tf.io.decode_image(b, channels=3).numpy() for b in blobs]
    assert_matches({k: v.numpy() for k, v in served.items()},
                   keras_reference(model, twin, decoded, size))


def test_empty_batches_give_empty_outputs(exported):
    _, _, version_dir = exported
    loaded = export.load_serving(version_dir)
    for name, feed in [("serving_default", {"images": tf.zeros([0, 32, 32, 3], tf.uint8)}),
                       ("serving_bytes", {"image_bytes": tf.constant([], tf.string)})]:
        served = loaded.signatures[name](**feed)
        assert served["logits"].shape == (0, 10) and served["classes"].shape == (0,)


def test_linear_classifier_gets_softmax_probabilities(tmp_path):
    model = small_model(classifier_activation=None)
    version_dir = export.export_saved_model(
        model, str(tmp_path), image_size=32, class_names=CLASSES)
    images = np.random.RandomState(0).randint(0, 256, (3, 32, 32, 3)).astype(np.uint8)
    served = export.load_serving(version_dir).signatures["serving_default"](
        images=tf.constant(images))
    logits = np.asarray(model(preprocessing.eval_transform(tf.constant(images), 32)))
    np.testing.assert_allclose(served["logits"].numpy(), logits, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(
        served["probabilities"].numpy(), tf.nn.softmax(logits).numpy(), atol=TOLERANCE, rtol=0)


def test_softmax_activation_layer_top_gives_its_input_as_logits(tmp_path):
    features = small_model(classifier_activation=None)
    outputs = keras.layers.Activation("softmax", name="probabilities")(features.output)
    model = keras.Model(features.input, outputs)
    version_dir = export.export_saved_model(
        model, str(tmp_path), image_size=32, class_names=CLASSES)
    images = np.random.RandomState(1).randint(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    served = export.load_serving(version_dir).signatures["serving_default"](
        images=tf.constant(images))
    batch = preprocessing.eval_transform(tf.constant(images), 32)
    assert_matches({k: v.numpy() for k, v in served.items()},
                   {"logits": np.asarray(features(batch)),
                    "probabilities": np.asarray(model(batch))})


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_model_serves_float32(policy, tmp_path):
    reference = small_model()
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        model = small_model()
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    model.set_weights(reference.get_weights())
    assert model.get_layer("conv1_conv").compute_dtype == policy.split("_")[1]
    version_dir = export.export_saved_model(
        model, str(tmp_path), image_size=32, class_names=CLASSES)
    images = np.random.RandomState(0).randint(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    served = export.load_serving(version_dir).signatures["serving_default"](
        images=tf.constant(images))
    assert served["logits"].dtype == tf.float32
    assert served["probabilities"].dtype == tf.float32
    assert served["classes"].dtype == tf.int32
    expected = reference(preprocessing.eval_transform(tf.constant(images), 32))
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=2e-2)


# --------------------------------------------------------------------------
# Versions


def test_versions_increment_skip_other_names_and_never_overwrite(tmp_path):
    base = str(tmp_path)
    for name in ("latest", "3.bak", "-1", "٣"):  # not integer versions
        os.makedirs(os.path.join(base, name))
    model = small_model()
    names = CLASSES

    first = export.export_saved_model(model, base, image_size=32, class_names=names)
    assert first == os.path.join(base, "1")
    assert export.export_saved_model(
        model, base, image_size=32, class_names=names, version=7) == os.path.join(base, "7")
    assert export.export_saved_model(
        model, base, image_size=32, class_names=names) == os.path.join(base, "8")

    stamp = os.path.getmtime(os.path.join(first, "saved_model.pb"))
    with pytest.raises(ValueError, match=r"version 1 already exists"):
        export.export_saved_model(model, base, image_size=32, class_names=names, version=1)
    assert os.path.getmtime(os.path.join(first, "saved_model.pb")) == stamp
    assert sorted(os.listdir(base)) == sorted(["1", "7", "8", "latest", "3.bak", "-1", "٣"])
    assert export.list_versions(base) == [1, 7, 8]


def _files_digest(folder):
    """{relative path: sha256} of every file under FOLDER."""
    digest = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                digest[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return digest


def _staging_names(base):
    return [name for name in os.listdir(base) if name.startswith(".tmp-")]


def _wait_for(condition, process, timeout=240):
    deadline = time.time() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the exporter exited ({process.returncode}) before the point to "
                        f"kill it at:\n{process.stdout.read()[-3000:]}")
        assert time.time() < deadline, "the exporter never reached the point to kill it at"
        time.sleep(0.005)


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["write", "before-rename", "after-rename"])
def test_sigkill_during_export_never_leaves_a_partial_version(moment, tmp_path):
    """SIGKILL while the SavedModel is written, and right before / after the
    rename: every numbered version present loads as the server loads it (or
    none is there), and the next export succeeds and removes the dead
    exporter's staging folder."""
    base = tmp_path / "serving"
    base.mkdir()
    paused = tmp_path / "paused"
    process = subprocess.Popen(
        [sys.executable, "-c", EXPORTER_SCRIPT, str(base), moment, str(paused)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        if moment == "write":  # the SavedModel folder being written has appeared
            _wait_for(lambda: export.list_versions(str(base)) or any(
                os.path.isdir(os.path.join(base, n, "model")) for n in _staging_names(base)),
                process)
        else:
            _wait_for(paused.exists, process)
        process.send_signal(signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    assert len(_staging_names(base)) == 1  # killed half-way: its staging folder is left
    published = export.list_versions(str(base))
    assert published == ([1] if moment == "after-rename" else [])
    for version in published:
        loaded = export.load_serving(os.path.join(base, str(version)))
        assert set(export.SIGNATURES) <= set(loaded.signatures)
        assert export.read_labels(os.path.join(base, str(version)), 10) == [
            str(i) for i in range(10)]

    path = export.export_saved_model(small_model(), str(base), image_size=32,
                                     class_names=CLASSES)
    assert path == os.path.join(base, str(len(published) + 1))
    assert _staging_names(base) == []
    assert export.read_labels(path) == CLASSES


def _start_tick(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[19]


def test_export_removes_only_dead_staging_folders_of_this_host(tmp_path):
    """Staging folders are named .tmp-<version>-<host>-<pid>-<start>: those of
    a finished process on this host go, those of a live process (the pid
    and its start time match), of another host, or of a reused pid's
    earlier owner (start time differs) are judged correctly."""
    host = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
    other_host = "0" * 8 if host != "0" * 8 else "1" * 8
    finished = subprocess.Popen(["true"])
    finished.wait()
    live = subprocess.Popen(["sleep", "60"])
    try:
        names = {
            "dead": f".tmp-3-{host}-{finished.pid}-0",
            "reused pid": f".tmp-4-{host}-{live.pid}-1",
            "live": f".tmp-5-{host}-{live.pid}-{_start_tick(live.pid)}",
            "other host": f".tmp-6-{other_host}-{finished.pid}-0",
            "not staging": ".tmp-notes",
        }
        for name in names.values():
            os.makedirs(tmp_path / name / "model")
        export.export_saved_model(small_model(), str(tmp_path), image_size=32,
                                  class_names=CLASSES)
        left = set(os.listdir(tmp_path))
    finally:
        live.kill()
        live.wait()
    assert left == {"1", names["live"], names["other host"], names["not staging"]}


def test_failed_export_leaves_no_temp_folder(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "build_archive", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        export.export_saved_model(small_model(), str(tmp_path), image_size=32, class_names=CLASSES)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kwargs, message", [
    ({"class_names": CLASSES[:5]}, "5 class names for a model with 10 classes"),
    ({"class_names": CLASSES[:9] + ["two\nlines"]}, "single lines"),
    ({"version": -1}, "non-negative integer, got -1"),
    ({"version": "2"}, "non-negative integer, got '2'"),
    ({"image_size": 64}, r"does not take 64x64x3 images"),
])
def test_bad_export_arguments(kwargs, message, tmp_path):
    arguments = {"image_size": 32, "class_names": CLASSES, **kwargs}
    with pytest.raises(ValueError, match=message):
        export.export_saved_model(small_model(), str(tmp_path), **arguments)
    assert os.listdir(tmp_path) == []


def test_headless_or_sigmoid_models_are_refused(tmp_path):
    keras.utils.set_random_seed(0)
    headless = build_model("resnet20", include_top=False, pooling="avg",
                           input_shape=(32, 32, 3), depths=(1, 1, 1))
    with pytest.raises(ValueError, match="not a classifier"):
        export.export_saved_model(headless, str(tmp_path), image_size=32, class_names=CLASSES)
    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = keras.layers.Dense(10, activation="sigmoid", name="predictions")(pooled)
    sigmoid = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match="activation 'sigmoid'; expected 'softmax'"):
        export.export_saved_model(sigmoid, str(tmp_path), image_size=32, class_names=CLASSES)


# --------------------------------------------------------------------------
# Command line


def make_model_dir(path, model):
    os.makedirs(path, exist_ok=True)
    model.save(os.path.join(path, rundir.BEST_MODEL))
    rundir.write_run_config(path, {
        "model": "resnet20", "image_size": 32, "class_names": CLASSES,
        "num_classes": 10, "dataset": "cifar10"})
    return str(path)


def run_cli(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_export_then_predict(cifar_images, tmp_path, capsys):
    model_dir = make_model_dir(tmp_path / "run", small_model())
    base = str(tmp_path / "serving")

    code, out, err = run_cli(["export", "--model-dir", model_dir, "--export-dir", base], capsys)
    assert code == 0, err
    assert f"exported resnet20 to {os.path.join(base, '1')}" in out
    assert ("serving_default: images uint8 [?, ?, ?, 3] -> logits float32 [?, 10], "
            "probabilities float32 [?, 10], classes int32 [?]") in out
    assert "serving_bytes: image_bytes string [?] -> logits" in out

    code, out, err = run_cli(["predict", "--export-dir", base] + cifar_images[:2], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"model: {os.path.join(base, '1')}"
    assert lines[1] == cifar_images[0] and lines[7] == cifar_images[1]
    ranked = [line.split() for line in lines[2:7]]
    assert [r[0] for r in ranked] == ["1.", "2.", "3.", "4.", "5."]
    assert all(r[1] in CLASSES for r in ranked)
    probabilities = [float(r[2]) for r in ranked]
    assert probabilities == sorted(probabilities, reverse=True)

    version_dir = os.path.join(base, "1")
    code, out, _ = run_cli(
        ["predict", "--export-dir", version_dir, "--top", "3", cifar_images[0]], capsys)
    assert code == 0 and len(out.splitlines()) == 1 + 1 + 3


def test_cli_export_refuses_an_existing_version(tmp_path, capsys):
    model_dir = make_model_dir(tmp_path / "run", small_model())
    base = str(tmp_path / "serving")
    os.makedirs(os.path.join(base, "4"))
    code, out, err = run_cli(
        ["export", "--model-dir", model_dir, "--export-dir", base, "--version", "4"], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "export version 4 already exists" in err
    assert sorted(os.listdir(base)) == ["4"]


def test_cli_export_into_a_version_folder_is_refused(exported, tmp_path, capsys):
    """--export-dir naming an existing version (not its base): exit 2, one
    line, nothing in the version changes."""
    _, _, version_dir = exported
    before = _files_digest(version_dir)
    model_dir = make_model_dir(tmp_path / "run", small_model())
    code, _, err = run_cli(["export", "--model-dir", model_dir, "--export-dir", version_dir],
                           capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"resnet-keras export: error: export dir {version_dir!r} is an "
                          "existing exported version"), err
    assert _files_digest(version_dir) == before


def test_cli_train_export_onto_an_existing_version(cifar_subset, tmp_path, capsys):
    """train --export-dir BASE/1 where BASE/1 is an export: exit 2, one line,
    the version's files unchanged and nothing added to it."""
    base = str(tmp_path / "serving")
    version_dir = export.export_saved_model(small_model(), base, image_size=32,
                                            class_names=CLASSES)
    before = _files_digest(version_dir)
    code, _, err = run_cli(
        ["train", "--model", "resnet20", "--dataset", f"folder:{cifar_subset}",
         "--epochs", "1", "--batch-size", "8", "--steps-per-epoch", "1",
         "--strategy", "one-device", "--seed", "0", "--model-dir", str(tmp_path / "run"),
         "--export-dir", version_dir], capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and "is an existing exported version" in err, err
    assert _files_digest(version_dir) == before
    assert os.listdir(base) == ["1"]
    # Refused before training: no run was written.
    assert not os.path.exists(tmp_path / "run" / "backup"), os.listdir(tmp_path / "run")


def test_cli_export_without_a_training_run(tmp_path, capsys):
    code, _, err = run_cli(
        ["export", "--model-dir", str(tmp_path), "--export-dir", str(tmp_path / "out")], capsys)
    assert code == 2 and err.count("\n") == 1 and "no training run" in err


def test_cli_predict_bad_inputs(exported, cifar_images, tmp_path, capsys):
    _, _, version_dir = exported
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "broken" / "3").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("not an image")
    cases = [
        ([str(tmp_path / "missing"), cifar_images[0]], "does not exist"),
        ([str(empty), cifar_images[0]], "no export found"),
        ([str(tmp_path / "broken"), cifar_images[0]], "is not a SavedModel"),
        ([version_dir, str(tmp_path / "nope.jpg")], "image file"),
        ([version_dir, str(tmp_path / "notes.txt")], "cannot decode image"),
        ([version_dir, str(empty)], f"image {str(empty)!r} is a directory; pass image files"),
    ]
    for (export_dir, image), message in cases:
        code, out, err = run_cli(["predict", "--export-dir", export_dir, image], capsys)
        assert code == 2, (export_dir, image, out)
        assert err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize("lines", [5, 11])
def test_cli_predict_refuses_labels_of_another_length(lines, exported, cifar_images,
                                                     tmp_path, capsys):
    """A labels.txt with fewer (or more) lines than classes: exit 2 at load,
    one line naming the file and both counts."""
    import shutil

    _, _, version_dir = exported
    copy = str(tmp_path / "1")
    shutil.copytree(version_dir, copy)
    labels_path = os.path.join(copy, "assets", "labels.txt")
    with open(labels_path, "w") as f:
        f.write("".join(f"class{i}\n" for i in range(lines)))
    code, out, err = run_cli(["predict", "--export-dir", copy, cifar_images[0]], capsys)
    assert code == 2 and out == "", out
    assert err == (f"resnet-keras predict: error: labels file {labels_path!r} has {lines} "
                   "lines for a model with 10 classes; it needs one class name a line, "
                   "in class-index order\n")


# --------------------------------------------------------------------------
# The example


@pytest.mark.slow
def test_export_and_serve_example_runs(tmp_path):
    if not os.path.isfile(CIFAR_TARBALL):
        pytest.skip(f"shared CIFAR-10 not found at {CIFAR_TARBALL}")
    script = os.path.join(REPO, "examples", "export_and_serve.py")
    result = subprocess.run(
        [sys.executable, script, "--export-dir", str(tmp_path), "--train-images", "100",
         "--epochs", "1", "--depths", "1,1,1", "--cifar-tarball", CIFAR_TARBALL],
        capture_output=True, text=True, timeout=300, cwd=REPO,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(
            filter(None, [REPO, os.environ.get("PYTHONPATH")]))})
    assert result.returncode == 0, result.stderr[-3000:]
    assert os.path.isfile(os.path.join(tmp_path, "1", "saved_model.pb"))
    assert result.stdout.count("true:") == 5
