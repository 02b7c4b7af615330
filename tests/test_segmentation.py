"""DRNSeg: exact transposed-conv upsampling, fyu/drn checkpoints, training."""
import glob
import math
import os

import keras
import numpy as np
import pytest
from PIL import Image, ImageDraw

import resnet_keras
from resnet_keras.layers import DepthwiseConvTranspose2D, bilinear_kernel
from resnet_keras.segmentation import build_segmentation_model
from resnet_keras.weights import load_torch_state_dict, torch_key_map
from reference import reference_state_dict



def seg19_state_dict(name, seed=1234):
    """The full fyu/drn DRNSeg (19 classes) state dict, by the golden recipe."""
    return reference_state_dict(f"{name}_seg19", seed)


def transposed_conv_reference(x, kernel, stride, padding):
    """numpy ConvTranspose2d with groups = channels: x (N, H, W, C), kernel (k, k, C)."""
    n, h, w, c = x.shape
    k = kernel.shape[0]
    full = np.zeros((n, (h - 1) * stride + k, (w - 1) * stride + k, c))
    for i in range(h):
        for j in range(w):
            full[:, i * stride:i * stride + k, j * stride:j * stride + k] += (
                x[:, i, j, None, None, :] * kernel)
    return full[:, padding:padding + h * stride, padding:padding + w * stride]


def rel_l2(value, reference):
    return float(np.linalg.norm(value - reference) / np.linalg.norm(reference))


# ---------------------------------------------------------------------------
# The upsampling layer
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kernel_size, stride, padding, size", [
    (16, 8, 4, (3, 5)), (4, 2, 1, (7, 4)), (8, 4, 2, (1, 1)), (6, 2, 2, (5, 5))])
def test_depthwise_transposed_conv_is_exact(kernel_size, stride, padding, size):
    rng = np.random.default_rng(kernel_size)
    x = rng.normal(size=(2, *size, 3)).astype("float32")
    layer = DepthwiseConvTranspose2D(kernel_size, stride, padding)
    layer.build(x.shape)
    kernel = rng.normal(size=(kernel_size, kernel_size, 3, 1)).astype("float32")
    layer.kernel.assign(kernel)
    out = np.asarray(layer(x))
    expected = transposed_conv_reference(x, kernel[..., 0], stride, padding)
    assert out.shape == expected.shape == (2, size[0] * stride, size[1] * stride, 3)
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=1e-5)


def test_bilinear_initialisation_is_fyu_drn_fill_up_weights():
    size = 16
    f = math.ceil(size / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    expected = np.array([[(1 - abs(i / f - c)) * (1 - abs(j / f - c)) for j in range(size)]
                         for i in range(size)])
    np.testing.assert_allclose(bilinear_kernel(size), expected, rtol=1e-12)
    layer = DepthwiseConvTranspose2D(16, 8, 4)
    layer.build((None, 2, 2, 5))
    np.testing.assert_allclose(np.asarray(layer.kernel)[:, :, 3, 0], expected, rtol=1e-6)
    # Bilinear upsampling keeps a constant map constant (away from the border).
    out = np.asarray(layer(np.ones((1, 4, 4, 5), "float32")))
    np.testing.assert_allclose(out[0, 8:24, 8:24], 1.0, rtol=1e-6)


def test_invalid_upsampling_geometry():
    with pytest.raises(ValueError, match="kernel_size - 2 \\* padding must equal strides"):
        DepthwiseConvTranspose2D(16, 8, 3)


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name, sizes", [
    ("drn_d_22", [(64, 64), (48, 80)]),
    ("drn_c_26", [(40, 24)]),
    ("resnet18", [(32, 64)]),  # dilated to output stride 8 by default
])
def test_output_has_the_input_size(name, sizes):
    model = build_segmentation_model(name, 5)
    for size in sizes:
        out = np.asarray(model(np.zeros((1, *size, 3), "float32")))
        assert out.shape == (1, *size, 5)
        np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-5)
    assert model.get_layer("up").trainable_weights == []


def test_bad_arguments():
    with pytest.raises(ValueError, match="multiples of the output stride 8"):
        build_segmentation_model("drn_d_22", 3, input_shape=(60, 64, 3))
    with pytest.raises(ValueError, match="classes=0"):
        build_segmentation_model("drn_d_22", 0)
    with pytest.raises(ValueError, match="drn_x"):
        build_segmentation_model("drn_x", 3)


@pytest.mark.parametrize("name", [
    "drn_d_22", "drn_c_26", "drn_a_50",
    pytest.param("drn_d_105", marks=pytest.mark.slow)])
def test_seg19_state_dict_loads_completely(name):
    model = build_segmentation_model(name, 19, input_shape=(32, 32, 3))
    sd = seg19_state_dict(name)
    load_torch_state_dict(model, sd)
    key_map = torch_key_map(model, base=True)
    assert set(key_map) == set(sd)
    for key, (variable, _, to_keras) in key_map.items():
        np.testing.assert_array_equal(np.asarray(variable), to_keras(sd[key]), err_msg=key)


def test_seg19_checkpoint_reproduces_the_reference_computation(tmp_path):
    """base.* through the trunk, seg (1x1 conv) and up (grouped transposed
    conv), recomputed in numpy from the backbone's features."""
    sd = seg19_state_dict("drn_d_22")
    path = str(tmp_path / "drn_d_22_seg19.npz")
    np.savez(path, **sd)
    model = build_segmentation_model("drn_d_22", 19, weights=path, classifier_activation=None)
    backbone = load_torch_state_dict(resnet_keras.build_backbone("drn_d_22"), sd)
    x = np.random.default_rng(3).normal(size=(2, 32, 48, 3)).astype("float32")
    features = np.asarray(backbone(x)["level8"], "float64")
    logits = features @ sd["seg.weight"][:, :, 0, 0].T + sd["seg.bias"]
    expected = transposed_conv_reference(logits, sd["up.weight"][:, 0].transpose(1, 2, 0), 8, 4)
    assert rel_l2(np.asarray(model(x), "float64"), expected) <= 1e-5
    # Another number of classes: one clear error naming the classifier.
    with pytest.raises(ValueError, match=r"seg\.weight \(19, 512, 1, 1\) for \(5, 512, 1, 1\)"):
        build_segmentation_model("drn_d_22", 5, weights=path)


def test_classification_checkpoint_initialises_the_trunk():
    """fyu/drn's default: ImageNet classification weights in the base, seg and up
    as initialised (fc is ignored)."""
    sd = reference_state_dict("drn_d_22")
    model = build_segmentation_model("drn_d_22", 4)
    up = np.asarray(model.get_layer("up").kernel)
    load_torch_state_dict(model, sd)
    np.testing.assert_array_equal(model.get_layer("level8_conv1_conv").kernel,
                                  sd["layer8.0.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(model.get_layer("up").kernel, up)


# ---------------------------------------------------------------------------
# Training on a small real-image task, and saving
# ---------------------------------------------------------------------------

def shapes_on_photos(cifar_dir, count, size=64, seed=0):
    """CIFAR-10 photos at ``size`` with a flat-coloured square (class 1) or disc
    (class 2) pasted on; background 0; the shapes' outlines 255 (ignored)."""
    rng = np.random.default_rng(seed)
    paths = sorted(glob.glob(os.path.join(cifar_dir, "train", "*", "*.jpg")))
    images, masks = [], []
    for path in rng.choice(paths, count, replace=False):
        photo = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
        mask = Image.new("L", (size, size), 0)
        label = int(rng.integers(1, 3))
        r = int(rng.integers(size // 6, size // 3))
        cx, cy = rng.integers(r, size - r, 2)
        box = [int(cx - r), int(cy - r), int(cx + r), int(cy + r)]
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw, mask_draw = ImageDraw.Draw(photo), ImageDraw.Draw(mask)
        if label == 1:
            draw.rectangle(box, fill=colour)
            mask_draw.rectangle(box, fill=label, outline=255)
        else:
            draw.ellipse(box, fill=colour)
            mask_draw.ellipse(box, fill=label, outline=255)
        images.append(np.asarray(photo))
        masks.append(np.asarray(mask))
    return (np.stack(images).astype("float32") / 127.5 - 1,
            np.stack(masks).astype("int32"))


def test_training_lowers_the_loss(cifar_subset):
    keras.utils.set_random_seed(0)
    images, masks = shapes_on_photos(cifar_subset, 32)
    assert set(np.unique(masks)) == {0, 1, 2, 255}
    model = build_segmentation_model(
        "drn_d_22", 3, input_shape=(64, 64, 3), widths=(8, 16, 32, 64, 64, 64, 64, 64))
    loss = keras.losses.SparseCategoricalCrossentropy(ignore_class=255)
    model.compile(keras.optimizers.Adam(3e-3), loss)
    up = np.asarray(model.get_layer("up").kernel)
    before = model.evaluate(images, masks, batch_size=16, verbose=0)
    history = model.fit(images, masks, batch_size=8, epochs=6, verbose=0).history["loss"]
    after = model.evaluate(images, masks, batch_size=16, verbose=0)
    assert history[-1] < 0.5 * history[0], history
    assert after < 0.6 * before, (before, after)
    np.testing.assert_array_equal(model.get_layer("up").kernel, up)  # frozen


def test_keras_file_round_trip_in_safe_mode(tmp_path):
    model = build_segmentation_model("drn_d_22", 4, widths=(8, 16, 16, 16, 16, 16, 16, 16))
    up = model.get_layer("up")
    up.kernel.assign(np.random.default_rng(1).normal(size=up.kernel.shape))
    path = str(tmp_path / "seg.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = np.random.default_rng(2).normal(size=(1, 40, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)
    assert isinstance(loaded.get_layer("up"), DepthwiseConvTranspose2D)
    assert not loaded.get_layer("up").trainable
