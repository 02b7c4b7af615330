"""Loading weights into zoo models.

Sources accepted by ``weights=``:

* ``None``: random initialisation.
* ``"imagenet"``: the public ImageNet weights of the name, where one exists:
  the keras.applications files for ``resnet50_v1``..``resnet152v2`` (same
  file names, URLs and hashes as keras.applications, in the same
  ``~/.keras/models`` cache), the torchvision checkpoints for the ResNets,
  ResNeXts and Wide ResNets, and fyu/drn's checkpoints for the DRN-C/D
  (these two need ``torch`` to read the ``.pth`` files).
* a Keras file: ``.weights.h5`` and ``.keras`` (Keras 3, loaded by
  ``model.load_weights``) or a legacy ``.h5``/``.hdf5`` (keras.applications
  and Keras 2 files, loaded by layer name).
* a PyTorch state dict: ``.pth``/``.pt``/``.pth.tar`` (read with
  ``torch.load(..., weights_only=True)``; needs ``torch``) or ``.npz`` (a
  numpy archive of name -> array; no torch needed), with torchvision or
  fyu/drn parameter names, mapped by :func:`load_torch_state_dict`.

Loading is all or nothing: every array is read, converted and checked
before the first one is assigned. A file or state dict that does not fit
(missing, unexpected or mis-shaped weights) or holds an array that is not
real numbers (bool, text, object, complex, date/time) or not finite (nan,
inf, also after conversion to the variable's dtype) raises one ValueError
naming the key and leaves the model's weights bit for bit unchanged.

The classifier layers (``predictions`` = torch ``fc``; ``seg`` and ``up`` of
a segmentation model) are optional in a source: a source without any of a
classifier's weights loads everything else and leaves that layer as
initialised (how to start fine-tuning with another number of classes);
classifier weights for a layer the model does not have (``include_top=False``,
a backbone, or ``fc`` for a segmentation model) are ignored. Classifier
weights of the wrong shape (another number of classes) are an error.
"""
import hashlib
import importlib.util
import io
import os
import pickle
import re
import warnings

import numpy as np

from resnet_keras import errors

KERAS_SUFFIXES = (".weights.h5", ".keras", ".h5", ".hdf5")
TORCH_SUFFIXES = (".pth", ".pt", ".pth.tar")
NUMPY_SUFFIXES = (".npz",)
WEIGHT_SUFFIXES = KERAS_SUFFIXES + TORCH_SUFFIXES + NUMPY_SUFFIXES

# keras.applications (keras/src/applications/resnet.py): file names are
# f"{name}_weights_tf_dim_ordering_tf_kernels[_notop].h5"; the hashes are
# (with top, without top).
KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
KERAS_WEIGHTS_HASHES = {
    "resnet50": ("2cb95161c43110f7111970584f804107", "4d473c1dd8becc155b73f8504c6f6626"),
    "resnet101": ("f1aeb4b969a6efcfb50fad2f0c20cfc5", "88cf7a10940856eca736dc7b7e228a21"),
    "resnet152": ("100835be76be38e30d865e96f2aaae62", "ee4c566cf9a93f14d82f913c2dc6dd0c"),
    "resnet50v2": ("3ef43a0b657b3be2300d5770ece849e0", "fac2f116257151a9d068a22e544a4917"),
    "resnet101v2": ("6343647c601c52e1368623803854d971", "c0ed64b8031c3730f411d2eb4eea35b5"),
    "resnet152v2": ("a49b44d1979771252814e80f8ec446f9", "ed17cf2e0169df9d443503ef94b23b33"),
}
# Registered name -> keras.applications weights name.
KERAS_APPLICATIONS = {
    "resnet50_v1": "resnet50", "resnet101_v1": "resnet101", "resnet152_v1": "resnet152",
    "resnet50v2": "resnet50v2", "resnet101v2": "resnet101v2", "resnet152v2": "resnet152v2",
}

# PyTorch checkpoints: torchvision's IMAGENET1K_V1 weights, fyu/drn's
# model_urls and timm's own ImageNet-1k checkpoints (timm key names; the
# resnet*d "ra2", seresnet50 "ra2" and ecaresnet*d "miil" weights, all on
# torchvision's mean/std input). The 8 hex digits before ".pth" start the
# file's sha256.
TORCHVISION_URL = "https://download.pytorch.org/models/"
DRN_URL = "http://dl.yf.io/drn/"
TIMM_URL = "https://github.com/rwightman/pytorch-image-models/releases/download/"
TORCH_CHECKPOINTS = {
    "resnet18": TORCHVISION_URL + "resnet18-f37072fd.pth",
    "resnet34": TORCHVISION_URL + "resnet34-b627a593.pth",
    "resnet50": TORCHVISION_URL + "resnet50-0676ba61.pth",
    "resnet101": TORCHVISION_URL + "resnet101-63fe2227.pth",
    "resnet152": TORCHVISION_URL + "resnet152-394f9c45.pth",
    "resnext50_32x4d": TORCHVISION_URL + "resnext50_32x4d-7cdf4587.pth",
    "resnext101_32x8d": TORCHVISION_URL + "resnext101_32x8d-8ba56ff5.pth",
    "wide_resnet50_2": TORCHVISION_URL + "wide_resnet50_2-95faca4d.pth",
    "wide_resnet101_2": TORCHVISION_URL + "wide_resnet101_2-32ee1156.pth",
    "drn_c_26": DRN_URL + "drn_c_26-ddedf421.pth",
    "drn_c_42": DRN_URL + "drn_c_42-9d336e8c.pth",
    "drn_c_58": DRN_URL + "drn_c_58-0a53a92c.pth",
    "drn_d_22": DRN_URL + "drn_d_22-4bd2f8ea.pth",
    "drn_d_38": DRN_URL + "drn_d_38-eebb45f0.pth",
    "drn_d_54": DRN_URL + "drn_d_54-0e0534ff.pth",
    "drn_d_105": DRN_URL + "drn_d_105-12b40979.pth",
    "resnet18d": TIMM_URL + "v0.1-weights/resnet18d_ra2-48a79e06.pth",
    "resnet26d": TIMM_URL + "v0.1-weights/resnet26d-69e92c46.pth",
    "resnet34d": TIMM_URL + "v0.1-weights/resnet34d_ra2-f8dcfcaf.pth",
    "resnet50d": TIMM_URL + "v0.1-weights/resnet50d_ra2-464e36ba.pth",
    "resnet101d": TIMM_URL + "v0.1-weights/resnet101d_ra2-2803ffab.pth",
    "resnet152d": TIMM_URL + "v0.1-weights/resnet152d_ra2-5cac0439.pth",
    "seresnet50": TIMM_URL + "v0.1-weights/seresnet50_ra_224-8efdb4bb.pth",
    "ecaresnet50d": TIMM_URL + "v0.1-tresnet/ecaresnet50d-93c81e3b.pth",
    "ecaresnet101d": TIMM_URL + "v0.1-tresnet/ecaresnet101d-153dad65.pth",
}
# Registered timm topologies that timm publishes no ImageNet weights for.
UNTRAINED_IN_TIMM = ("seresnet18", "seresnet34", "seresnet101", "seresnet152")

# Public ImageNet weights, by registered name: "keras" or "torch".
IMAGENET_SOURCES = {**{n: "keras" for n in KERAS_APPLICATIONS},
                    **{n: "torch" for n in TORCH_CHECKPOINTS}}

# Classifier layers: Keras layer name -> torch module name.
HEADS = {"predictions": "fc", "seg": "seg", "up": "up"}

_NEEDS_TORCH = ("reading a PyTorch checkpoint needs torch: pip install torch "
                "(or pip install 'resnet-keras[torch]'), or convert the checkpoint "
                "to .npz (numpy.savez(path, **state_dict)) and pass that")


# ---------------------------------------------------------------------------
# Argument checking and dispatch
# ---------------------------------------------------------------------------

def check_weights_arg(weights, model_name, include_top, classes):
    """Validate ``weights`` before a model is built (ValueError, one line)."""
    if weights is None:
        return
    if isinstance(weights, str) and weights == "imagenet":
        source = IMAGENET_SOURCES.get(model_name)
        if source is None:
            raise _no_imagenet(model_name)
        if include_top and classes != 1000:
            raise ValueError(
                f"weights='imagenet' with include_top=True needs classes=1000, got {classes}")
        if source == "torch" and not torch_available():
            raise ValueError(f"weights='imagenet' for {model_name}: {_NEEDS_TORCH}")
        return
    if isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights):
        path = os.fspath(weights)
        if not path.endswith(WEIGHT_SUFFIXES):
            raise ValueError(
                f"weights={path!r}: unsupported file type; expected one of "
                f"{', '.join(WEIGHT_SUFFIXES)}")
        if path.endswith(TORCH_SUFFIXES) and not torch_available():
            raise ValueError(f"weights={path!r}: {_NEEDS_TORCH}")
        return
    raise ValueError(
        f"weights={weights!r} for {model_name}: expected None, 'imagenet' or the "
        "path of an existing weights file")


def load_weights(model, weights, model_name):
    """Load ``weights`` (checked by :func:`check_weights_arg`) into ``model``."""
    if isinstance(weights, str) and weights == "imagenet":
        path = fetch_imagenet(model_name, include_top=_has_layer(model, "predictions"))
    else:
        path = os.fspath(weights)
    if path.endswith(TORCH_SUFFIXES + NUMPY_SUFFIXES):
        state_dict = read_state_dict(path)
        try:
            return load_torch_state_dict(model, state_dict)
        except ValueError as err:
            raise ValueError(f"weights file {path!r}: {err}") from None
    if path.endswith((".h5", ".hdf5")) and not path.endswith(".weights.h5"):
        return load_legacy_h5(model, path)
    return _load_keras_native(model, path, model_name)


def torch_available():
    """Whether ``torch`` can be imported (needed only for ``.pth`` files)."""
    return importlib.util.find_spec("torch") is not None


def _has_layer(model, name):
    return any(layer.name == name for layer in model.layers)


# ---------------------------------------------------------------------------
# Public ImageNet files
# ---------------------------------------------------------------------------

def imagenet_file(model_name, include_top=True):
    """``(file name, URL, hash)`` of the ImageNet weights of ``model_name``.

    The hash is keras.applications' md5 for its files, the sha256 prefix
    in the file name for PyTorch checkpoints.
    """
    if model_name in KERAS_APPLICATIONS:
        keras_name = KERAS_APPLICATIONS[model_name]
        suffix = "" if include_top else "_notop"
        fname = f"{keras_name}_weights_tf_dim_ordering_tf_kernels{suffix}.h5"
        return fname, KERAS_WEIGHTS_URL + fname, KERAS_WEIGHTS_HASHES[keras_name][
            0 if include_top else 1]
    if model_name in TORCH_CHECKPOINTS:
        url = TORCH_CHECKPOINTS[model_name]
        fname = url.rsplit("/", 1)[1]
        return fname, url, fname.rsplit("-", 1)[1].split(".")[0]
    raise _no_imagenet(model_name)


def _no_imagenet(model_name):
    why = " (timm publishes none for it)" if model_name in UNTRAINED_IN_TIMM else ""
    return ValueError(f"weights='imagenet' is not available for {model_name}{why}; models "
                      f"with ImageNet weights: {', '.join(sorted(IMAGENET_SOURCES))}. "
                      "Pass None or a local weights file")


def fetch_imagenet(model_name, include_top=True):
    """Local path of the ImageNet weights (downloaded once to ~/.keras/models)."""
    import keras

    fname, url, file_hash = imagenet_file(model_name, include_top)
    if model_name in KERAS_APPLICATIONS:
        return keras.utils.get_file(fname, url, cache_subdir="models", file_hash=file_hash)
    path = keras.utils.get_file(fname, url, cache_subdir="models")
    digest = _sha256(path)
    if not digest.startswith(file_hash):
        raise ValueError(f"{path} has sha256 {digest[:12]}..., expected {file_hash}...: "
                         "delete the file to download it again")
    return path


def _sha256(path):
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            sha.update(chunk)
    return sha.hexdigest()


# ---------------------------------------------------------------------------
# Keras files
# ---------------------------------------------------------------------------

def _load_keras_native(model, path, model_name):
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
                _check_finite(variable.path, np.asarray(variable.numpy()))
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

    dtype = _numpy_dtype(dtype)
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
        _check_finite(label, array)
        if array.dtype.kind == "f" and dtype.kind in "fV":
            with np.errstate(over="ignore", invalid="ignore"):
                _check_finite(label, array.astype(dtype), f" after conversion to {dtype}")
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
    (see the module docstring); nothing is assigned otherwise.
    """
    saved = read_legacy_h5(path)
    pairs, missing, misshaped, unusable = [], [], [], []
    for layer in model.layers:
        variables = layer.trainable_weights + layer.non_trainable_weights
        if not variables:
            continue
        if layer.name not in saved:
            if layer.name not in HEADS:
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
    unexpected = [n for n in saved if n not in present and n not in HEADS]
    _raise_if_mismatched(f"weights file {path!r}", model.name, "layers",
                         missing, unexpected, misshaped)
    _raise_if_unusable(f"weights file {path!r}", model.name, unusable)
    _assign(pairs)
    return model


# ---------------------------------------------------------------------------
# Checking values before anything is assigned
# ---------------------------------------------------------------------------

_KINDS = {"b": "booleans", "c": "complex numbers", "M": "dates", "m": "time spans",
          "O": "Python objects", "S": "bytes", "U": "text", "V": "raw records"}
# Low-precision floats (ml_dtypes) that numpy stores as records: read as float32.
_LOW_PRECISION_FLOATS = ("bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2",
                         "float8_e5m2fnuz", "float8_e4m3b11fnuz")


def real_array(label, value):
    """VALUE (numpy array or torch tensor) as a numpy array of real numbers.

    Floats and integers pass; bfloat16/float8 become float32. Anything else
    (bool, text, bytes, object, complex, date/time, records) raises a
    one-line ValueError naming LABEL and the dtype.
    """
    try:
        array = _to_numpy(value)
    except Exception as err:  # e.g. a sparse or quantized tensor
        raise ValueError(f"{label} cannot be read as an array "
                         f"({errors.first_line(err)})") from None
    if array.dtype.kind in "fiu":
        return array
    if array.dtype.name in _LOW_PRECISION_FLOATS:
        return array.astype(np.float32)
    raise ValueError(f"{label} has dtype {array.dtype} "
                     f"({_KINDS.get(array.dtype.kind, 'not numbers')}); expected real "
                     "numbers (float or integer)")


def cast_for(label, array, variable):
    """ARRAY (from :func:`real_array`) in VARIABLE's dtype and shape, finite.

    ValueError naming LABEL for a shape other than the variable's, or a nan
    or inf in the array or produced by the conversion (float64 overflowing
    float32).
    """
    if tuple(array.shape) != tuple(variable.shape):
        raise ValueError(f"{label} has shape {tuple(array.shape)}, expected "
                         f"{tuple(variable.shape)}")
    _check_finite(label, array)
    dtype = _numpy_dtype(variable.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        converted = np.asarray(array, dtype=dtype)
    _check_finite(label, converted, f" after conversion to {dtype}")
    return converted


def _numpy_dtype(dtype):
    import keras

    name = keras.backend.standardize_dtype(dtype)
    try:
        return np.dtype(name)
    except TypeError:  # bfloat16 and other ml_dtypes names
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, name))


def _check_finite(label, array, where=""):
    if array.dtype.kind not in "fc" and array.dtype.name not in _LOW_PRECISION_FLOATS:
        return
    finite = np.isfinite(array.astype(np.float32) if array.dtype.kind == "V" else array)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        raise ValueError(f"{label} has {bad} non-finite value{'s' if bad > 1 else ''} "
                         f"(nan or inf){where}")


def _raise_if_unusable(source, model_name, unusable):
    if unusable:
        more = f" (and {len(unusable) - 1} more)" if len(unusable) > 1 else ""
        raise ValueError(f"{source} cannot be loaded into {model_name}: {unusable[0]}{more}; "
                         "nothing was loaded")


def _assign(pairs):
    """Assign checked values; should an assignment still fail, undo the others."""
    backup = [(variable, variable.numpy()) for variable, _ in pairs]
    try:
        for variable, value in pairs:
            variable.assign(value)
    except Exception:
        for variable, value in backup:
            variable.assign(value)
        raise


def _listing(label, items, limit=6):
    if not items:
        return None
    shown = ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)"
                                       if len(items) > limit else "")
    return f"{len(items)} {label} ({shown})"


def _raise_if_mismatched(source, model_name, what, missing, unexpected, misshaped,
                         hint=""):
    parts = [_listing(f"missing {what}", missing),
             _listing(f"unexpected {what}", unexpected),
             _listing("mis-shaped", misshaped)]
    parts = [p for p in parts if p]
    if parts:
        raise ValueError(f"{source} does not fit {model_name}: {'; '.join(parts)}"
                         f"{hint}; nothing was loaded")


# ---------------------------------------------------------------------------
# PyTorch state dicts
# ---------------------------------------------------------------------------

def read_state_dict(path):
    """``{name: numpy array}`` from a ``.pth``/``.pt``/``.pth.tar`` or ``.npz`` file.

    PyTorch files are read with ``torch.load(path, map_location="cpu",
    weights_only=True)`` (no arbitrary code is unpickled). A training
    checkpoint holding ``"state_dict"`` (or ``"model"``) is unwrapped.
    """
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
        raise ValueError(f"weights file {path!r}: {_NEEDS_TORCH}")
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
                out[key] = _to_numpy(value)
            except Exception as err:  # sparse, quantized or meta tensors
                raise ValueError(f"weights file {path!r}: tensor {key!r} cannot be read as "
                                 f"an array ({errors.first_line(err)}); nothing was "
                                 "loaded") from None
    return out


def _to_numpy(value):
    """A numpy array from a numpy array or a torch tensor (bf16/fp16 -> fp32;
    float64 stays float64, so that an overflow of float32 is seen when it is
    converted to the variable's dtype)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if value.is_floating_point() and value.element_size() < 8:
            value = value.float()
        return value.numpy()
    return np.asarray(value)


_ATTENTION_LEAVES = {"se_reduce": "se.fc1", "se_expand": "se.fc2", "eca_conv": "se.conv"}


def _stage_module(name, drn_d, avg_down=False):
    """Torch module path of a trunk layer, e.g. conv3_block2_1_bn -> layer2.1.bn1.

    ``avg_down``: the shortcut is timm's ``downsample = (pool, conv, bn)``,
    so its conv and BN are ``downsample.1`` / ``downsample.2``.
    """
    if name in ("conv1_conv", "conv1_bn"):
        index = int(name.endswith("_bn"))
        return f"layer0.{index}" if drn_d else ("conv1", "bn1")[index]
    m = re.fullmatch(r"conv1_(\d)_(conv|bn)", name)  # timm's deep stem
    if m:
        conv, kind = m.groups()
        return f"conv1.{3 * (int(conv) - 1) + int(kind == 'bn')}"
    m = re.fullmatch(r"(conv|level)(\d+)_block(\d+)_(\d)_(conv|bn)", name)
    if m:
        prefix, stage, block, conv, kind = m.groups()
        stage = int(stage) - (1 if prefix == "conv" else 0)
        inner = (f"downsample.{int(kind == 'bn') + int(avg_down)}" if conv == "0"
                 else f"{kind}{conv}")
        return f"layer{stage}.{int(block) - 1}.{inner}"
    m = re.fullmatch(r"(conv|level)(\d+)_block(\d+)_(se_reduce|se_expand|eca_conv)", name)
    if m:
        prefix, stage, block, leaf = m.groups()
        stage = int(stage) - (1 if prefix == "conv" else 0)
        return f"layer{stage}.{int(block) - 1}.{_ATTENTION_LEAVES[leaf]}"
    m = re.fullmatch(r"level(\d+)_conv(\d+)_(conv|bn)", name)
    if m:
        level, conv, kind = m.groups()
        return f"layer{level}.{3 * (int(conv) - 1) + int(kind == 'bn')}"
    return None


def _layout(model, base):
    """``(drn_d, avg_down, children)``: DRN-D puts the stem in ``layer0``;
    ``avg_down``: the shortcuts average-pool (ResNet-D, a ``_0_pool`` layer);
    ``children`` lists fyu/drn's ``base`` modules (the classification net's
    children in order, pooling and classifier left out) when ``base``, else
    None."""
    names = [layer.name for layer in model.layers]
    drn_d = any(re.fullmatch(r"level\d+_conv\d+_conv", n) for n in names)
    avg_down = any(re.fullmatch(r"(conv|level)\d+_block\d+_0_pool", n) for n in names)
    if not base:
        return drn_d, avg_down, None
    modules = {_stage_module(n, drn_d, avg_down) for n in names} - {None}
    stages = sorted({m.split(".")[0] for m in modules if re.match(r"layer[1-9]", m)},
                    key=lambda top: int(top[5:]))
    stem = ["layer0"] if drn_d else (
        ["conv1", "bn1", "relu"] + (["maxpool"] if "pool1_pool" in names else []))
    return drn_d, avg_down, stem + stages


def _torch_module(name, layout):
    """Torch module path of the Keras layer ``name`` (None if it has none)."""
    drn_d, avg_down, children = layout
    if name in HEADS:
        return HEADS[name]
    module = _stage_module(name, drn_d, avg_down)
    if module is None or children is None:
        return module
    top, _, rest = module.partition(".")
    return f"base.{children.index(top)}" + (f".{rest}" if rest else "")


def _ignored_prefixes(model, layout):
    """Torch key prefixes the model has no use for: classifiers it lacks, and
    the projection fyu/drn builds for a DRN-C degridding level (no residual
    addition) but never uses."""
    names = {layer.name for layer in model.layers}
    prefixes = [f"{torch}." for keras_name, torch in HEADS.items() if keras_name not in names]
    for name in names:
        m = re.fullmatch(r"(level\d+_block\d+)_1_conv", name)
        if m and f"{m.group(1)}_add" not in names:
            dead = _torch_module(f"{m.group(1)}_0_conv", layout)
            prefixes.append(dead[:-1])  # "...downsample."
    return tuple(prefixes)


def _param_specs(layer):
    """``[(variable, torch leaf, torch shapes accepted, to_keras)]`` for one layer."""
    from keras import layers as keras_layers

    from resnet_keras.segmentation import DepthwiseConvTranspose2D

    def conv(a):
        return np.transpose(a, (2, 3, 1, 0))

    if isinstance(layer, keras_layers.BatchNormalization):
        return [(v, leaf, [tuple(v.shape)], np.asarray) for v, leaf in (
            (layer.gamma, "weight"), (layer.beta, "bias"),
            (layer.moving_mean, "running_mean"), (layer.moving_variance, "running_var"))
            if v is not None]
    if isinstance(layer, keras_layers.Dense):
        n_in, n_out = layer.kernel.shape
        specs = [(layer.kernel, "weight", [(n_out, n_in), (n_out, n_in, 1, 1)],
                  lambda a: a.reshape(a.shape[0], -1).T)]
    elif isinstance(layer, DepthwiseConvTranspose2D):
        kh, kw, c, _ = layer.kernel.shape
        return [(layer.kernel, "weight", [(c, 1, kh, kw)],
                 lambda a: np.transpose(a, (2, 3, 0, 1)))]
    elif isinstance(layer, keras_layers.Conv2D):
        kh, kw, c_in, c_out = layer.kernel.shape
        specs = [(layer.kernel, "weight", [(c_out, c_in, kh, kw)], conv)]
    elif isinstance(layer, keras_layers.Conv1D):  # ECA's channel conv
        k, c_in, c_out = layer.kernel.shape
        specs = [(layer.kernel, "weight", [(c_out, c_in, k)],
                  lambda a: np.transpose(a, (2, 1, 0)))]
    else:
        raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) has no "
                         "PyTorch counterpart")
    if layer.bias is not None:
        specs.append((layer.bias, "bias", [tuple(layer.bias.shape)], np.asarray))
    return specs


def torch_key_map(model, base=False):
    """``{torch key: (variable, torch shapes accepted, to_keras)}`` for ``model``.

    Derived from the layer names: ``conv{s}_block{b}_{i}_{conv|bn}`` ->
    ``layer{s-1}.{b-1}.{conv|bn}{i}`` (``i = 0``: ``downsample.0/1``);
    DRN ``level{l}_block{b}_...`` -> ``layer{l}.{b-1}...``; DRN-D plain
    levels ``level{l}_conv{c}_{conv|bn}`` -> ``layer{l}.{3(c-1)}`` /
    ``.{3(c-1)+1}``; the stem ``conv1_conv``/``conv1_bn`` -> ``conv1``/``bn1``
    (DRN-D: ``layer0.0``/``layer0.1``); ``predictions`` -> ``fc``; ``seg`` and
    ``up`` keep their names. timm's refinements: the deep stem
    ``conv1_{i}_{conv|bn}`` -> ``conv1.{3(i-1)}`` / ``conv1.{3(i-1)+1}`` (its
    last BN is ``conv1_bn`` -> ``bn1``); with average-pool shortcuts
    ``_0_conv``/``_0_bn`` -> ``downsample.1``/``.2``; attention
    ``_se_reduce``/``_se_expand``/``_eca_conv`` -> ``se.fc1``/``se.fc2``/``se.conv``.
    With ``base=True`` trunk keys take fyu/drn's
    segmentation form ``base.{index of the module among the classification
    net's children}...``.
    """
    layout = _layout(model, base)
    key_map = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        module = _torch_module(layer.name, layout)
        if module is None:
            raise ValueError(f"layer {layer.name!r} of {model.name} has no PyTorch "
                             "counterpart (torchvision, timm and fyu/drn layouts only)")
        for variable, leaf, shapes, to_keras in _param_specs(layer):
            key_map[f"{module}.{leaf}"] = (variable, shapes, to_keras)
    return key_map


def _strip_prefix(state_dict, prefix="module."):
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def load_torch_state_dict(model, state_dict):
    """Load a PyTorch state dict (torchvision / fyu/drn names) into ``model``.

    Args:
        model: a zoo model, backbone or segmentation model.
        state_dict: mapping from PyTorch parameter names to numpy arrays (or
            torch tensors). A ``module.`` prefix (DataParallel) is removed;
            ``num_batches_tracked`` and the unused DRN-C degridding
            projection are ignored. Keys ``base.N...`` (fyu/drn DRNSeg) map
            the trunk by the classification net's child index.

    Conversions: conv OIHW -> HWIO; Linear (out, in) or fyu/drn's 1x1 conv
    classifier (out, in, 1, 1) -> Dense (in, out); BN weight, bias,
    running_mean, running_var -> gamma, beta, moving_mean, moving_variance;
    the grouped transposed conv ``up`` (C, 1, k, k) -> (k, k, C, 1).

    The classifier (``fc``; ``seg``, ``up``) is optional: absent, that layer
    keeps its weights; present for a layer the model lacks, it is ignored.

    Returns:
        ``model``, with every weight assigned.

    Raises:
        ValueError: one message listing the missing, unexpected and
            mis-shaped keys, or naming an array that is not finite real
            numbers (with its dtype); the model is unchanged.
    """
    state_dict = _strip_prefix({str(k): v for k, v in state_dict.items()})
    base = any(k.startswith("base.") for k in state_dict)
    key_map = torch_key_map(model, base=base)
    ignored = _ignored_prefixes(model, _layout(model, base))
    unexpected = [k for k in state_dict if k not in key_map
                  and not k.endswith("num_batches_tracked") and not k.startswith(ignored)]
    pairs, misshaped, unusable = _convert(key_map, state_dict)
    hint = _CLASSES_HINT if any(_head_of(k) for k in misshaped) else ""
    _raise_if_mismatched("state dict", model.name, "keys", _missing(key_map, state_dict),
                         unexpected, [f"{k} {got} for {want}" for k, (got, want) in
                                      misshaped.items()], hint)
    _raise_if_unusable("state dict", model.name, unusable)
    _assign(pairs)
    return model


_CLASSES_HINT = (" (a classifier for another number of classes: build the model with "
                 "the checkpoint's classes, or drop its classifier keys to keep the "
                 "model's own)")


def _head_of(key):
    """The classifier module (fc, seg, up) a torch key belongs to, or None."""
    top = key.split(".", 1)[0]
    return top if top in HEADS.values() else None


def _missing(key_map, state_dict):
    """Keys the model needs; a classifier with none of its keys given is optional."""
    given_heads = {_head_of(k) for k in state_dict} - {None}
    return [k for k in key_map if k not in state_dict
            and (_head_of(k) is None or _head_of(k) in given_heads)]


def _convert(key_map, state_dict):
    """``([(variable, checked Keras value)], {key: (torch shape, expected shape)},
    [unusable array messages])``."""
    pairs, misshaped, unusable = [], {}, []
    for key, (variable, shapes, to_keras) in key_map.items():
        if key not in state_dict:
            continue
        shape = tuple(getattr(state_dict[key], "shape", np.shape(state_dict[key])))
        if shape not in shapes:
            misshaped[key] = (shape, shapes[0])
            continue
        try:
            value = real_array(key, state_dict[key])
            pairs.append((variable, cast_for(key, to_keras(value), variable)))
        except ValueError as err:
            unusable.append(str(err))
    return pairs, misshaped, unusable
