"""The modern ResNet family (timm's resnet*d, seresnet*, ecaresnet*d) and the
refinements it is built from: deep stem, average-pool shortcuts, SE and ECA
attention, stochastic depth, zero-initialised residual branches, the CIFAR
stem on ImageNet ResNets.

Golden vectors: ../shared/reference/timm/NAME.npz, timm 1.0.31's outputs in
float64 for the seeded state dict of ../shared/reference/golden/recipe.py.
"""
import json
import os

import keras
import numpy as np
import pytest
from conftest import REFERENCE

import resnet_keras
from resnet_keras import specs
from resnet_keras.layers import DropPath
from resnet_keras.weights import load_torch_state_dict
from reference import golden_recipe

TIMM = os.path.join(REFERENCE, "timm")


def rel_l2(value, reference):
    return float(np.linalg.norm(value - reference) / np.linalg.norm(reference))


def _timm_file(name):
    path = os.path.join(TIMM, name)
    if not os.path.isfile(path):
        pytest.skip(f"timm reference not found: {path}")
    return path


def _images(size=32, batch=2, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, size, size, 3)).astype("float32")


# ---------------------------------------------------------------------------
# Golden vectors against timm
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["resnet50d", "seresnet50"])
def test_timm_golden_vectors(name):
    golden = np.load(_timm_file(f"{name}.npz"))
    assert list(golden["input_shape"]) == [2, 3, 224, 224]
    with open(os.path.join(TIMM, f"{name}.keys.json")) as f:
        keys = [(k, tuple(s)) for k, s in json.load(f)]
    recipe = golden_recipe()
    sd = recipe.make_state_dict(keys, int(golden["weight_seed"]))
    x = recipe.make_input(int(golden["input_seed"]), (2, 3, 224, 224)).transpose(0, 2, 3, 1)
    # README tolerance: 1e-5, or 4x timm's own float32 error where that is
    # larger (squeeze-and-excitation gates amplify float32 rounding).
    ref, ref32 = golden["logits"], golden["logits_torch_f32"]
    tol = max(1e-5, 4 * rel_l2(ref32, ref))
    diff_tol = max(1e-4, 4 * rel_l2(ref32[0] - ref32[1], ref[0] - ref[1]))
    model = resnet_keras.build_model(name, classifier_activation=None)
    load_torch_state_dict(model, sd)
    both = keras.Model(model.input, [model.output, model.get_layer("avg_pool").output])
    logits, features = (np.asarray(o, "float64") for o in both.predict(x, verbose=0))
    assert rel_l2(logits, ref) <= tol
    assert rel_l2(features, golden["features"]) <= tol
    assert rel_l2(logits[0] - logits[1], ref[0] - ref[1]) <= diff_tol
    del both, model
    headless = resnet_keras.build_model(name, include_top=False, pooling="avg")
    load_torch_state_dict(headless, sd)  # fc.* ignored
    pooled = np.asarray(headless.predict(x, verbose=0), "float64")
    assert rel_l2(pooled, golden["features"]) <= tol
    keras.backend.clear_session()


# ---------------------------------------------------------------------------
# Stems
# ---------------------------------------------------------------------------

def test_cifar_stem_on_resnet18():
    """``stem="cifar"``: the widely used CIFAR ResNet-18 (3x3/1 stem, no pool)."""
    model = resnet_keras.build_model("resnet18", stem="cifar", classes=10,
                                     input_shape=(32, 32, 3))
    names = {layer.name for layer in model.layers}
    assert "pool1_pool" not in names
    conv1 = model.get_layer("conv1_conv")
    assert conv1.kernel_size == (3, 3) and conv1.strides == (1, 1) and conv1.filters == 64
    # Output stride 8: 4x4 features at 32x32.
    assert model.get_layer("conv5_block2_out").output.shape[1:3] == (4, 4)
    # 11,173,962 parameters, the usual count of this network (torchvision's
    # 11,689,512 - 513,000 + 5,130 for 10 classes - 64*3*(49 - 9) for the stem).
    assert model.count_params() - sum(
        int(np.prod(w.shape)) for w in model.non_trainable_weights) == 11_173_962
    # The output-stride choices follow the stem's stride.
    assert specs.resolve_spec("resnet18", stem="cifar").output_strides == (2, 4, 8)
    dilated = resnet_keras.build_model("resnet18", stem="cifar", include_top=False,
                                       input_shape=(32, 32, 3), output_stride=4)
    assert dilated.output.shape[1:3] == (8, 8)


def test_deep_stem_and_average_pool_shortcut():
    model = resnet_keras.build_model("resnet50d", include_top=False, depths=(1, 1, 1, 1),
                                     input_shape=(64, 64, 3))
    widths = [model.get_layer(f"conv1_{i}_conv").filters for i in (1, 2, 3)]
    assert widths == [32, 32, 64]
    assert model.get_layer("conv1_1_conv").strides == (2, 2)
    assert model.get_layer("conv1_1_conv").kernel_size == (3, 3)
    assert model.get_layer("conv1_3_conv").strides == (1, 1)
    assert "pool1_pool" in {layer.name for layer in model.layers}
    pool = model.get_layer("conv3_block1_0_pool")
    assert pool.pool_size == (2, 2) and pool.strides == (2, 2)
    assert model.get_layer("conv3_block1_0_conv").strides == (1, 1)
    # Stage 1 changes channels without striding: no pool, just the 1x1 conv.
    assert "conv2_block1_0_pool" not in {layer.name for layer in model.layers}
    # build_model("resnet50", stem="deep", shortcut="avgpool") is resnet50d's topology.
    same = resnet_keras.build_model("resnet50", stem="deep", shortcut="avgpool",
                                    depths=(1, 1, 1, 1), include_top=False,
                                    input_shape=(64, 64, 3))
    assert [l.name for l in same.layers][1:] == [l.name for l in model.layers][1:]
    assert same.count_params() == model.count_params()


def _ceil_avg_pool(x, stride):
    """2x2 average pool, PyTorch ceil_mode=True, count_include_pad=False (numpy)."""
    n, h, w, c = x.shape
    oh, ow = -(-(h - 2) // stride) + 1, -(-(w - 2) // stride) + 1
    out = np.zeros((n, oh, ow, c), x.dtype)
    for i in range(oh):
        for j in range(ow):
            out[:, i, j] = x[:, stride * i:stride * i + 2, stride * j:stride * j + 2].mean((1, 2))
    return out


def test_average_pool_shortcut_at_odd_sizes_and_dilated():
    """timm's AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False) at an odd
    size; in a dilated stage AvgPool2dSame(2, 1): zero pad bottom/right, count it."""
    x = np.random.default_rng(3).normal(size=(2, 7, 9, 64)).astype("float32")
    model = resnet_keras.resnet18d(include_top=False, depths=(1, 1, 1, 1))
    got = np.asarray(model.get_layer("conv3_block1_0_pool")(x))
    assert got.shape == (2, 4, 5, 64)
    np.testing.assert_allclose(got, _ceil_avg_pool(x, 2), rtol=1e-6, atol=1e-6)
    dilated = resnet_keras.resnet18d(include_top=False, depths=(1, 1, 1, 1), output_stride=8)
    x4 = np.random.default_rng(4).normal(size=(2, 7, 9, 128)).astype("float32")
    y = dilated.get_layer("conv4_block1_0_pool")(dilated.get_layer("conv4_block1_0_pad")(x4))
    padded = np.pad(x4, ((0, 0), (0, 1), (0, 1), (0, 0)))
    np.testing.assert_allclose(np.asarray(y), _ceil_avg_pool(padded, 1), rtol=1e-6, atol=1e-6)
    out = dilated(np.zeros((1, 35, 35, 3), "float32"))
    assert out.shape == (1, 5, 5, 512)


# ---------------------------------------------------------------------------
# Attention
# ---------------------------------------------------------------------------

def test_attention_widths_and_kernels():
    model = resnet_keras.seresnet50(include_top=False, depths=(1, 1, 1, 1))
    # timm: channels / 16 rounded to a multiple of 8, at least 8.
    assert [model.get_layer(f"conv{s}_block1_se_reduce").filters for s in (2, 3, 4, 5)] == [
        16, 32, 64, 128]
    assert model.get_layer("conv2_block1_se_reduce").use_bias
    basic = resnet_keras.seresnet18(include_top=False, depths=(1, 1, 1, 1))
    assert basic.get_layer("conv2_block1_se_reduce").filters == 8  # 64 / 16 -> 8
    eca = resnet_keras.ecaresnet50d(include_top=False, depths=(1, 1, 1, 1))
    # ECA-Net: t = int((log2(C) + 1) / 2), made odd: 256 -> 5, 2048 -> 7.
    assert [eca.get_layer(f"conv{s}_block1_eca_conv").kernel_size[0] for s in (2, 3, 4, 5)] == [
        5, 5, 5, 7]
    assert not eca.get_layer("conv2_block1_eca_conv").use_bias
    tuned = resnet_keras.build_model("resnet50", attention="se", se_reduction=8,
                                     include_top=False, depths=(1, 1, 1, 1))
    assert tuned.get_layer("conv2_block1_se_reduce").filters == 32
    fixed = resnet_keras.build_model("resnet50", attention="eca", eca_kernel_size=3,
                                     include_top=False, depths=(1, 1, 1, 1))
    assert fixed.get_layer("conv5_block1_eca_conv").kernel_size == (3,)


def test_attention_gates_the_branch():
    """SE scales each channel of the branch by a sigmoid of its pooled mean."""
    model = resnet_keras.build_model("resnet20", attention="se", depths=(1, 1, 1), classes=10)
    x = _images(32)
    probe = keras.Model(model.input, [model.get_layer("conv2_block1_2_bn").output,
                                      model.get_layer("conv2_block1_se_scale").output])
    branch, gated = (np.asarray(t) for t in probe(x, training=False))
    pooled = branch.mean(axis=(1, 2))
    w1, b1 = model.get_layer("conv2_block1_se_reduce").get_weights()
    w2, b2 = model.get_layer("conv2_block1_se_expand").get_weights()
    hidden = np.maximum(pooled @ w1[0, 0] + b1, 0)
    gate = 1 / (1 + np.exp(-(hidden @ w2[0, 0] + b2)))
    np.testing.assert_allclose(gated, branch * gate[:, None, None, :], rtol=1e-4, atol=1e-5)


def test_eca_gates_the_branch():
    """ECA scales each channel by a sigmoid of a zero-padded k-tap
    cross-correlation across the pooled channels."""
    model = resnet_keras.build_model("resnet20", attention="eca", eca_kernel_size=5,
                                     depths=(1, 1, 1), classes=10)
    conv = model.get_layer("conv2_block1_eca_conv")
    conv.set_weights([np.array([0.3, -1.0, 2.0, 0.5, -0.7], "float32").reshape(5, 1, 1)])
    probe = keras.Model(model.input, [model.get_layer("conv2_block1_2_bn").output,
                                      model.get_layer("conv2_block1_eca_scale").output])
    branch, gated = (np.asarray(t) for t in probe(_images(32), training=False))
    pooled = np.pad(branch.mean(axis=(1, 2)), ((0, 0), (2, 2)))
    taps = conv.get_weights()[0][:, 0, 0]
    logits = np.stack([pooled[:, c:c + 5] @ taps for c in range(branch.shape[-1])], axis=1)
    gate = 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(gated, branch * gate[:, None, None, :], rtol=1e-4, atol=1e-5)


def test_attention_multiply_adds():
    """count_macs adds the attention convs: SE 2 * C * C/16, ECA k * C per block."""
    def macs(**kw):
        model = resnet_keras.build_model("resnet50", depths=(1, 1, 1, 1), include_top=False,
                                         input_shape=(64, 64, 3), **kw)
        return resnet_keras.count_macs(model)

    plain = macs()
    assert macs(attention="eca") - plain == 256 * 5 + 512 * 5 + 1024 * 5 + 2048 * 7
    assert macs(attention="se") - plain == 2 * (256 * 16 + 512 * 32 + 1024 * 64 + 2048 * 128)


# ---------------------------------------------------------------------------
# Stochastic depth and zero-initialised branches
# ---------------------------------------------------------------------------

def test_drop_path_drops_whole_samples_in_training_only():
    layer = DropPath(0.5, seed=1)
    x = np.ones((256, 3, 3, 4), "float32")
    np.testing.assert_array_equal(layer(x, training=False), x)
    y = np.asarray(layer(x, training=True))
    per_sample = y.reshape(256, -1)
    assert set(np.unique(per_sample)) <= {0.0, 2.0}
    assert (per_sample.min(axis=1) == per_sample.max(axis=1)).all()  # all or nothing
    assert 0.35 < (per_sample[:, 0] == 0).mean() < 0.65
    with pytest.raises(ValueError, match="rate=1.5"):
        DropPath(1.5)


def test_drop_path_rates_grow_linearly():
    model = resnet_keras.build_model("resnet18", drop_path_rate=0.2, include_top=False)
    names = {layer.name for layer in model.layers}
    assert "conv2_block1_drop_path" not in names  # rate 0: no layer
    rates = {n: model.get_layer(n).rate for n in names if n.endswith("_drop_path")}
    expected = {f"conv{s}_block{b}_drop_path": 0.2 * i / 7
                for i, (s, b) in enumerate((s, b) for s in (2, 3, 4, 5) for b in (1, 2)) if i}
    assert rates.keys() == expected.keys()
    for name, rate in expected.items():
        assert rates[name] == pytest.approx(rate)


def test_drop_path_model_reloads_safely_and_is_identity_at_inference(tmp_path):
    model = resnet_keras.build_model("resnet20", drop_path_rate=0.3, classes=10)
    assert not any(isinstance(l, keras.layers.Lambda) for l in model.layers)
    x = _images(32)
    path = str(tmp_path / "dp.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    layer = reloaded.get_layer("conv4_block3_drop_path")
    assert isinstance(layer, DropPath) and layer.rate == pytest.approx(0.3)
    np.testing.assert_allclose(reloaded(x, training=False), model(x, training=False), atol=1e-6)
    plain = resnet_keras.build_model("resnet20", classes=10)
    plain.set_weights(model.get_weights())
    np.testing.assert_allclose(plain(x, training=False), model(x, training=False), atol=1e-6)


def test_zero_init_last_makes_every_block_an_identity():
    model = resnet_keras.build_model("resnet20", zero_init_last=True, classes=10)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            last = layer.name.endswith("_2_bn")
            np.testing.assert_array_equal(np.asarray(layer.gamma), 0.0 if last else 1.0)
    probe = keras.Model(model.input, [model.get_layer("conv2_block1_out").output,
                                      model.get_layer("conv2_block3_out").output])
    before, after = (np.asarray(t) for t in probe(_images(32), training=False))
    np.testing.assert_allclose(after, before, atol=1e-6)  # identity blocks pass x through
    # timm's rows start so (its default); torchvision's do not.
    r50d = resnet_keras.resnet50d(depths=(1, 1, 1, 1), include_top=False)
    assert not np.asarray(r50d.get_layer("conv2_block1_3_bn").gamma).any()
    r18 = resnet_keras.resnet18(include_top=False)
    assert (np.asarray(r18.get_layer("conv2_block1_2_bn").gamma) == 1).all()


# ---------------------------------------------------------------------------
# Every timm row against timm itself (where timm is installed)
# ---------------------------------------------------------------------------

TIMM_ROWS = ["resnet18d", "resnet26d", "resnet34d", "resnet50d", "resnet101d", "resnet152d",
             "seresnet18", "seresnet34", "seresnet50", "seresnet101", "seresnet152",
             "ecaresnet50d", "ecaresnet101d"]


@pytest.mark.slow
@pytest.mark.parametrize("name,output_stride", [(n, 32) for n in TIMM_ROWS]
                         + [("resnet50d", 8), ("ecaresnet50d", 16), ("seresnet18", 16)])
def test_matches_timm_in_float64(name, output_stride):
    """The seeded state dict in timm and here, both in float64 (the deep SE
    nets amplify float32 rounding beyond any useful tolerance), at an odd
    input size (partial average-pool windows)."""
    timm = pytest.importorskip("timm")
    import torch

    reference = timm.create_model(name, pretrained=False, output_stride=output_stride).eval()
    keys = [(k, tuple(v.shape)) for k, v in reference.state_dict().items()]
    recipe = golden_recipe()
    sd = recipe.make_state_dict(keys, 1234)
    reference.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=False)
    x = recipe.make_input(99, (2, 3, 67, 67)).astype("float64")
    with torch.no_grad():
        expected = reference.double()(torch.from_numpy(x)).numpy()
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        model = resnet_keras.build_model(
            name, classifier_activation=None,
            output_stride=None if output_stride == 32 else output_stride)
        load_torch_state_dict(model, sd)
        got = np.asarray(model(x.transpose(0, 2, 3, 1), training=False))
    finally:
        keras.config.set_dtype_policy(previous)
        keras.backend.clear_session()
    assert rel_l2(got, expected) <= 1e-6
    assert rel_l2(got[0] - got[1], expected[0] - expected[1]) <= 1e-5


# ---------------------------------------------------------------------------
# weights="imagenet": timm's public checkpoints
# ---------------------------------------------------------------------------

# timm's ImageNet-1k checkpoint files (timm's default_cfgs, pretrained tags
# resnet*d.ra2_in1k / resnet26d.bt_in1k, seresnet50.ra2_in1k, ecaresnet*d.miil_in1k).
TIMM_RELEASES = "https://github.com/rwightman/pytorch-image-models/releases/download/"
TIMM_IMAGENET = {
    "resnet18d": "v0.1-weights/resnet18d_ra2-48a79e06.pth",
    "resnet26d": "v0.1-weights/resnet26d-69e92c46.pth",
    "resnet34d": "v0.1-weights/resnet34d_ra2-f8dcfcaf.pth",
    "resnet50d": "v0.1-weights/resnet50d_ra2-464e36ba.pth",
    "resnet101d": "v0.1-weights/resnet101d_ra2-2803ffab.pth",
    "resnet152d": "v0.1-weights/resnet152d_ra2-5cac0439.pth",
    "seresnet50": "v0.1-weights/seresnet50_ra_224-8efdb4bb.pth",
    "ecaresnet50d": "v0.1-tresnet/ecaresnet50d-93c81e3b.pth",
    "ecaresnet101d": "v0.1-tresnet/ecaresnet101d-153dad65.pth",
}


@pytest.mark.parametrize("name", sorted(TIMM_IMAGENET))
def test_imagenet_points_at_timms_checkpoint(name):
    from resnet_keras import weights as weights_lib

    fname, url, file_hash = weights_lib.imagenet_file(name)
    assert url == TIMM_RELEASES + TIMM_IMAGENET[name]
    assert fname == url.rsplit("/", 1)[1] and url.endswith(f"-{file_hash}.pth")
    assert len(file_hash) == 8


@pytest.mark.parametrize("name", ["seresnet18", "seresnet34", "seresnet101", "seresnet152"])
def test_imagenet_is_refused_where_timm_has_no_weights(name):
    with pytest.raises(ValueError, match=f"not available for {name} \\(timm publishes none"):
        resnet_keras.build_model(name, weights="imagenet")


def test_imagenet_resnet18d_loads_a_timm_checkpoint(monkeypatch, tmp_path):
    """The fetched file's sha256 prefix is checked, then timm's keys load."""
    from resnet_keras import weight_files
    from resnet_keras import weights as weights_lib
    from test_models import timm_keys

    state_dict = golden_recipe().make_state_dict(timm_keys("resnet18d"), 3)
    checkpoint = tmp_path / "resnet18d_ra2-48a79e06.pth"
    checkpoint.write_bytes(b"corrupt download")
    monkeypatch.setattr(keras.utils, "get_file", lambda fname=None, origin=None, **kw: (
        str(checkpoint) if origin == TIMM_RELEASES + TIMM_IMAGENET["resnet18d"] else None))
    monkeypatch.setattr(weight_files, "torch_available", lambda: True)
    with pytest.raises(ValueError, match="expected 48a79e06"):
        weights_lib.fetch_imagenet("resnet18d")
    monkeypatch.setattr(weights_lib, "_sha256", lambda path: "48a79e06" + "0" * 56)
    monkeypatch.setattr(weights_lib, "read_state_dict", lambda path: state_dict)
    model = resnet_keras.resnet18d(weights="imagenet")
    np.testing.assert_array_equal(
        model.get_layer("predictions").get_weights()[0], state_dict["fc.weight"].T)
    np.testing.assert_array_equal(  # deep stem, first conv: OIHW -> HWIO
        model.get_layer("conv1_1_conv").get_weights()[0],
        state_dict["conv1.0.weight"].transpose(2, 3, 1, 0))
