"""Registry-generated tests: every registered model gets the same harness.

Every row's numbers (Keras ``count_params()`` including BatchNorm moving
statistics, trainable parameters, multiply-adds) are pinned beside the row,
in ``resnet_keras.specs.FACTS``; each model is checked against them, and
they are checked against the published numbers below, which come from
../shared/reference/ARCHITECTURES.md (built from the reference
implementations) and, for the timm family, from timm 1.0.31
(../shared/reference/timm/facts.json): the PyTorch parameter count (= our
trainable count) and multiply-adds at 224x224.
"""
import json
import math
import os

import keras
import numpy as np
import pytest

import resnet_keras
from conftest import REPO
from resnet_keras import specs

# Keras count_params() at 1000 classes, BN moving statistics included.
KERAS_PARAMS = {
    "resnet18": 11_699_112, "resnet34": 21_814_696, "resnet50": 25_610_152,
    "resnet101": 44_654_504, "resnet152": 60_344_232,
    # keras.applications ResNet50/101/152 and the V2 models.
    "resnet50_v1": 25_636_712, "resnet101_v1": 44_707_176, "resnet152_v1": 60_419_944,
    "resnet50v2": 25_613_800, "resnet101v2": 44_675_560, "resnet152v2": 60_380_648,
    "drn_a_50": 25_610_152, "drn_c_26": 21_140_568, "drn_c_42": 31_256_152,
    # drn_c_58: the reference builds a 2048->512 projection for level 7 that
    # its forward pass never uses (level 7 has no residual addition). We
    # follow the forward pass, so the count is the "without" one: 40,599,384
    # (41,650,008 with the dead projection). The converter skips its weights.
    "drn_c_58": 40_599_384,
    "drn_d_22": 16_405_528, "drn_d_38": 26_521_112, "drn_d_54": 35_864_344,
    "drn_d_105": 54_908_696,
    # timm: torch parameters + BN running mean/var.
    "resnet18d": 11_718_472, "resnet26d": 16_045_384, "resnet34d": 21_834_056,
    "resnet50d": 25_629_512, "resnet101d": 44_673_864, "resnet152d": 60_363_592,
    "seresnet18": 11_789_224, "seresnet34": 21_977_440, "seresnet50": 28_141_144,
    "seresnet101": 49_432_216, "seresnet152": 66_973_272,
    "ecaresnet50d": 25_629_598, "ecaresnet101d": 44_674_035,
}
# PyTorch parameter counts (torchvision, fyu/drn) at 1000 classes: these
# equal our trainable parameter counts.
TORCH_PARAMS = {
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
    "resnet101": 44_549_160, "resnet152": 60_192_808,
    "resnext50_32x4d": 25_028_904, "resnext101_32x8d": 88_791_336,
    "wide_resnet50_2": 68_883_240, "wide_resnet101_2": 126_886_696,
    "drn_a_50": 25_557_032, "drn_c_26": 21_126_584, "drn_c_42": 31_234_744,
    "drn_c_58": 41_591_608 - 1_049_600,  # without the unused projection
    "drn_d_22": 16_393_752, "drn_d_38": 26_501_912, "drn_d_54": 35_809_176,
    "drn_d_105": 54_801_304,
    # timm 1.0.31, pretrained=False, 1000 classes.
    "resnet18d": 11_708_744, "resnet26d": 16_014_408, "resnet34d": 21_816_904,
    "resnet50d": 25_576_264, "resnet101d": 44_568_392, "resnet152d": 60_212_040,
    "seresnet18": 11_779_624, "seresnet34": 21_960_416, "seresnet50": 28_088_024,
    "seresnet101": 49_326_872, "seresnet152": 66_821_848,
    "ecaresnet50d": 25_576_350, "ecaresnet101d": 44_568_563,
}
TIMM = ("resnet18d", "resnet26d", "resnet34d", "resnet50d", "resnet101d", "resnet152d",
        "seresnet18", "seresnet34", "seresnet50", "seresnet101", "seresnet152",
        "ecaresnet50d", "ecaresnet101d")
# CIFAR ResNets, 10 classes, option A shortcuts (He et al. 2016, sec. 4.2:
# "about 0.27M" for ResNet-20 and "0.85M" for ResNet-56).
CIFAR_PARAMS = {"resnet20": 269_722, "resnet32": 464_154, "resnet44": 658_586,
                "resnet56": 853_018, "resnet110": 1_727_962}
NO_TOP_PARAMS = {"resnet18": 11_186_112, "resnet50": 23_561_152, "resnet50_v1": 23_587_712}
# Multiply-adds at 224x224 in G (3 decimals, as published).
MACS_224 = {
    "resnet18": 1.814, "resnet34": 3.664, "resnet50": 4.089, "resnet101": 7.801,
    "resnet152": 11.514, "resnext50_32x4d": 4.230, "wide_resnet50_2": 11.398,
    "resnet50_v1": 3.858, "resnet101_v1": 7.570, "resnet152_v1": 11.282,
    "drn_a_50": 19.079, "drn_c_26": 16.971, "drn_c_42": 25.064,
    "drn_c_58": 33.246 - 2048 * 512 * 28 * 28 / 1e9,  # without the unused projection
    "drn_d_22": 13.034, "drn_d_38": 21.127, "drn_d_54": 28.487, "drn_d_105": 43.336,
    # ResNet-D: the deep stem replaces the 7x7 conv, 112 * 112 * (3*32*9 + 32*32*9
    # + 32*64*9 - 3*64*49) more; the average-pooled 1x1 projection costs the same.
    "resnet18d": 1.814 + 112 * 112 * (864 + 9216 + 18432 - 9408) / 1e9,
    "resnet50d": 4.089 + 112 * 112 * (864 + 9216 + 18432 - 9408) / 1e9,
    # SE: two 1x1 convs at 1x1 per block, 2 * C * C / 16.
    "seresnet50": 4.089 + 2 * (3 * 256 * 16 + 4 * 512 * 32 + 6 * 1024 * 64
                               + 3 * 2048 * 128) / 1e9,
    # ECA: a k-tap conv over the C channels per block (k = 5, 5, 5, 7).
    "ecaresnet50d": 4.089 + 112 * 112 * (864 + 9216 + 18432 - 9408) / 1e9
                    + (3 * 256 * 5 + 4 * 512 * 5 + 6 * 1024 * 5 + 3 * 2048 * 7) / 1e9,
}
ALL = resnet_keras.list_models()


def timm_keys(name):
    """[(key, shape)] of timm's state dict for NAME, in order (skips without it)."""
    from conftest import REFERENCE

    path = os.path.join(REFERENCE, "timm", f"{name}.keys.json")
    if not os.path.isfile(path):
        pytest.skip(f"timm reference not found: {path}")
    with open(path) as f:
        return [(key, tuple(shape)) for key, shape in json.load(f)]


def _classes(name):
    return 10 if specs.get_spec(name).family == "cifar" else 1000


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _images(size=32, batch=2, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, size, size, 3)).astype("float32")


@pytest.fixture(scope="module", params=ALL)
def built(request):
    """(name, model) built once per model, with any input size."""
    name = request.param
    model = resnet_keras.build_model(name, classes=_classes(name))
    yield name, model
    keras.backend.clear_session()


def test_registry_lists_every_contract_name():
    contract = [
        "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
        "resnet50v2", "resnet101v2", "resnet152v2",
        "resnext50_32x4d", "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2",
        "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
        "drn_a_50", "drn_c_26", "drn_c_42", "drn_c_58",
        "drn_d_22", "drn_d_38", "drn_d_54", "drn_d_105"]
    assert set(contract) <= set(ALL)
    assert ALL == sorted(ALL)
    for name in ALL:
        function = getattr(resnet_keras, name)
        assert callable(function) and function.__name__ == name
        assert name in resnet_keras.__all__


def test_every_model_is_pinned():
    assert list(specs.FACTS) == list(specs.SPECS)
    for name in ALL:
        assert name in KERAS_PARAMS or name in TORCH_PARAMS or name in CIFAR_PARAMS, name
        assert specs.get_facts(name) is specs.FACTS[name]
    with pytest.raises(ValueError, match="Unknown model 'resnet51'. Available: "):
        specs.get_facts("resnet51")


def test_pinned_facts_are_the_published_numbers():
    """FACTS (what the models are checked against) agree with the published
    reference numbers above."""
    for name, facts in specs.FACTS.items():
        if name in KERAS_PARAMS:
            assert facts.params == KERAS_PARAMS[name], name
        if name in TORCH_PARAMS:
            assert facts.trainable_params == TORCH_PARAMS[name], name
        if name in CIFAR_PARAMS:
            assert facts.trainable_params == CIFAR_PARAMS[name], name
        if name in MACS_224:
            assert facts.macs / 1e9 == pytest.approx(MACS_224[name], abs=6e-4), name


def test_pinned_counts_are_timms():
    """The timm counts pinned above are timm's own (facts.json)."""
    from conftest import REFERENCE

    path = os.path.join(REFERENCE, "timm", "facts.json")
    if not os.path.isfile(path):
        pytest.skip(f"timm reference not found: {path}")
    with open(path) as f:
        facts = json.load(f)
    assert set(facts) == set(TIMM)
    for name, fact in facts.items():
        assert TORCH_PARAMS[name] == fact["torch_parameters"], name
        assert KERAS_PARAMS[name] == fact["torch_parameters"] + fact["bn_buffers"], name


def test_param_counts(built):
    name, model = built
    facts = specs.get_facts(name)
    assert model.count_params() == facts.params
    assert _trainable(model) == facts.trainable_params
    if name in KERAS_PARAMS:
        assert model.count_params() == KERAS_PARAMS[name]
    if name in TORCH_PARAMS:
        assert _trainable(model) == TORCH_PARAMS[name]
    if name in CIFAR_PARAMS:
        assert _trainable(model) == CIFAR_PARAMS[name]


def test_timm_state_dict_maps_exactly(built):
    """timm's state-dict keys (../shared/reference/timm/NAME.keys.json) are
    exactly the key map's, shapes included, and a full timm state dict loads
    every weight where the mapping says."""
    name, model = built
    if name not in TIMM:
        pytest.skip("not a timm model")
    from reference import golden_recipe
    from resnet_keras.weights import load_torch_state_dict, torch_key_map

    keys = timm_keys(name)
    key_map = torch_key_map(model)
    wanted = {k: s for k, s in keys if not k.endswith("num_batches_tracked")}
    assert {k: shapes[0] for k, (_, shapes, _) in key_map.items()} == wanted
    if sum(specs.get_spec(name).depths) > 16:
        return  # the deeper rows repeat the blocks loaded below (goldens: test_timm)
    sd = golden_recipe().make_state_dict(keys, 5)
    before = [np.array(w) for w in model.get_weights()]
    try:
        load_torch_state_dict(model, sd)
        for key, (variable, _, to_keras) in key_map.items():
            np.testing.assert_array_equal(np.asarray(variable), to_keras(sd[key]), err_msg=key)
    finally:
        model.set_weights(before)


def test_output_shape_and_softmax(built):
    name, model = built
    out = np.asarray(model(_images(32), training=False))
    assert out.shape == (2, _classes(name))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)
    assert np.isfinite(out).all()


def test_no_lambda_layers_and_keras_names(built):
    name, model = built
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)
    names = {layer.name for layer in model.layers}
    if specs.get_spec(name).stem == "deep":
        assert {"conv1_1_conv", "conv1_2_conv", "conv1_3_conv", "conv1_bn", "predictions"} <= names
    else:
        assert {"conv1_conv", "predictions"} <= names
    first_stage = "level1" if specs.get_spec(name).family in ("drn_c", "drn_d") else "conv2"
    assert any(n.startswith(f"{first_stage}_") for n in names)


def test_config_round_trip(built):
    name, model = built
    clone = keras.Model.from_config(model.get_config())
    assert clone.count_params() == model.count_params()
    assert [l.name for l in clone.layers] == [l.name for l in model.layers]
    clone.set_weights(model.get_weights())
    x = _images(32)
    np.testing.assert_allclose(clone(x, training=False), model(x, training=False), atol=1e-6)


def test_keras_save_and_reload(built, tmp_path):
    name, model = built
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    x = _images(32, seed=1)
    np.testing.assert_allclose(reloaded(x, training=False), model(x, training=False), atol=1e-6)
    os.remove(path)


def test_multiply_adds(built):
    """At 224x224 (CIFAR: 32x32), counted on the model built for any input size."""
    name, model = built
    size = 32 if specs.get_spec(name).family == "cifar" else 224
    macs = resnet_keras.count_macs(model, input_shape=(size, size, 3))
    assert macs == specs.get_facts(name).macs
    if name in MACS_224:
        assert macs / 1e9 == pytest.approx(MACS_224[name], abs=6e-4)


def test_count_macs_at_a_fixed_or_given_input_size():
    fixed = resnet_keras.build_model("resnet20", classes=10, input_shape=(32, 32, 3))
    assert resnet_keras.count_macs(fixed) == specs.get_facts("resnet20").macs
    any_size = resnet_keras.build_model("resnet20", classes=10)
    assert resnet_keras.count_macs(any_size, input_shape=(32, 32, 3)) == \
        resnet_keras.count_macs(fixed)
    assert resnet_keras.count_macs(any_size, input_shape=(64, 64, 3)) > \
        resnet_keras.count_macs(fixed)
    with pytest.raises(ValueError, match=r"fixed input size.*\(None, None, None, 3\)") as err:
        resnet_keras.count_macs(any_size)
    assert "\n" not in str(err.value)


def zoo_table():
    """The README's zoo table, rendered from the registry and its FACTS."""
    rows = ["| model | params | trainable | GMACs | description |",
            "|---|---:|---:|---:|---|"]
    for name, spec in specs.SPECS.items():
        facts = specs.FACTS[name]
        rows.append(f"| {name} | {facts.params:,} | {facts.trainable_params:,} | "
                    f"{facts.macs / 1e9:.3f} | {spec.description} |")
    return "\n".join(rows) + "\n"


def test_readme_zoo_table_is_the_facts():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    assert zoo_table() in readme, "README's zoo table differs from FACTS; it should read:\n" + \
        zoo_table()


@pytest.mark.parametrize("name", sorted(NO_TOP_PARAMS))
def test_no_top_param_counts(name):
    model = resnet_keras.build_model(name, include_top=False)
    assert model.count_params() == NO_TOP_PARAMS[name]


def _expected_levels(spec, size):
    """Level name -> (height, channels) expected for a square input of ``size``."""
    target = spec.output_stride or spec.native_output_stride
    drn = spec.family in ("drn_c", "drn_d")
    base = int(math.log2(spec.stem_stride))
    out, stride = {}, spec.stem_stride
    for i, stage_stride in enumerate(spec.strides):
        # v1 levels are the stage's output; v2 stages stride in their last
        # block and report its input, at the stage's entry resolution.
        level_stride = stride if spec.preact else stride * stage_stride
        stride *= stage_stride
        key = f"level{i + 1}" if drn else f"P{base + i}"
        out[key] = (math.ceil(size / min(level_stride, target)), spec.stage_channels(i))
    return out


@pytest.mark.parametrize("name", ALL)
def test_backbone_levels(name):
    size = 64
    spec = specs.get_spec(name)
    backbone = resnet_keras.build_backbone(name, input_shape=(size, size, 3))
    got = {k: (v.shape[1], v.shape[3]) for k, v in backbone.output.items()}
    assert got == _expected_levels(spec, size)
    assert all(v.shape[1] == v.shape[2] for v in backbone.output.values())
    if spec.family in ("drn_c", "drn_d"):
        assert list(got) == [f"level{i}" for i in range(1, 9)]
    elif spec.family != "cifar":
        assert list(got) == ["P2", "P3", "P4", "P5"]
    features = backbone(_images(size))
    assert set(features) == set(got)


def _shallow(name):
    return tuple(1 for _ in specs.get_spec(name).depths)


@pytest.mark.parametrize("name,output_stride", [
    (n, s) for n in ALL for s in specs.get_spec(n).output_strides])
def test_output_stride_feature_size(name, output_stride):
    # Same topology rule with one block per stage, to keep the test fast.
    size = 64
    model = resnet_keras.build_model(name, include_top=False, input_shape=(size, size, 3),
                                     output_stride=output_stride, depths=_shallow(name))
    assert model.output.shape[1:3] == (math.ceil(size / output_stride),) * 2
    # Dilation replaced the strides: the parameter count is unchanged.
    native = resnet_keras.build_model(name, include_top=False, input_shape=(size, size, 3),
                                      depths=_shallow(name))
    assert model.count_params() == native.count_params()


def _layer(model, name):
    return model.get_layer(name)


def test_stride_placement_v1_vs_v15():
    v15 = resnet_keras.resnet50(include_top=False, depths=(1, 1, 1, 1))
    v1 = resnet_keras.resnet50_v1(include_top=False, depths=(1, 1, 1, 1))
    assert _layer(v15, "conv3_block1_2_conv").strides == (2, 2)
    assert _layer(v15, "conv3_block1_1_conv").strides == (1, 1)
    assert _layer(v1, "conv3_block1_1_conv").strides == (2, 2)
    assert _layer(v1, "conv3_block1_2_conv").strides == (1, 1)
    assert not _layer(v15, "conv3_block1_1_conv").use_bias
    assert _layer(v1, "conv3_block1_1_conv").use_bias
    assert _layer(v15, "conv3_block1_1_bn").epsilon == 1e-5
    assert _layer(v1, "conv3_block1_1_bn").epsilon == pytest.approx(1.001e-5)
    # Strided convs pad symmetrically, as PyTorch does.
    assert _layer(v15, "conv3_block1_2_pad").padding == ((1, 1), (1, 1))


def test_resnet_output_stride_dilation_rule():
    # timm / torchvision rule: the first block of a dilated stage keeps the
    # incoming dilation; later blocks use the stage's.
    model = resnet_keras.resnet50(include_top=False, output_stride=8)
    assert _layer(model, "conv4_block1_2_conv").dilation_rate == (1, 1)
    assert _layer(model, "conv4_block2_2_conv").dilation_rate == (2, 2)
    assert _layer(model, "conv5_block1_2_conv").dilation_rate == (2, 2)
    assert _layer(model, "conv5_block3_2_conv").dilation_rate == (4, 4)
    basic = resnet_keras.resnet18(include_top=False, output_stride=16)
    assert _layer(basic, "conv5_block1_1_conv").dilation_rate == (1, 1)
    assert _layer(basic, "conv5_block1_2_conv").dilation_rate == (2, 2)
    assert _layer(basic, "conv5_block2_1_conv").dilation_rate == (2, 2)


def test_drn_a_first_block_is_not_dilated():
    model = resnet_keras.drn_a_50(include_top=False)
    for stage, dilation in (("conv4", 2), ("conv5", 4)):
        assert _layer(model, f"{stage}_block1_2_conv").dilation_rate == (1, 1)
        assert _layer(model, f"{stage}_block1_2_conv").strides == (1, 1)
        assert _layer(model, f"{stage}_block2_2_conv").dilation_rate == (dilation,) * 2


@pytest.mark.parametrize("name", ["drn_c_26", "drn_c_58"])
def test_drn_c_levels(name):
    model = resnet_keras.build_model(name, include_top=False)
    names = {layer.name for layer in model.layers}
    # Degridding levels 7-8: basic blocks without residual addition.
    assert "level7_block1_add" not in names and "level8_block1_add" not in names
    assert "level7_block1_0_conv" not in names  # the reference's dead projection
    assert _layer(model, "level7_block1_1_conv").dilation_rate == (2, 2)
    assert _layer(model, "level8_block1_1_conv").dilation_rate == (1, 1)
    # Levels 5-6: every block dilated, the first included.
    conv = "level5_block1_2_conv" if name == "drn_c_58" else "level5_block1_1_conv"
    assert _layer(model, conv).dilation_rate == (2, 2)
    conv = "level6_block1_2_conv" if name == "drn_c_58" else "level6_block1_1_conv"
    assert _layer(model, conv).dilation_rate == (4, 4)
    # Levels 1-2 are basic residual blocks even in the bottleneck variant.
    assert "level1_block1_add" in names and "level2_block1_0_conv" in names
    assert _layer(model, "conv1_conv").kernel_size == (7, 7)
    assert _layer(model, "conv1_conv").strides == (1, 1)


def test_drn_d_plain_levels():
    model = resnet_keras.drn_d_22(include_top=False)
    names = {layer.name for layer in model.layers}
    for level, dilation in ((1, 1), (2, 1), (7, 2), (8, 1)):
        assert not any(n.startswith(f"level{level}_block") for n in names)
        assert _layer(model, f"level{level}_conv1_conv").dilation_rate == (dilation,) * 2
    assert _layer(model, "level2_conv1_conv").strides == (2, 2)
    assert "level3_block1_add" in names


def test_any_input_size():
    model = resnet_keras.drn_c_26(classes=5)
    for shape in ((1, 40, 56, 3), (1, 33, 33, 3)):
        assert model(np.zeros(shape, "float32")).shape == (1, 5)


def test_keras_applications_arguments(tmp_path):
    model = resnet_keras.resnet18(include_top=False, pooling="avg", input_shape=(32, 32, 3))
    assert model.output.shape == (None, 512)
    model = resnet_keras.resnet18(include_top=False, pooling="max", name="r18")
    assert model.output.shape == (None, 512) and model.name == "r18"
    model = resnet_keras.resnet20(classes=7, classifier_activation=None)
    logits = np.asarray(model(_images(32)))
    assert logits.shape == (2, 7) and not np.allclose(logits.sum(axis=1), 1.0)
    tensor = keras.Input((48, 48, 3))
    model = resnet_keras.resnet18(input_tensor=tensor, classes=3)
    assert model.inputs[0] is tensor and model.output.shape == (None, 3)
    # Spec overrides (what the tuner searches).
    wide = resnet_keras.build_model("resnet50", depths=[1, 2, 1, 1], base_width=96,
                                    groups=2, include_top=False)
    assert _layer(wide, "conv2_block1_2_conv").groups == 2
    assert _layer(wide, "conv2_block1_2_conv").filters == int(64 * 96 / 64) * 2
    assert not any(l.name.startswith("conv3_block3") for l in wide.layers)
    # Weights from a local Keras file.
    source = resnet_keras.resnet20(classes=10)
    path = str(tmp_path / "r20.weights.h5")
    source.save_weights(path)
    loaded = resnet_keras.resnet20(classes=10, weights=path)
    np.testing.assert_allclose(loaded(_images(32)), source(_images(32)), atol=1e-6)


BAD_ARGUMENTS = [
    ("resnet51", {}, "resnet51"),
    ("resnet50", {"output_stride": 4}, "output_stride=4"),
    ("drn_c_26", {"output_stride": 16}, "output_stride=16"),
    ("resnet20", {"output_stride": 8}, "output_stride=8"),
    ("resnet50", {"input_shape": (224, 224)}, "input_shape"),
    ("resnet50", {"input_shape": (224, 224, 3, 1)}, "input_shape"),
    ("resnet50", {"input_shape": (224, 224, 0)}, "channels"),
    ("resnet50", {"classes": 0}, "classes=0"),
    ("resnet50", {"classes": 2.5}, "classes=2.5"),
    ("resnet50", {"weights": "/no/such/file.h5"}, "/no/such/file.h5"),
    ("resnet50", {"weights": "instagram"}, "instagram"),
    ("resnet50", {"pooling": "mean"}, "pooling='mean'"),
    ("resnet50", {"include_top": "yes"}, "include_top"),
    ("resnet50", {"classifier_activation": "softmaxx"}, "softmaxx"),
    ("resnet50", {"depth": (3, 4, 6, 3)}, "depth"),
    ("resnet50", {"depths": (3, 4, 6)}, "depths"),
    ("resnet50", {"depths": (3, 0, 6, 3)}, "depths"),
    ("resnet50", {"block": "triple"}, "block='triple'"),
    ("resnet18", {"groups": 32}, "groups=32"),
    ("resnext50_32x4d", {"widths": (16, 32, 64, 128), "base_width": 2}, "base_width=2"),
    ("resnet20", {"stem": "deep"}, "stem='deep'"),
    ("resnet50", {"stem": "wide"}, "stem='wide'"),
    ("drn_c_26", {"stem": "cifar"}, "stem='cifar'"),
    ("resnet50", {"shortcut": "avg"}, "shortcut='avg'"),
    ("resnet50v2", {"shortcut": "avgpool"}, "shortcut='avgpool'"),
    ("resnet50", {"attention": "cbam"}, "attention='cbam'"),
    ("resnet50v2", {"attention": "se"}, "attention='se'"),
    ("resnet50v2", {"zero_init_last": True}, "zero_init_last=True"),
    ("resnet50", {"se_reduction": 0}, "se_reduction=0"),
    ("resnet50", {"eca_kernel_size": 4}, "eca_kernel_size=4"),
    ("resnet50", {"drop_path_rate": 1.0}, "drop_path_rate=1.0"),
    ("resnet50", {"drop_path_rate": -0.1}, "drop_path_rate=-0.1"),
    ("resnet50", {"drop_path_rate": "0.1"}, "drop_path_rate='0.1'"),
    ("resnet50", {"zero_init_last": "yes"}, "zero_init_last='yes'"),
    ("resnet18", {"stem": "cifar", "output_stride": 16}, "output_stride=16"),
]


@pytest.mark.parametrize("name,kwargs,needle", BAD_ARGUMENTS)
def test_bad_arguments_raise_one_clear_value_error(name, kwargs, needle):
    with pytest.raises(ValueError) as info:
        resnet_keras.build_model(name, **kwargs)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


def test_unknown_model_lists_choices():
    with pytest.raises(ValueError, match="Available: .*drn_c_26.*resnet50"):
        resnet_keras.build_model("resnet51")
    with pytest.raises(ValueError, match="choices: 8, 16, 32"):
        resnet_keras.resnet50(output_stride=4)


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_fused_batch_norm_trains_like_keras(policy):
    """The fused training path matches Keras' BatchNormalization: outputs,
    moving statistics (biased variance) and gradients."""
    import tensorflow as tf

    from resnet_keras.layers import BatchNormalization as FusedBatchNormalization

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(2.0, 3.0, (4, 5, 6, 8)).astype("float32"))
    weights = tf.constant(rng.normal(0, 1, (4, 5, 6, 8)).astype("float32"))
    gamma, beta = rng.uniform(0.5, 1.5, 8), rng.normal(0, 1, 8)
    layer_pair = []
    for cls in (FusedBatchNormalization, keras.layers.BatchNormalization):
        layer = cls(epsilon=1e-5, momentum=0.9, dtype=policy)
        layer.build(x.shape)
        layer.gamma.assign(gamma.astype("float32"))
        layer.beta.assign(beta.astype("float32"))
        layer_pair.append(layer)
    results = []
    for layer in layer_pair:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * weights)
        grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
        results.append([y, layer.moving_mean, layer.moving_variance, *grads])
    # bfloat16 keeps 8 bits of mantissa: outputs up to ~8 round to 1/32.
    tol = 1e-4 if policy == "float32" else 7e-2
    for fused, plain in zip(*results):
        fused = np.asarray(tf.cast(fused, tf.float32))
        plain = np.asarray(tf.cast(plain, tf.float32))
        np.testing.assert_allclose(fused, plain, rtol=tol, atol=tol)
    assert results[0][0].dtype == layer_pair[1].compute_dtype
    # Inference takes Keras' own path: identical numbers.
    np.testing.assert_array_equal(layer_pair[0](x, training=False),
                                  keras.layers.BatchNormalization.call(
                                      layer_pair[0], tf.cast(x, layer_pair[0].compute_dtype),
                                      training=False))
