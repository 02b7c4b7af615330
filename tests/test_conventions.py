"""Each weight's own input convention, from the registry to the served graph.

The references are computed by keras.applications itself (its ResNet50 and
ResNet50V2 and their ``preprocess_input``) and by torchvision's ResNet-50 on
torchvision's normalisation; the exports are loaded the way TF Serving loads
them, in a fresh process.
"""
import glob
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

import resnet_keras
from conftest import require_torch
from resnet_keras import conventions, pretrained, specs
from resnet_keras import weights as weights_lib
from resnet_keras.export import export_saved_model
from reference import torch_keys
from test_weights import _randomise_bn

KERAS_MODULES = {"caffe": keras.applications.resnet, "tf": keras.applications.resnet_v2}


@pytest.fixture(scope="module")
def photos(cifar_subset):
    """Four real CIFAR-10 photos as uint8 256 x 256 images."""
    paths = sorted(glob.glob(os.path.join(cifar_subset, "test", "*", "*.jpg")))[::10][:4]
    return np.stack([np.asarray(Image.open(p).convert("RGB").resize((256, 256), Image.BICUBIC))
                     for p in paths]).astype(np.uint8)


# ---------------------------------------------------------------------------
# preprocess_input and the registry


@pytest.mark.parametrize("convention", ["caffe", "tf", "torch"])
def test_preprocess_input_is_keras_applications(convention, photos):
    """preprocess_input(x, convention) equals keras.applications' on numpy
    arrays and on tensors; numpy in gives numpy out."""
    x = photos.astype(np.float32)
    if convention == "torch":
        reference = keras.applications.imagenet_utils.preprocess_input(x.copy(), mode="torch")
    else:
        reference = KERAS_MODULES[convention].preprocess_input(x.copy())
    ours = resnet_keras.preprocess_input(photos, convention)
    assert isinstance(ours, np.ndarray) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, atol=1e-5, rtol=0)
    tensor = resnet_keras.preprocess_input(keras.ops.convert_to_tensor(photos), convention)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(tensor), reference, atol=1e-5, rtol=0)
    np.testing.assert_allclose(conventions.restore_pixels(ours, convention), x, atol=1e-3)


def test_preprocess_input_reads_the_model_and_refuses_unknown_names():
    model = resnet_keras.resnet20(classes=10, input_shape=(32, 32, 3))
    assert model.preprocessing == "torch"
    x = np.full((1, 2, 2, 3), 255, np.uint8)
    np.testing.assert_allclose(resnet_keras.preprocess_input(x, model),
                               resnet_keras.preprocess_input(x, "torch"))
    model.preprocessing = "tf"
    np.testing.assert_allclose(resnet_keras.preprocess_input(x, model), np.ones_like(x))
    with pytest.raises(ValueError, match=r"unknown preprocessing convention 'rgb'; "
                                         r"choices: torch, caffe, tf"):
        resnet_keras.preprocess_input(x, "rgb")
    with pytest.raises(ValueError, match="choices: torch, caffe, tf"):
        resnet_keras.resnet20(preprocessing="bgr")


@pytest.mark.parametrize("name", sorted(pretrained.PRETRAINED))
def test_registry_row(name):
    """Every source row names a registered model and full metadata; the
    keras.applications rows' convention is the one keras.applications' own
    preprocess_input applies."""
    row = pretrained.PRETRAINED[name]
    assert name in specs.SPECS and row.model == name
    assert row.convention in conventions.CONVENTIONS
    assert row.num_classes == 1000 and row.input_size == 224
    assert 0 < row.crop_fraction <= 1 and row.interpolation in ("bilinear", "bicubic")
    assert row.top1 is None or 0.6 < row.top1 < 0.9
    assert row.url.endswith(row.file_name)
    assert weights_lib.imagenet_file(name) == (row.file_name, row.url, row.file_hash)
    if row.origin == "keras.applications":
        assert row.hash_algorithm == "md5" and len(row.file_hash) == 32
        module = getattr(keras.applications, "resnet_v2" if "v2" in name else "resnet")
        probe = np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3) * 3.0
        np.testing.assert_allclose(resnet_keras.preprocess_input(probe, row.convention),
                                   module.preprocess_input(probe.copy()), atol=1e-5)
    else:
        assert row.convention == "torch" and row.hash_algorithm == "sha256"
        assert row.file_name.split("-")[-1].split(".")[0] == row.file_hash
    assert weights_lib.weights_convention("imagenet", name) == row.convention


def test_weights_convention_rules(tmp_path):
    assert weights_lib.weights_convention(None, "resnet50") is None
    for suffix in (".npz", ".pth", ".safetensors"):
        assert weights_lib.weights_convention(str(tmp_path / f"w{suffix}"), "resnet50_v1") \
            == "torch"
    h5 = str(tmp_path / "w.weights.h5")
    assert weights_lib.weights_convention(h5, "resnet50_v1") == "caffe"
    assert weights_lib.weights_convention(h5, "resnet101v2") == "tf"
    assert weights_lib.weights_convention(h5, "resnet20") == "torch"
    run = tmp_path / "run"
    run.mkdir()
    (run / "run_config.json").write_text(json.dumps({"model": "resnet50_v1"}))
    assert weights_lib.weights_convention(str(run / "best.keras"), "resnet50_v1") == "torch"
    (run / "run_config.json").write_text(json.dumps({"model": "resnet50_v1",
                                                     "preprocessing": "tf"}))
    assert weights_lib.weights_convention(str(run / "best.keras"), "resnet50_v1") == "tf"


# ---------------------------------------------------------------------------
# Served exports against keras.applications and torchvision

# Loads each export in one fresh process with TF Serving's loader (tag
# "serve", the signature by name) and runs serving_default on the photos.
SERVE_ALL = r"""
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import tensorflow as tf

photos = np.load(sys.argv[1])
for export_dir in sys.argv[2:]:
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], export_dir)
        signature = meta.signature_def["serving_default"]
        fetches = {k: v.name for k, v in signature.outputs.items()}
        out = sess.run(fetches, {signature.inputs["images"].name: photos})
    np.savez(os.path.join(os.path.dirname(os.path.dirname(export_dir)), "served.npz"), **out)
"""
CASES = ("resnet50_v1", "resnet50v2", "resnet50")


def _peaked_classifier(features, rng):
    """(kernel [F, 1000], bias) giving logits of std ~4 on FEATURES [B, F], so
    that the probabilities have a real spread and a wrong input shows in them."""
    kernel = rng.normal(0, 1, (features.shape[-1], 1000))
    return kernel * 4.0 / (features @ kernel).std(), rng.normal(0, 0.1, 1000)


def _keras_case(name, app_class, convention, photos, folder):
    """keras.applications model -> .weights.h5 -> our model: (model, expected, wrong)."""
    keras.utils.set_random_seed(3)
    app = getattr(keras.applications, app_class)(weights=None)
    rng = np.random.default_rng(1)
    _randomise_bn(app, rng)
    crop = photos[:, 16:240, 16:240].astype(np.float32)
    x = KERAS_MODULES[convention].preprocess_input(crop.copy())
    pooled = np.asarray(keras.Model(app.input, app.get_layer("avg_pool").output)(x))
    app.get_layer("predictions").set_weights(_peaked_classifier(pooled, rng))
    path = os.path.join(folder, f"{name}.weights.h5")
    app.save_weights(path)
    expected = np.asarray(app(x))
    wrong = np.asarray(app(resnet_keras.preprocess_input(crop, "torch")))
    return resnet_keras.build_model(name, weights=path), expected, wrong


def _torchvision_features(state_dict, images):
    """torchvision's ResNet-50 (v1.5: stride on the 3x3) up to the pooled
    features, written with torch.nn.functional on a torchvision state dict;
    NHWC float64 in."""
    torch = require_torch()
    functional = torch.nn.functional
    sd = {k: torch.from_numpy(v) for k, v in state_dict.items()}

    def bn(x, prefix):
        return functional.batch_norm(x, sd[f"{prefix}.running_mean"],
                                     sd[f"{prefix}.running_var"], sd[f"{prefix}.weight"],
                                     sd[f"{prefix}.bias"], False, 0.0, 1e-5)

    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    x = functional.relu(bn(functional.conv2d(x, sd["conv1.weight"], stride=2, padding=3), "bn1"))
    x = functional.max_pool2d(x, 3, 2, 1)
    for stage, blocks in enumerate((3, 4, 6, 3), 1):
        for b in range(blocks):
            p, stride = f"layer{stage}.{b}", 2 if b == 0 and stage > 1 else 1
            y = functional.relu(bn(functional.conv2d(x, sd[f"{p}.conv1.weight"]), f"{p}.bn1"))
            y = functional.relu(bn(functional.conv2d(y, sd[f"{p}.conv2.weight"], stride=stride,
                                                     padding=1), f"{p}.bn2"))
            y = bn(functional.conv2d(y, sd[f"{p}.conv3.weight"]), f"{p}.bn3")
            if b == 0:
                x = bn(functional.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride),
                       f"{p}.downsample.1")
            x = functional.relu(x + y)
    return x.mean((2, 3)).numpy()


def _softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _torch_case(photos, folder):
    """A torchvision-shaped state dict (He-initialised convolutions, realistic
    BatchNorm statistics) -> .npz -> our resnet50: (model, expected, wrong)."""
    rng = np.random.default_rng(0)
    state = {}
    for key, shape in torch_keys("resnet50"):
        if key.endswith("num_batches_tracked"):
            state[key] = np.zeros(shape, np.int64)
        elif len(shape) == 4:
            state[key] = rng.normal(0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
        elif key.endswith(("running_var", "weight")):
            state[key] = rng.uniform(0.8, 1.2, shape)
        else:
            state[key] = rng.normal(0, 0.05, shape)
    crop = photos[:, 16:240, 16:240].astype(np.float64)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    features = _torchvision_features(state, (crop / 255.0 - mean) / std)
    kernel, bias = _peaked_classifier(features, rng)
    state["fc.weight"], state["fc.bias"] = kernel.T.copy(), bias
    wrong_features = _torchvision_features(state, crop / 127.5 - 1.0)
    path = os.path.join(folder, "resnet50.npz")
    np.savez(path, **state)
    return (resnet_keras.build_model("resnet50", weights=path), _softmax(features @ kernel + bias),
            _softmax(wrong_features @ kernel + bias))


@pytest.fixture(scope="module")
def served(photos, tmp_path_factory):
    """{name: (our model's convention, served outputs, expected, wrong)}: each
    model exported with export_saved_model(model, base, image_size=224,
    class_names=None) and served in one fresh process."""
    require_torch()
    folder = str(tmp_path_factory.mktemp("conventions"))
    cases, versions = {}, []
    for name in CASES:
        if name == "resnet50":
            model, expected, wrong = _torch_case(photos, folder)
        else:
            app_class, convention = {"resnet50_v1": ("ResNet50", "caffe"),
                                     "resnet50v2": ("ResNet50V2", "tf")}[name]
            model, expected, wrong = _keras_case(name, app_class, convention, photos, folder)
        base = os.path.join(folder, name, "export")
        versions.append(export_saved_model(model, base, image_size=224, class_names=None))
        cases[name] = (model.preprocessing, versions[-1], expected, wrong)
        del model
    np.save(os.path.join(folder, "photos.npy"), photos)
    result = subprocess.run([sys.executable, "-c", SERVE_ALL, os.path.join(folder, "photos.npy"),
                             *versions], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = {}
    for name, (convention, version, expected, wrong) in cases.items():
        with np.load(os.path.join(folder, name, "served.npz")) as data:
            out[name] = (convention, version, dict(data), expected, wrong)
    return out


@pytest.mark.parametrize("name,convention", [
    ("resnet50_v1", "caffe"), ("resnet50v2", "tf"), ("resnet50", "torch")])
def test_export_serves_what_the_reference_predicts(name, convention, served):
    """For uint8 256 x 256 photos, the export serves what the reference
    predicts on its own preprocessing of the 224 centre crop:
    keras.applications' ResNet50 / ResNet50V2 (loaded into resnet50_v1 /
    resnet50v2 through a .weights.h5 saved from them) on its preprocess_input,
    torchvision's ResNet-50 (a state dict loaded into resnet50) on its
    normalisation. The reference on another convention differs visibly, so
    the check can fail."""
    ours, version, out, expected, wrong = served[name]
    assert ours == convention
    np.testing.assert_allclose(out["probabilities"], expected, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(out["classes"], expected.argmax(-1))
    assert np.abs(wrong - expected).max() > 0.05
    with open(os.path.join(version, "assets", "labels.txt")) as f:
        assert f.read().split("\n")[:3] == ["0", "1", "2"]


def test_a_failed_download_says_which_file_to_place_where(monkeypatch, tmp_path):
    """fyu/drn's server is often down: the error names the URL, the file, the
    cache path and its hash, in one line."""
    import urllib.error

    def offline(fname, origin, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(ValueError) as err:
        weights_lib.fetch_imagenet("drn_c_26")
    message = str(err.value)
    assert "\n" not in message
    assert "http://dl.yf.io/drn/drn_c_26-ddedf421.pth (URLError)" in message
    assert f"place it at {tmp_path / 'models' / 'drn_c_26-ddedf421.pth'}" in message
    assert "sha256 starting ddedf421" in message
