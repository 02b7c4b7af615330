"""Weights: keras.applications files, PyTorch state dicts and the golden vectors.

The PyTorch side needs no torch: state dicts are regenerated bit for bit by
the shared golden recipe (numpy only) and the golden vectors are the
reference outputs of torchvision / fyu/drn on them.
"""
import glob
import os

import keras
import numpy as np
import pytest
from PIL import Image

import resnet_keras
from resnet_keras import weight_files
from resnet_keras import weights as weights_lib
from resnet_keras.weights import load_torch_state_dict, torch_key_map
from conftest import require_torch
from reference import GOLDEN, TORCH_KEYS, golden_recipe, need_reference, reference_state_dict

KEY_FILES = sorted(glob.glob(os.path.join(TORCH_KEYS, "*.keys.json")))
CLASSIFIERS = [os.path.basename(f)[:-len(".keys.json")] for f in KEY_FILES
               if not f.endswith("_seg19.keys.json")]
# Big models: several seconds each to build and fill on 2 cores.
BIG = {"resnet101", "resnet152", "resnext101_32x8d", "wide_resnet50_2",
       "wide_resnet101_2", "drn_d_105"}


def rel_l2(value, reference):
    return float(np.linalg.norm(value - reference) / np.linalg.norm(reference))


def snapshot(model):
    return [np.array(v) for v in model.get_weights()]


def assert_unchanged(model, before):
    after = model.get_weights()
    assert len(after) == len(before)
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a, b)


def assert_loaded_exactly(model, sd):
    """Every Keras weight equals its converted PyTorch counterpart."""
    key_map = torch_key_map(model, base=any(k.startswith("base.") for k in sd))
    for key, (variable, _, to_keras) in key_map.items():
        np.testing.assert_array_equal(np.asarray(variable), to_keras(sd[key]), err_msg=key)


# ---------------------------------------------------------------------------
# keras.applications compatibility
# ---------------------------------------------------------------------------

KERAS_APPS = {
    "resnet50_v1": ("ResNet50", "resnet"),
    "resnet101_v1": ("ResNet101", "resnet"),
    "resnet152_v1": ("ResNet152", "resnet"),
    "resnet50v2": ("ResNet50V2", "resnet_v2"),
}
SIZE = 64


def _save_legacy_h5(model, path):
    """Write ``model``'s weights as keras.applications' legacy .h5 files are written."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return path


def _randomise_bn(model, rng):
    # Distinct BN parameters, so that a BN weight loaded into the wrong slot
    # would show.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.gamma.assign(rng.uniform(0.8, 1.2, layer.gamma.shape))
            layer.beta.assign(rng.normal(0, 0.05, layer.beta.shape))
            layer.moving_mean.assign(rng.normal(0, 0.05, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.8, 1.2, layer.moving_variance.shape))


@pytest.fixture(scope="module")
def cifar_images(cifar_subset):
    """Eight real CIFAR-10 photos upscaled to SIZE x SIZE, float32 0..255."""
    paths = sorted(glob.glob(os.path.join(cifar_subset, "test", "*", "*.jpg")))[::5][:8]
    images = [np.asarray(Image.open(p).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))
              for p in paths]
    return np.stack(images).astype("float32")


def predict(model, x):
    """One eager forward pass (no tf.function tracing: fast for big models)."""
    return np.asarray(model(x, training=False))


@pytest.fixture(scope="module")
def keras_apps(tmp_path_factory, cifar_images):
    """``get(name)``: a keras.applications model (random init, seeded), its
    outputs on the photos and its weight files, built once per module."""
    out = tmp_path_factory.mktemp("keras_apps")
    cache = {}

    def get(name):
        if name not in cache:
            cls_name, module = KERAS_APPS[name]
            keras.utils.set_random_seed(sorted(KERAS_APPS).index(name))
            app = getattr(keras.applications, cls_name)(
                weights=None, input_shape=(SIZE, SIZE, 3), classifier_activation=None)
            _randomise_bn(app, np.random.default_rng(0))
            features = keras.Model(app.input, app.layers[-3].output)  # before avg_pool
            x = getattr(keras.applications, module).preprocess_input(cifar_images.copy())
            cache[name] = {
                "x": x, "logits": predict(app, x), "features": predict(features, x),
                "h5": _save_legacy_h5(app, str(out / f"{name}.h5")),
                "notop_h5": _save_legacy_h5(features, str(out / f"{name}_notop.h5")),
                "keras3": str(out / f"{name}.weights.h5"),
            }
            app.save_weights(cache[name]["keras3"])
            for key in ("logits", "features"):
                assert np.isfinite(cache[name][key]).all() and cache[name][key].std() > 0
        return cache[name]

    return get


def _zero(model):
    model.set_weights([np.zeros(w.shape, w.dtype) for w in model.get_weights()])
    return model


def test_keras_sources_are_keras_applications_own():
    """File names, URLs and hashes are those of the installed keras.applications."""
    keras_resnet = pytest.importorskip("keras.src.applications.resnet")
    assert weights_lib.KERAS_WEIGHTS_URL == keras_resnet.BASE_WEIGHTS_PATH
    for ours, keras_name in weights_lib.KERAS_APPLICATIONS.items():
        hashes = keras_resnet.WEIGHTS_HASHES[keras_name]
        assert weights_lib.KERAS_WEIGHTS_HASHES[keras_name] == hashes
        fname, url, file_hash = weights_lib.imagenet_file(ours, include_top=False)
        assert fname == f"{keras_name}_weights_tf_dim_ordering_tf_kernels_notop.h5"
        assert url == keras_resnet.BASE_WEIGHTS_PATH + fname
        assert file_hash == hashes[1]


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.slow) if n in ("resnet101_v1", "resnet152_v1") else n
    for n in sorted(KERAS_APPS)])
def test_keras_applications_files_load_unchanged(name, keras_apps):
    """Legacy .h5 files (with and without top) and Keras 3 .weights.h5 files
    of keras.applications models give identical outputs on real photos."""
    app = keras_apps(name)
    model = resnet_keras.build_model(name, weights=app["h5"], classifier_activation=None)
    np.testing.assert_allclose(predict(model, app["x"]), app["logits"], atol=1e-5, rtol=0)
    weights_lib.load_weights(_zero(model), app["keras3"], name)
    np.testing.assert_allclose(predict(model, app["x"]), app["logits"], atol=1e-5, rtol=0)
    notop = resnet_keras.build_model(name, include_top=False, weights=app["notop_h5"])
    np.testing.assert_allclose(predict(notop, app["x"]), app["features"], atol=1e-5, rtol=0)
    # Keras' own (topological) loader agrees: the layer order is keras.applications'.
    _zero(notop).load_weights(app["notop_h5"])
    np.testing.assert_allclose(predict(notop, app["x"]), app["features"], atol=1e-5, rtol=0)


def test_keras_applications_weights_into_backbone(keras_apps):
    app = keras_apps("resnet50v2")
    backbone = resnet_keras.build_backbone("resnet50v2", weights=app["notop_h5"])
    np.testing.assert_allclose(np.asarray(backbone(app["x"])["P5"]), app["features"],
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("include_top", [True, False])
def test_imagenet_fetches_keras_applications_file(include_top, keras_apps, monkeypatch):
    """weights="imagenet" asks keras.utils.get_file for exactly the file that
    keras.applications asks for (same cache, so a cached file needs no network)."""
    keras_resnet = pytest.importorskip("keras.src.applications.resnet")
    app = keras_apps("resnet50_v1")
    calls = []

    def fake_get_file(fname=None, origin=None, **kwargs):
        calls.append((fname, origin, kwargs.get("cache_subdir"), kwargs.get("file_hash")))
        return app["h5" if include_top else "notop_h5"]

    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    monkeypatch.setattr(keras_resnet.file_utils, "get_file", fake_get_file)
    keras.applications.ResNet50(weights="imagenet", include_top=include_top)
    model = resnet_keras.build_model("resnet50_v1", weights="imagenet", include_top=include_top,
                                     classifier_activation=None)
    assert len(calls) == 2 and calls[0] == calls[1], calls
    assert calls[1][2] == "models"
    np.testing.assert_allclose(predict(model, app["x"]),
                               app["logits" if include_top else "features"], atol=1e-5, rtol=0)


def test_legacy_h5_mismatch_is_one_error_and_loads_nothing(keras_apps):
    model = resnet_keras.build_model("resnet50_v1", depths=(3, 4, 7, 3))
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"missing layers \(conv4_block7_1_conv") as err:
        weights_lib.load_weights(model, keras_apps("resnet50_v1")["h5"], "resnet50_v1")
    assert "nothing was loaded" in str(err.value)
    assert_unchanged(model, before)


def test_keras3_weights_mismatch_restores_model(keras_apps):
    model = resnet_keras.build_model("resnet50v2", depths=(3, 4, 7, 3))
    before = snapshot(model)
    with pytest.raises(ValueError, match="does not fit resnet50v2"):
        weights_lib.load_weights(model, keras_apps("resnet50v2")["keras3"], "resnet50v2")
    assert_unchanged(model, before)


# ---------------------------------------------------------------------------
# Golden vectors: our models against torchvision / fyu/drn
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["resnet18", "drn_d_22"])
def test_golden_vectors(name):
    need_reference()
    golden = np.load(os.path.join(GOLDEN, f"{name}.npz"))
    assert list(golden["input_shape"]) == [2, 3, 224, 224]
    model = resnet_keras.build_model(name, classifier_activation=None)
    sd = reference_state_dict(name, int(golden["weight_seed"]))
    load_torch_state_dict(model, sd)
    both = keras.Model(model.input, [model.output, model.get_layer("avg_pool").output])
    x = golden_recipe().make_input(int(golden["input_seed"]), (2, 3, 224, 224)).transpose(0, 2, 3, 1)
    logits, features = (np.asarray(o, "float64") for o in both.predict(x, verbose=0))
    assert logits.dtype == features.dtype == np.float64
    assert rel_l2(logits, golden["logits"]) <= 1e-5
    assert rel_l2(features, golden["features"]) <= 1e-5
    assert rel_l2(logits[0] - logits[1], golden["logits"][0] - golden["logits"][1]) <= 1e-4
    # The pooled features of a headless model are the same.
    headless = resnet_keras.build_model(name, include_top=False, pooling="avg")
    load_torch_state_dict(headless, sd)  # fc.* ignored
    pooled = np.asarray(headless.predict(x, verbose=0), "float64")
    assert rel_l2(pooled, golden["features"]) <= 1e-5


def _classifier_params(name):
    return pytest.param(name, marks=pytest.mark.slow) if name in BIG else name


@pytest.mark.parametrize("name", [_classifier_params(n) for n in CLASSIFIERS])
def test_every_reference_state_dict_loads_completely(name):
    """The full reference state dict loads with nothing missing, unexpected or
    mis-shaped, and every weight lands where the mapping says."""
    model = resnet_keras.build_model(name, input_shape=(32, 32, 3))
    sd = reference_state_dict(name)
    load_torch_state_dict(model, sd)
    assert_loaded_exactly(model, sd)
    key_map = torch_key_map(model)
    # Only fyu/drn's unused DRN-C-58 degridding projection is left out.
    unused = set(sd) - set(key_map)
    assert unused == {k for k in sd if k.startswith("layer7.0.downsample.")}
    assert len(unused) == (5 if name == "drn_c_58" else 0)
    # Every Keras weight is mapped exactly once.
    mapped = sum(int(np.prod(variable.shape)) for variable, _, _ in key_map.values())
    assert mapped == sum(int(np.prod(w.shape)) for w in model.weights)


# ---------------------------------------------------------------------------
# Heads, prefixes and files
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def resnet18_sd():
    return reference_state_dict("resnet18")


def test_classifier_is_optional(resnet18_sd):
    """No fc keys: the trunk loads and the model's own classifier stays;
    a headless model ignores fc keys."""
    trunk_only = {k: v for k, v in resnet18_sd.items() if not k.startswith("fc.")}
    model = resnet_keras.resnet18(classes=10)
    head = snapshot(model.get_layer("predictions"))
    load_torch_state_dict(model, trunk_only)
    assert_unchanged(model.get_layer("predictions"), head)
    np.testing.assert_array_equal(model.get_layer("conv1_conv").kernel,
                                  resnet18_sd["conv1.weight"].transpose(2, 3, 1, 0))
    backbone = resnet_keras.build_backbone("resnet18")
    load_torch_state_dict(backbone, resnet18_sd)
    assert_loaded_exactly(backbone, resnet18_sd)


def test_data_parallel_prefix_and_counters(resnet18_sd):
    sd = {f"module.{k}": v for k, v in resnet18_sd.items()}
    sd["module.bn1.num_batches_tracked"] = np.array(7)
    model = load_torch_state_dict(resnet_keras.resnet18(), sd)
    assert_loaded_exactly(model, resnet18_sd)


def test_npz_state_dict_file(tmp_path, resnet18_sd):
    path = str(tmp_path / "resnet18.npz")
    np.savez(path, **resnet18_sd)
    model = resnet_keras.resnet18(weights=path)
    assert_loaded_exactly(model, resnet18_sd)


def test_pth_file_with_torch(tmp_path, resnet18_sd):
    """Real torch.save checkpoints: a plain state dict, and a training
    checkpoint holding one under "state_dict" with bf16 tensors."""
    torch = require_torch()
    path = str(tmp_path / "resnet18.pth")
    torch.save({k: torch.from_numpy(v) for k, v in resnet18_sd.items()}, path)
    model = resnet_keras.resnet18(weights=path)
    assert_loaded_exactly(model, resnet18_sd)
    wrapped = str(tmp_path / "checkpoint.pth.tar")
    bf16 = {k: torch.from_numpy(v).to(torch.bfloat16) for k, v in resnet18_sd.items()}
    torch.save({"epoch": 3, "state_dict": bf16}, wrapped)
    weights_lib.load_weights(model, wrapped, "resnet18")
    rounded = {k: v.float().numpy() for k, v in bf16.items()}
    assert_loaded_exactly(model, rounded)


class _RunsCode:
    """A pickle payload: unpickling it calls open(MARKER, "w")."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_pth_that_would_run_code_is_refused(writer, tmp_path, resnet18_sd):
    import pickle

    torch = require_torch()
    marker = tmp_path / "code-ran"
    state = {k: torch.from_numpy(v) for k, v in resnet18_sd.items()}
    state["fc.bias"] = _RunsCode(str(marker))
    path = str(tmp_path / "evil.pth")
    if writer == "torch.save":
        torch.save(state, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(state, f)
    model = resnet_keras.resnet18()
    before = snapshot(model)
    with pytest.raises(ValueError) as err:
        weights_lib.load_weights(model, path, "resnet18")
    message = str(err.value)
    assert "\n" not in message and "evil.pth" in message and "not read" in message, message
    assert not marker.exists()
    assert_unchanged(model, before)


def test_pth_without_torch_says_how(tmp_path, monkeypatch):
    path = tmp_path / "model.pth"
    path.write_bytes(b"not read")
    monkeypatch.setattr(weight_files, "torch_available", lambda: False)
    with pytest.raises(ValueError, match=r"pip install torch.*\.npz"):
        resnet_keras.resnet18(weights=str(path))
    with pytest.raises(ValueError, match="pip install torch"):
        resnet_keras.resnet18(weights="imagenet")
    with pytest.raises(ValueError, match="pip install torch"):
        weights_lib.read_state_dict(str(path))


def test_torch_imagenet_sources(monkeypatch, tmp_path, resnet18_sd):
    """weights="imagenet" for a torch-keyed name fetches the public checkpoint
    into the Keras cache and checks the sha256 prefix in its name."""
    assert weights_lib.imagenet_file("resnet18")[:2] == (
        "resnet18-f37072fd.pth", "https://download.pytorch.org/models/resnet18-f37072fd.pth")
    assert weights_lib.imagenet_file("drn_d_22")[1] == "http://dl.yf.io/drn/drn_d_22-4bd2f8ea.pth"
    assert "drn_a_50" not in weights_lib.IMAGENET_SOURCES
    with pytest.raises(ValueError, match="not available for drn_a_50"):
        resnet_keras.drn_a_50(weights="imagenet")
    for name in weights_lib.TORCH_CHECKPOINTS:
        assert name in resnet_keras.list_models()
    checkpoint = tmp_path / "resnet18-f37072fd.pth"
    checkpoint.write_bytes(b"corrupt download")
    calls = []

    def fake_get_file(fname=None, origin=None, **kwargs):
        calls.append((fname, origin, kwargs.get("cache_subdir")))
        return str(checkpoint)

    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    with pytest.raises(ValueError, match="expected f37072fd"):
        weights_lib.fetch_imagenet("resnet18")
    assert calls == [("resnet18-f37072fd.pth",
                      "https://download.pytorch.org/models/resnet18-f37072fd.pth", "models")]
    # A file with the right hash prefix is read and mapped.
    monkeypatch.setattr(weights_lib, "_sha256", lambda path: "f37072fd" + "0" * 56)
    monkeypatch.setattr(weight_files, "torch_available", lambda: True)
    monkeypatch.setattr(weights_lib, "read_state_dict", lambda path: resnet18_sd)
    model = resnet_keras.resnet18(weights="imagenet")
    assert_loaded_exactly(model, resnet18_sd)


# ---------------------------------------------------------------------------
# Bad input: one clear ValueError, nothing assigned
# ---------------------------------------------------------------------------

def test_other_architecture_is_refused(resnet18_sd):
    model = resnet_keras.resnet34()
    before = snapshot(model)
    with pytest.raises(ValueError) as err:
        load_torch_state_dict(model, resnet18_sd)
    message = str(err.value)
    assert "\n" not in message and "does not fit resnet34" in message
    assert "missing keys (layer1.2.conv1.weight" in message
    assert_unchanged(model, before)
    drn = resnet_keras.drn_d_22()
    before = snapshot(drn)
    with pytest.raises(ValueError, match=r"missing keys.*unexpected keys.*mis-shaped"):
        load_torch_state_dict(drn, resnet18_sd)
    assert_unchanged(drn, before)


def test_classes_mismatch_is_refused(resnet18_sd, tmp_path):
    model = resnet_keras.resnet18(classes=10)
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"fc\.weight \(1000, 512\) for \(10, 512\).*classes"):
        load_torch_state_dict(model, resnet18_sd)
    assert_unchanged(model, before)
    path = str(tmp_path / "r18.npz")
    np.savez(path, **resnet18_sd)
    with pytest.raises(ValueError, match=r"r18\.npz.*fc\.weight"):
        resnet_keras.resnet18(classes=10, weights=path)
    with pytest.raises(ValueError, match="needs classes=1000, got 10"):
        resnet_keras.resnet50_v1(classes=10, weights="imagenet")


def test_misshaped_key_is_refused(resnet18_sd):
    sd = dict(resnet18_sd)
    sd["layer2.0.conv1.weight"] = sd["layer2.0.conv1.weight"].transpose(1, 0, 2, 3)
    model = resnet_keras.resnet18()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"1 mis-shaped \(layer2\.0\.conv1\.weight "
                                         r"\(64, 128, 3, 3\) for \(128, 64, 3, 3\)\)"):
        load_torch_state_dict(model, sd)
    assert_unchanged(model, before)


@pytest.mark.parametrize("suffix", [".npz", ".h5", ".weights.h5"])
def test_truncated_file_is_refused(suffix, tmp_path, resnet18_sd):
    model = resnet_keras.resnet18()
    path = str(tmp_path / f"r18{suffix}")
    if suffix == ".npz":
        np.savez(path, **resnet18_sd)
    elif suffix == ".h5":
        _save_legacy_h5(model, path)
    else:
        model.save_weights(path)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])
    before = snapshot(model)
    with pytest.raises(ValueError, match="r18"):
        weights_lib.load_weights(model, path, "resnet18")
    assert_unchanged(model, before)
    with pytest.raises(ValueError, match="r18"):
        resnet_keras.resnet18(weights=path)


@pytest.mark.parametrize("weights, match", [
    ("instagram", "weights='instagram' for resnet18: expected None, 'imagenet'"),
    ("/no/such/file.pth", "/no/such/file.pth"),
])
def test_bad_weights_argument(weights, match):
    with pytest.raises(ValueError, match=match):
        resnet_keras.resnet18(weights=weights)


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "weights.txt"
    path.write_text("0")
    with pytest.raises(ValueError, match=r"unsupported file type; expected one of .*\.npz"):
        resnet_keras.resnet18(weights=str(path))


def test_preactivation_model_has_no_torch_layout(resnet18_sd):
    with pytest.raises(ValueError, match="'conv2_block1_preact_bn' of resnet50v2 has no "
                                         "PyTorch counterpart"):
        load_torch_state_dict(resnet_keras.resnet50v2(), resnet18_sd)


# ---------------------------------------------------------------------------
# Arrays that are not finite real numbers: refused in every format before
# anything is assigned
# ---------------------------------------------------------------------------

# name -> a function of a good float32 array returning a bad one of its shape.
BAD_ARRAYS = {
    "text": lambda a: np.full(a.shape, "a"),
    "complex": lambda a: a.astype(np.complex64),
    "datetime": lambda a: np.zeros(a.shape, "datetime64[s]"),
    "bool": lambda a: a > 0,
    "nan": lambda a: np.where(np.arange(a.size).reshape(a.shape) == 1, np.nan, a),
    "inf": lambda a: np.full(a.shape, np.inf, np.float32),
    "float32 overflow": lambda a: np.full(a.shape, 1e300),
}
# The reason each must be refused with ("text_h5": text as HDF5 returns it).
REASONS = {"text": "dtype <U1", "text_h5": "dtype object", "complex": "dtype complex64",
           "datetime": "dtype datetime64", "bool": "dtype bool", "nan": "1 non-finite value", "inf": "non-finite values",
           "float32 overflow": "after conversion to float32"}


def _assert_refused(load, model, before, key, bad):
    with pytest.raises(ValueError) as err:
        load()
    message = str(err.value)
    assert "\n" not in message, message
    assert key in message and REASONS[bad] in message, message
    assert_unchanged(model, before)


@pytest.mark.parametrize("bad", sorted(BAD_ARRAYS))
def test_unusable_state_dict_array_is_refused(bad, tmp_path, resnet18_sd):
    """The last BN's running variance (assigned last) is bad: nothing loads,
    from a state dict and from .npz (the text, datetime and bool arrays also
    from .pth where torch holds them)."""
    key = "layer4.1.bn2.running_var"
    sd = dict(resnet18_sd)
    sd[key] = BAD_ARRAYS[bad](sd[key])
    model = resnet_keras.resnet18()
    before = snapshot(model)
    _assert_refused(lambda: load_torch_state_dict(model, sd), model, before, key, bad)
    npz = str(tmp_path / "bad.npz")
    np.savez(npz, **sd)
    _assert_refused(lambda: weights_lib.load_weights(model, npz, "resnet18"),
                    model, before, key, bad)
    if bad in ("complex", "bool", "nan", "inf", "float32 overflow"):
        torch = require_torch()
        pth = str(tmp_path / "bad.pth")
        torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}, pth)
        _assert_refused(lambda: weights_lib.load_weights(model, pth, "resnet18"),
                        model, before, key, bad)


def test_object_array_in_npz_is_refused(tmp_path, resnet18_sd):
    sd = dict(resnet18_sd)
    sd["fc.bias"] = np.array([None] * 1000, dtype=object)
    path = str(tmp_path / "pickled.npz")
    np.savez(path, **sd)  # object arrays are pickled: never unpickled on load
    model = resnet_keras.resnet18()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"pickled\.npz.*'fc\.bias' cannot be read"):
        weights_lib.load_weights(model, path, "resnet18")
    assert_unchanged(model, before)


def _tiny_model():
    keras.utils.set_random_seed(3)
    return resnet_keras.build_model("resnet20", classes=10, input_shape=(32, 32, 3),
                                    depths=(1, 1, 1))


def _replace_dataset(h5_file, predicate, bad):
    """Replace the last dataset whose name matches PREDICATE; returns its name."""
    import h5py

    names = []
    h5_file.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset)
                       and predicate(n) else None)
    name = names[-1]
    value = BAD_ARRAYS[bad](np.asarray(h5_file[name], np.float32))
    if value.dtype.kind == "U":
        value = value.astype(h5py.string_dtype())
    elif value.dtype.kind == "M":
        value = value.astype(np.int64).astype(h5py.opaque_dtype(value.dtype))
    del h5_file[name]
    h5_file.create_dataset(name, data=value)
    return name


@pytest.mark.parametrize("suffix", [".h5", ".weights.h5", ".keras"])
@pytest.mark.parametrize("bad", ["text", "complex", "nan", "bool", "float32 overflow"])
def test_unusable_keras_file_array_is_refused(suffix, bad, tmp_path):
    """Legacy .h5 (by layer name), Keras 3 .weights.h5 and .keras files with
    one bad array of the last BN layer: one line naming it, model unchanged."""
    import h5py
    import zipfile

    source = _tiny_model()
    path = str(tmp_path / f"bad{suffix}")
    if suffix == ".h5":
        _save_legacy_h5(source, path)
        with h5py.File(path, "r+") as f:
            name = _replace_dataset(f, lambda n: n.endswith("moving_variance"), bad)
    elif suffix == ".weights.h5":
        source.save_weights(path)
        with h5py.File(path, "r+") as f:
            name = _replace_dataset(f, lambda n: "batch_normalization" in n, bad)
    else:
        good = str(tmp_path / "good.keras")
        source.save(good)
        with zipfile.ZipFile(good) as archive:
            members = {m: archive.read(m) for m in archive.namelist()}
        weights_path = str(tmp_path / "model.weights.h5")
        with open(weights_path, "wb") as f:
            f.write(members["model.weights.h5"])
        with h5py.File(weights_path, "r+") as f:
            name = _replace_dataset(f, lambda n: "batch_normalization" in n, bad)
        with open(weights_path, "rb") as f:
            members["model.weights.h5"] = f.read()
        with zipfile.ZipFile(path, "w") as archive:
            for member, data in members.items():
                archive.writestr(member, data)
    model = _tiny_model()
    keras.utils.set_random_seed(4)
    model.set_weights([np.random.default_rng(0).normal(size=w.shape).astype(w.dtype)
                       for w in model.get_weights()])
    before = snapshot(model)
    key = name.split("/")[0] if suffix == ".h5" else name  # .h5: layer/variable
    _assert_refused(lambda: weights_lib.load_weights(model, path, "resnet20"),
                    model, before, key, bad if bad != "text" else "text_h5")
