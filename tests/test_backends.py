"""The model builders on Keras' JAX backend, with TensorFlow kept out of the process."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import resnet_keras

pytest.importorskip("jax")

# (model, input size): a CIFAR ResNet, an ImageNet ResNet and a dilated DRN.
CASES = (("resnet20", 32), ("resnet18", 64), ("drn_c_26", 64))

CHILD = """
import json, sys
sys.modules["tensorflow"] = None  # any import of TensorFlow now fails
import numpy as np
import keras
import resnet_keras

assert keras.backend.backend() == "jax"
out = {}
for name, size, weights, images in json.loads(sys.argv[1]):
    model = resnet_keras.build_model(name, classes=10, input_shape=(size, size, 3))
    model.load_weights(weights)
    logits = model(np.load(images), training=False)
    out[name] = {"params": model.count_params(), "macs": resnet_keras.count_macs(model),
                 "outputs": np.asarray(logits).tolist()}
print("RESULT " + json.dumps(out))
"""


def test_jax_backend_builds_the_same_models_without_tensorflow(tmp_path):
    """Same parameters, multiply-adds and outputs (same weights) as on TensorFlow."""
    rng = np.random.default_rng(0)
    jobs, expected = [], {}
    for name, size in CASES:
        model = resnet_keras.build_model(name, classes=10, input_shape=(size, size, 3))
        weights = str(tmp_path / f"{name}.weights.h5")
        images = str(tmp_path / f"{name}.npy")
        model.save_weights(weights)
        np.save(images, rng.normal(size=(2, size, size, 3)).astype(np.float32))
        expected[name] = (model.count_params(), resnet_keras.count_macs(model),
                          np.asarray(model(np.load(images), training=False)))
        jobs.append((name, size, weights, images))
    process = subprocess.run([sys.executable, "-c", CHILD, json.dumps(jobs)],
                             env=dict(os.environ, KERAS_BACKEND="jax"),
                             capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr[-3000:]
    (line,) = [x for x in process.stdout.splitlines() if x.startswith("RESULT ")]
    got = json.loads(line[len("RESULT "):])
    for name, (params, macs, outputs) in expected.items():
        assert got[name]["params"] == params and got[name]["macs"] == macs
        np.testing.assert_allclose(got[name]["outputs"], outputs, rtol=1e-4, atol=1e-4)
