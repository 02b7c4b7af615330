"""A light start: ``import resnet_keras``, ``resnet-keras list`` and ``info NAME``
load neither TensorFlow nor Keras; Keras loads when a name needs it, quietly,
with the package's custom objects registered for ``keras.saving.load_model``."""
import json
import os
import subprocess
import sys
import time

import numpy as np

import resnet_keras
from conftest import REPO
from resnet_keras import specs

HEAVY = ("tensorflow", "keras", "tensorflow_datasets", "keras_tuner")

# Runs the command line in process, then reports which heavy modules it loaded.
CLI_CHILD = """
import json, sys
from resnet_keras import cli
code = cli.main(sys.argv[1:])
print("LOADED " + json.dumps([m for m in {heavy!r} if m in sys.modules]))
sys.exit(code)
"""


def user_env():
    """The environment of a user who set no TensorFlow log level."""
    return {k: v for k, v in os.environ.items()
            if k not in ("TF_CPP_MIN_LOG_LEVEL", "RESNET_KERAS_VERBOSE", "PYTHONWARNINGS")}


def run_python(code, *args, timeout=300):
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                            text=True, timeout=timeout, env=user_env(), cwd=REPO)
    return result, time.perf_counter() - start


def test_import_loads_no_backend():
    code = ("import resnet_keras, sys\n"
            "names = resnet_keras.list_models()\n"
            "resnet_keras.get_spec('resnet50'), resnet_keras.SPECS, resnet_keras.ModelSpec\n"
            "resnet_keras.resnet50, resnet_keras.drn_c_26\n"
            f"print(len(names), [m for m in {HEAVY!r} if m in sys.modules])\n")
    result, _ = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(len(specs.SPECS)), "[]"], result.stdout


def _cli(*argv):
    result, seconds = run_python(CLI_CHILD.format(heavy=HEAVY), *argv)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    *out, loaded = result.stdout.splitlines()
    assert loaded.startswith("LOADED ")
    return out, json.loads(loaded[len("LOADED "):]), seconds


def test_list_and_info_answer_without_tensorflow_or_keras():
    """The registry and the pinned FACTS answer; the bound is generous (a
    quiet machine takes well under 2 s), the import-free property is exact."""
    out, loaded, seconds = _cli("list")
    assert [line.split()[0] for line in out] == resnet_keras.list_models()
    assert loaded == [] and seconds < 5, (loaded, seconds)
    for name in ("resnet50", "resnet20"):
        out, loaded, seconds = _cli("info", name)
        facts = specs.get_facts(name)
        assert f"parameters:   {facts.params:,}" in out, out
        assert f"input:        {facts.image_size}x{facts.image_size}x3" in out, out
        assert loaded == [] and seconds < 5, (name, loaded, seconds)


def test_every_public_name_resolves():
    """``from resnet_keras import *`` and dir() see every public name, the
    lazy ones (builders, HyperResNet) included."""
    assert set(resnet_keras.__all__) <= set(dir(resnet_keras))
    namespace = {}
    exec("from resnet_keras import *", namespace)
    assert set(resnet_keras.__all__) <= set(namespace)
    from resnet_keras import models, tuning

    assert namespace["build_model"] is models.build_model
    assert namespace["HyperResNet"] is tuning.HyperResNet
    assert resnet_keras.weights.load_torch_state_dict  # a submodule, as an attribute


def test_a_saved_model_loads_after_only_import_resnet_keras(tmp_path):
    """The custom layers register when Keras loads, even when the user imports
    it after the package; TensorFlow's load-time lines stay off stderr."""
    model = resnet_keras.resnet20(classes=3, input_shape=(16, 16, 3))
    path, images = str(tmp_path / "r20.keras"), str(tmp_path / "images.npy")
    model.save(path)
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    np.save(images, x)
    code = ("import sys\nimport numpy as np\nimport resnet_keras\n"
            "assert 'keras' not in sys.modules\n"
            "import keras\n"
            "model = keras.saving.load_model(sys.argv[1], safe_mode=True)\n"
            "print(np.asarray(model(np.load(sys.argv[2]), training=False)).tolist())\n")
    result, _ = run_python(code, path, images)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == ""
    np.testing.assert_allclose(json.loads(result.stdout), model(x, training=False),
                               rtol=1e-5, atol=1e-6)
