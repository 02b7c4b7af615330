"""Reading weight files, each array checked before anything is assigned.

PyTorch state dicts (``.pth``/``.pt``/``.pth.tar`` with ``torch.load(...,
weights_only=True)``; ``.npz`` with numpy; ``.safetensors``, as timm and the
Hugging Face Hub publish them, with ``safetensors.numpy``), legacy ``.h5`` files
(keras.applications, Keras 2: loaded by layer name) and Keras 3 files
(``.weights.h5``, ``.keras``: loaded by ``model.load_weights`` once every
stored array has been checked). Errors are one ValueError naming the file
and the key.
"""
import importlib.util
import io
import pickle
import warnings

import numpy as np

from resnet_keras import errors
from resnet_keras.weight_checks import (CLASSIFIER_LAYERS, assign_all, cast_for, check_finite,
                                        numpy_dtype, raise_if_mismatched, raise_if_unusable,
                                        real_array, to_numpy)

KERAS_SUFFIXES = (".weights.h5", ".keras", ".h5", ".hdf5")
TORCH_SUFFIXES = (".pth", ".pt", ".pth.tar")
NUMPY_SUFFIXES = (".npz",)
SAFETENSORS_SUFFIXES = (".safetensors",)
# Files holding a PyTorch-style state dict (read by read_state_dict).
STATE_DICT_SUFFIXES = TORCH_SUFFIXES + NUMPY_SUFFIXES + SAFETENSORS_SUFFIXES
WEIGHT_SUFFIXES = KERAS_SUFFIXES + STATE_DICT_SUFFIXES

NEEDS_TORCH = ("reading a PyTorch checkpoint needs torch: pip install torch "
               "(or pip install 'resnet-keras[torch]'), or convert the checkpoint "
               "to .npz (numpy.savez(path, **state_dict)) and pass that")


def torch_available():
    """Whether ``torch`` can be imported (needed only for ``.pth`` files)."""
    return importlib.util.find_spec("torch") is not None


def require_safetensors(path):
    """``safetensors.numpy``, or :class:`~resnet_keras.errors.MissingExtra`
    (one line with the ``pip install`` command) naming the file PATH."""
    return errors.require("safetensors.numpy", "safetensors", f"reading weights file {path!r}")


def read_state_dict(path):
    """``{name: numpy array}`` from a ``.pth``/``.pt``/``.pth.tar``, ``.npz`` or
    ``.safetensors`` file.

    PyTorch files are read with ``torch.load(path, map_location="cpu",
    weights_only=True)`` (no arbitrary code is unpickled). A training
    checkpoint holding ``"state_dict"`` (or ``"model"``) is unwrapped.
    A ``.safetensors`` file's float16, bfloat16 and float8 tensors come back
    as float32 (exactly).
    """
    if path.endswith(SAFETENSORS_SUFFIXES):
        return _read_safetensors(path)
    if path.endswith(NUMPY_SUFFIXES):
        try:
            data = np.load(path, allow_pickle=False)
        except Exception as err:  # BadZipFile, EOFError, ValueError, OSError
            raise ValueError(f"weights file {path!r} is not a readable .npz state dict: "
                             f"{errors.first_line(err)}") from None
        with data:
            out = {}
            for key in data.files:
                try:
                    out[key] = data[key]
                except Exception as err:  # object arrays (pickles), truncated members
                    raise ValueError(f"weights file {path!r}: array {key!r} cannot be read "
                                     f"({errors.first_line(err)}); nothing was "
                                     "loaded") from None
            return out
    if not torch_available():
        raise ValueError(f"weights file {path!r}: {NEEDS_TORCH}")
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"weights file {path!r} holds objects other than tensors and "
                         "plain containers; it is not read (weights_only=True)") from None
    except Exception as err:  # truncated zip, bad pickle
        raise ValueError(f"weights file {path!r} is not a readable PyTorch checkpoint: "
                         f"{errors.first_line(err)}") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"weights file {path!r} holds a {type(obj).__name__}, "
                         "not a state dict")
    out = {}
    for key, value in obj.items():
        if hasattr(value, "shape"):
            try:
                out[key] = to_numpy(value)
            except Exception as err:  # sparse, quantized or meta tensors
                raise ValueError(f"weights file {path!r}: tensor {key!r} cannot be read as "
                                 f"an array ({errors.first_line(err)}); nothing was "
                                 "loaded") from None
    return out


def _read_safetensors(path):
    numpy_api = require_safetensors(path)
    try:
        arrays = numpy_api.load_file(path)
    except Exception as err:  # SafetensorError (bad header, truncated), unknown dtypes
        raise ValueError(f"weights file {path!r} is not a readable .safetensors file: "
                         f"{errors.first_line(err)}") from None
    return {key: _widened(value) for key, value in arrays.items()}


def _widened(array):
    """Floats narrower than float32 (float16; bfloat16 and float8 from
    ml_dtypes) as float32, which holds each of their values exactly."""
    name = array.dtype.name
    if (array.dtype.kind == "f" and array.dtype.itemsize < 4) or name.startswith(
            ("bfloat16", "float8", "float6", "float4")):
        return array.astype(np.float32)
    return array


def load_keras_native(model, path, model_name):
    """``model.load_weights`` for Keras 3 files, restoring the model on failure.

    Keras assigns as it reads, so the file's arrays are checked first
    (:func:`check_keras_file`), and the loaded weights are checked again
    (finite) before the load counts; any failure restores the model.
    """
    check_keras_file(path, model.weights[0].dtype if model.weights else "float32")
    backup = [v.numpy() for v in model.weights]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(path)
            for variable in model.weights:
                check_finite(variable.path, np.asarray(variable.numpy()))
        except Exception as err:  # Keras raises several types for a bad file
            for variable, value in zip(model.weights, backup):
                variable.assign(value)
            raise ValueError(f"weights file {path!r} does not fit {model_name}: "
                             f"{errors.first_line(err)}") from None
    for w in caught:  # a successful load's warnings still reach the user
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return model


def check_keras_file(path, dtype="float32"):
    """ValueError (one line) if an array stored in a Keras 3 file is unusable.

    Reads every dataset of a ``.weights.h5`` file, or of the weights files
    inside a ``.keras`` archive, and refuses the first that is not finite
    real numbers (see :func:`real_array`), also once converted to the
    model's float DTYPE. A file that cannot be opened is left to Keras' own
    loader to report.
    """
    import zipfile

    dtype = numpy_dtype(dtype)
    try:
        if path.endswith(".keras"):
            with zipfile.ZipFile(path) as archive:
                members = [(m, archive.read(m)) for m in archive.namelist()
                           if m.endswith((".h5", ".npz"))]
        else:
            members = [("", None)]
    except (OSError, zipfile.BadZipFile, EOFError):
        return
    for member, data in members:
        prefix = f"{member}:" if member else ""
        if member.endswith(".npz"):
            try:
                stored = np.load(io.BytesIO(data), allow_pickle=False)
            except Exception:  # unreadable: Keras reports it
                continue
            with stored:
                for key in stored.files:
                    _check_stored(f"{prefix}{key}", lambda k=key: stored[k], path, dtype)
        else:
            _check_h5_file(data if member else path, prefix, path, dtype)


def _check_h5_file(source, prefix, path, dtype):
    import h5py

    try:
        handle = h5py.File(io.BytesIO(source) if isinstance(source, bytes) else source, "r")
    except Exception:  # not HDF5 or truncated: Keras reports it
        return
    datasets = []
    with handle:
        handle.visititems(lambda name, obj: datasets.append(name)
                          if isinstance(obj, h5py.Dataset) else None)
        for name in datasets:
            _check_stored(f"{prefix}{name}", lambda n=name: handle[n][()], path, dtype)


def _check_stored(label, read, path, dtype):
    try:
        value = read()
    except Exception as err:
        raise ValueError(f"weights file {path!r}: {label} cannot be read as an array "
                         f"({errors.first_line(err)}); nothing was loaded") from None
    try:
        array = real_array(label, value)
        check_finite(label, array)
        if array.dtype.kind == "f" and dtype.kind in "fV":
            with np.errstate(over="ignore", invalid="ignore"):
                check_finite(label, array.astype(dtype), f" after conversion to {dtype}")
    except ValueError as err:
        raise ValueError(f"weights file {path!r}: {err}; nothing was loaded") from None


def _h5_names(group, attr):
    """A string-list attribute, also when HDF5 split it into ``attr0, attr1, ...``."""
    if attr in group.attrs:
        values = list(group.attrs[attr])
    else:
        values, chunk = [], 0
        while f"{attr}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{attr}{chunk}"])
            chunk += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def read_legacy_h5(path):
    """``{layer name: [arrays]}`` of a legacy (keras.applications, Keras 2) .h5 file."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            group = f
            if "layer_names" not in f.attrs and "model_weights" in f:
                group = f["model_weights"]
            names = _h5_names(group, "layer_names")
            if not names:
                raise ValueError("no 'layer_names': not a legacy Keras weights file "
                                 "(Keras 3 weights files end in .weights.h5)")
            out = {}
            for name in names:
                layer = group[name]
                arrays = [np.asarray(layer[w]) for w in _h5_names(layer, "weight_names")]
                if arrays:
                    out[name] = arrays
            return out
    except ValueError as err:
        raise ValueError(f"weights file {path!r}: {errors.first_line(err)}") from None
    except Exception as err:  # h5py raises OSError/KeyError for corrupt files
        raise ValueError(f"weights file {path!r} is not a readable HDF5 weights file: "
                         f"{errors.first_line(err)}") from None


def load_legacy_h5(model, path):
    """Load a legacy ``.h5`` weights file into ``model`` by layer name.

    keras.applications files load unchanged. Every layer with weights must be
    in the file with the same shapes, except the optional classifier layers
    (see :mod:`resnet_keras.weights`); nothing is assigned otherwise.
    """
    saved = read_legacy_h5(path)
    pairs, missing, misshaped, unusable = [], [], [], []
    for layer in model.layers:
        variables = layer.trainable_weights + layer.non_trainable_weights
        if not variables:
            continue
        if layer.name not in saved:
            if layer.name not in CLASSIFIER_LAYERS:
                missing.append(layer.name)
            continue
        arrays = saved[layer.name]
        shapes = [tuple(a.shape) for a in arrays]
        wanted = [tuple(v.shape) for v in variables]
        if shapes != wanted:
            misshaped.append(f"{layer.name}: {shapes} for {wanted}")
            continue
        for variable, array in zip(variables, arrays):
            label = f"{layer.name}/{variable.name}"
            try:
                pairs.append((variable, cast_for(label, real_array(label, array), variable)))
            except ValueError as err:
                unusable.append(str(err))
    present = {layer.name for layer in model.layers}
    unexpected = [n for n in saved if n not in present and n not in CLASSIFIER_LAYERS]
    raise_if_mismatched(f"weights file {path!r}", model.name, "layers",
                         missing, unexpected, misshaped)
    raise_if_unusable(f"weights file {path!r}", model.name, unusable)
    assign_all(pairs)
    return model
