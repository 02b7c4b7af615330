""".safetensors weight files: timm's and the Hugging Face Hub's checkpoint format.

State dicts with torchvision, timm and fyu/drn key names, written with
``safetensors.numpy`` or byte by byte (bfloat16, which numpy lacks), load
exactly as the same ``.npz`` does; a file that does not fit or cannot be
read is one ValueError and leaves the model bit for bit unchanged.
"""
import json
import struct
import sys

import numpy as np
import pytest

import resnet_keras
from resnet_keras import errors
from resnet_keras import weights as weights_lib
from reference import reference_state_dict
from test_models import timm_keys
from test_weights import assert_loaded_exactly, assert_unchanged, snapshot

safetensors_numpy = pytest.importorskip("safetensors.numpy")

SIZE = 32


def _state_dict(name):
    if name == "resnet18d":  # timm's key names
        from reference import golden_recipe

        return golden_recipe().make_state_dict(timm_keys(name), 5)
    return reference_state_dict(name)


def _images(seed=0):
    return np.random.default_rng(seed).normal(size=(2, SIZE, SIZE, 3)).astype("float32")


def _write_raw(path, tensors):
    """A .safetensors file written byte by byte: {name: (dtype tag, shape, bytes)}."""
    header, offset = {}, 0
    for key, (dtype, shape, data) in tensors.items():
        header[key] = {"dtype": dtype, "shape": list(shape),
                       "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        f.write(b"".join(data for _, _, data in tensors.values()))
    return path


def _bfloat16_bits(array):
    """float32 -> bfloat16 by dropping the low 16 bits (truncation)."""
    return (np.ascontiguousarray(array, "<f4").view("<u4") >> 16).astype("<u2")


@pytest.fixture(scope="module")
def resnet18_sd():
    return reference_state_dict("resnet18")


@pytest.mark.parametrize("name", ["resnet18", "resnet18d", "drn_d_22"])
def test_loads_like_npz(name, tmp_path):
    """torchvision, timm and fyu/drn names load exactly; the same outputs as .npz."""
    sd = _state_dict(name)
    npz, st = str(tmp_path / f"{name}.npz"), str(tmp_path / f"{name}.safetensors")
    np.savez(npz, **sd)
    safetensors_numpy.save_file(sd, st)
    read = weights_lib.read_state_dict(st)
    assert sorted(read) == sorted(sd)
    for key, value in sd.items():
        np.testing.assert_array_equal(read[key], value, err_msg=key)
    kwargs = dict(input_shape=(SIZE, SIZE, 3), classifier_activation=None)
    from_st = resnet_keras.build_model(name, weights=st, **kwargs)
    assert_loaded_exactly(from_st, sd)
    if name != "resnet18":  # the mapping is the .npz one: one model suffices
        return
    from_npz = resnet_keras.build_model(name, weights=npz, **kwargs)
    x = _images()
    np.testing.assert_array_equal(np.asarray(from_st(x)), np.asarray(from_npz(x)))


def test_bfloat16_and_float16_tensors_load_as_float32(tmp_path, resnet18_sd):
    """Half-precision checkpoints (as the Hub often has them) load exactly:
    bfloat16 (written as raw bits) and float16 widen to float32."""
    tensors, expected = {}, {}
    for i, (key, value) in enumerate(resnet18_sd.items()):
        if i % 2:
            half = value.astype("<f2")
            tensors[key] = ("F16", value.shape, half.tobytes())
            expected[key] = half.astype(np.float32)
        else:
            bits = _bfloat16_bits(value)
            tensors[key] = ("BF16", value.shape, bits.tobytes())
            expected[key] = (bits.astype("<u4") << 16).view("<f4")
    tensors["bn1.num_batches_tracked"] = ("I64", (), np.int64(7).tobytes())
    path = _write_raw(str(tmp_path / "half.safetensors"), tensors)
    read = weights_lib.read_state_dict(path)
    assert {str(v.dtype) for k, v in read.items() if k in expected} == {"float32"}
    assert not np.array_equal(expected["conv1.weight"], resnet18_sd["conv1.weight"])
    model = resnet_keras.resnet18(weights=path, input_shape=(SIZE, SIZE, 3))
    assert_loaded_exactly(model, expected)


@pytest.mark.parametrize("change", ["wrong shape", "missing key", "nan"])
def test_file_that_does_not_fit_loads_nothing(change, tmp_path, resnet18_sd):
    sd = dict(resnet18_sd)
    key = "layer4.1.bn2.running_var"  # assigned last
    if change == "wrong shape":
        key = "layer2.0.conv1.weight"
        sd[key] = np.ascontiguousarray(sd[key].transpose(1, 0, 2, 3))
    elif change == "missing key":
        del sd[key]
    else:
        sd[key] = np.where(np.arange(sd[key].size) == 1, np.nan, sd[key]).astype("float32")
    path = str(tmp_path / "bad.safetensors")
    safetensors_numpy.save_file(sd, path)
    model = resnet_keras.resnet18(input_shape=(SIZE, SIZE, 3))
    before = snapshot(model)
    with pytest.raises(ValueError) as err:
        weights_lib.load_weights(model, path, "resnet18")
    message = str(err.value)
    assert "\n" not in message and "bad.safetensors" in message and key in message, message
    assert_unchanged(model, before)


@pytest.mark.parametrize("damage", ["truncated", "text", "header"])
def test_damaged_file_is_one_error_naming_it(damage, tmp_path, resnet18_sd):
    path = str(tmp_path / "r18.safetensors")
    safetensors_numpy.save_file(resnet18_sd, path)
    with open(path, "rb") as f:
        data = f.read()
    data = {"truncated": data[:len(data) // 2], "text": b"not a weights file\n",
            "header": data[:8] + b"[" + data[9:]}[damage]
    with open(path, "wb") as f:
        f.write(data)
    model = resnet_keras.resnet18(input_shape=(SIZE, SIZE, 3))
    before = snapshot(model)
    for load in (lambda: weights_lib.load_weights(model, path, "resnet18"),
                 lambda: resnet_keras.resnet18(weights=path)):
        with pytest.raises(ValueError) as err:
            load()
        message = str(err.value)
        assert "\n" not in message, message
        assert message.startswith(f"weights file {path!r} is not a readable .safetensors "
                                  "file: "), message
    assert_unchanged(model, before)


def test_without_safetensors_says_how_to_install(tmp_path, monkeypatch):
    path = str(tmp_path / "m.safetensors")
    safetensors_numpy.save_file({"fc.bias": np.zeros(10, np.float32)}, path)
    monkeypatch.setitem(sys.modules, "safetensors", None)  # import fails as if absent
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    expected = (f"reading weights file {path!r} needs safetensors, which is not installed: "
                "pip install 'resnet-keras[safetensors]'")
    for call in (lambda: weights_lib.check_weights_arg(path, "resnet18", True, 1000),
                 lambda: resnet_keras.resnet18(weights=path),
                 lambda: weights_lib.read_state_dict(path)):
        with pytest.raises(errors.MissingExtra) as err:
            call()
        assert str(err.value) == expected


def test_suffix_is_listed(tmp_path):
    assert ".safetensors" in weights_lib.WEIGHT_SUFFIXES
    path = tmp_path / "weights.bin"
    path.write_bytes(b"0")
    with pytest.raises(ValueError, match=r"expected one of .*\.npz, \.safetensors"):
        resnet_keras.resnet18(weights=str(path))
