"""LiteRT and ONNX exports, run by their own runtimes (ai-edge-litert or
tf.lite's interpreter; onnxruntime) in a fresh process on real CIFAR-10 test
images, against the Keras model on the same images."""
import glob
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import CIFAR_CLASSES
from resnet_keras import formats, preprocessing
from test_export import small_model

CLASSES = list(CIFAR_CLASSES)

# Runs a .tflite or .onnx file (argv[1]) on the uint8 images in argv[2] (.npy);
# writes the outputs by name to argv[3] (.npz) and the input/output names and
# dtypes as JSON on stdout.
RUNTIME = r"""
import json, sys
import keras
import numpy as np
path, images_path, out_path = sys.argv[1:4]
images = np.load(images_path)
if path.endswith(".onnx"):
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    names = [o.name for o in session.get_outputs()]
    outputs = dict(zip(names, session.run(names, {inp.name: images})))
    info = {"input": [inp.name, inp.type], "outputs": names}
else:
    try:
        from ai_edge_litert.interpreter import Interpreter
        runtime = "ai_edge_litert"
    except ImportError:
        import tensorflow as tf
        Interpreter, runtime = tf.lite.Interpreter, "tf.lite"
    interpreter = Interpreter(model_path=path)
    runner = interpreter.get_signature_runner()
    (name,) = runner.get_input_details()
    outputs = {}
    for start in range(0, len(images), 50):
        for key, value in runner(**{name: images[start:start + 50]}).items():
            outputs.setdefault(key, []).append(value)
    outputs = {k: np.concatenate(v) for k, v in outputs.items()}
    detail = runner.get_input_details()[name]
    info = {"input": [name, str(np.dtype(detail["dtype"]))], "outputs": sorted(outputs),
            "runtime": runtime}
np.savez(out_path, **outputs)
print(json.dumps(info))
"""


def run_in_fresh_process(path, images, tmp_path):
    images_path, out_path = str(tmp_path / "images.npy"), str(tmp_path / "out.npz")
    np.save(images_path, images)
    done = subprocess.run([sys.executable, "-c", RUNTIME, path, images_path, out_path],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(out_path) as data:
        return dict(data), json.loads(done.stdout.strip().splitlines()[-1])


def cifar_test_images(root, per_class):
    paths = []
    for name in CLASSES:
        paths += sorted(glob.glob(os.path.join(root, "test", name, "*.jpg")))[:per_class]
    return np.stack([tf.io.decode_jpeg(tf.io.read_file(p), 3).numpy() for p in paths])


def keras_probabilities(model, images):
    batch = preprocessing.eval_transform(tf.constant(images), 32)
    return np.asarray(model(batch, training=False), np.float64)


@pytest.fixture(scope="module")
def model():
    return small_model()


@pytest.mark.parametrize("fmt, quantize, tolerance", [
    ("litert", "none", 1e-4), ("litert", "float16", 1e-2), ("onnx", "none", 1e-4)])
def test_float_exports_match_keras(fmt, quantize, tolerance, model, cifar_subset, tmp_path):
    pytest.importorskip("onnxruntime" if fmt == "onnx" else "tensorflow")
    images = cifar_test_images(cifar_subset, 4)
    path = formats.export_file(model, str(tmp_path / "export"), fmt=fmt, image_size=32,
                               class_names=CLASSES, quantize=quantize)
    expected = {("litert", "none"): "model.tflite", ("litert", "float16"): "model-float16.tflite",
                ("onnx", "none"): "model.onnx"}[fmt, quantize]
    assert os.path.basename(path) == expected
    outputs, info = run_in_fresh_process(path, images, tmp_path)
    assert info["input"][1] in ("uint8", "tensor(uint8)")
    assert set(info["outputs"]) == {"probabilities", "classes"}
    reference = keras_probabilities(model, images)
    np.testing.assert_allclose(outputs["probabilities"], reference, atol=tolerance, rtol=0)
    assert outputs["classes"].dtype == np.int32
    agree = np.mean(outputs["classes"] == reference.argmax(1))
    assert agree >= (1.0 if tolerance <= 1e-4 else 0.9)
    with open(os.path.join(tmp_path, "export", "labels.txt")) as f:
        assert f.read().split("\n")[:-1] == CLASSES
    # Never overwritten.
    with pytest.raises(ValueError, match="already exists; nothing was overwritten"):
        formats.export_file(model, str(tmp_path / "export"), fmt=fmt, image_size=32,
                            class_names=CLASSES, quantize=quantize)


def test_int8_needs_representative_images_of_the_export_size(model, tmp_path):
    with pytest.raises(ValueError, match="int8 quantization needs representative images"):
        formats.export_file(model, str(tmp_path), fmt="litert", image_size=32, quantize="int8")
    with pytest.raises(ValueError, match=r"must be uint8 \[N, 32, 32, 3\], got float32"):
        formats.export_file(model, str(tmp_path), fmt="litert", image_size=32, quantize="int8",
                            representative_images=np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="ONNX exports are float32; --quantize int8 is a "
                                         "LiteRT option"):
        formats.export_file(model, str(tmp_path), fmt="onnx", image_size=32, quantize="int8")
    assert not os.listdir(tmp_path)


def test_cli_exports_litert_int8_calibrated_on_the_runs_training_images(model, cifar_subset,
                                                                      tmp_path, capsys):
    from resnet_keras import cli, rundir

    model_dir = tmp_path / "run"
    os.makedirs(model_dir)
    model.save(str(model_dir / rundir.BEST_MODEL))
    rundir.write_run_config(str(model_dir), {
        "model": "resnet20", "image_size": 32, "class_names": CLASSES, "num_classes": 10,
        "dataset": f"folder:{cifar_subset}"})
    base = str(tmp_path / "edge")
    status = cli.main(["export", "--model-dir", str(model_dir), "--export-dir", base,
                       "--format", "litert", "--quantize", "int8"])
    out, err = capsys.readouterr()
    assert status == 0, err
    path = os.path.join(base, "model-int8.tflite")
    assert f"exported resnet20 to {path}" in out and "uint8 [batch, 32, 32, 3]" in out
    images = cifar_test_images(cifar_subset, 4)
    outputs, info = run_in_fresh_process(path, images, tmp_path)
    assert info["input"][1] == "uint8"
    reference = keras_probabilities(model, images)
    # Full-integer arithmetic (probabilities in steps of 1/256): close to the float
    # model, not equal to it. (Top-1 agreement is measured on a trained model below.)
    assert np.abs(outputs["probabilities"] - reference).mean() < 0.02
    assert os.path.getsize(path) < 0.5 * os.path.getsize(
        formats.export_file(model, base, fmt="litert", image_size=32, class_names=CLASSES))
    # Options that do not go together are one line, exit 2.
    assert cli.main(["export", "--model-dir", str(model_dir), "--export-dir", base,
                     "--quantize", "int8"]) == 2
    assert "--quantize int8 is a LiteRT option (--format litert)" in capsys.readouterr().err
    assert cli.main(["export", "--model-dir", str(model_dir), "--export-dir", base,
                     "--format", "onnx", "--quantize", "float16"]) == 2
    assert "ONNX exports are float32" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["litert", "onnx"])
def test_a_mixed_precision_model_exports_in_float32(fmt, model, cifar_subset, tmp_path):
    """A run trained in mixed bfloat16 (the default on CPUs with native
    bfloat16) exports: the file computes in float32 with the same weights,
    so it equals the float32 model and the runtimes load it."""
    pytest.importorskip("onnxruntime" if fmt == "onnx" else "tensorflow")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = small_model()
    finally:
        keras.config.set_dtype_policy(previous)
    mixed.set_weights(model.get_weights())
    images = cifar_test_images(cifar_subset, 2)
    path = formats.export_file(mixed, str(tmp_path / "export"), fmt=fmt, image_size=32,
                               class_names=CLASSES)
    outputs, _ = run_in_fresh_process(path, images, tmp_path)
    np.testing.assert_allclose(outputs["probabilities"], keras_probabilities(model, images),
                               atol=1e-4, rtol=0)
