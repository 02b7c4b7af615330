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
  numpy archive of name -> array; no torch needed) or ``.safetensors``
  (timm's and the Hugging Face Hub's files; needs ``safetensors``, not
  torch), with torchvision, timm or fyu/drn parameter names, mapped by
  :func:`load_torch_state_dict`.

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

This module is the public face: the known sources and ``weights=``. Behind
it, :mod:`resnet_keras.weight_files` reads the files,
:mod:`resnet_keras.torch_keys` maps PyTorch parameter names to the Keras
layers and :mod:`resnet_keras.weight_checks` checks every value first.
"""
import hashlib
import os

from resnet_keras import pretrained, weight_files
from resnet_keras.conventions import CONVENTIONS
from resnet_keras.pretrained import PRETRAINED
from resnet_keras.weight_files import (KERAS_SUFFIXES, NUMPY_SUFFIXES, SAFETENSORS_SUFFIXES,
                                      STATE_DICT_SUFFIXES, TORCH_SUFFIXES, WEIGHT_SUFFIXES,
                                      check_keras_file, load_keras_native, load_legacy_h5,
                                      read_legacy_h5, read_state_dict, torch_available)
from resnet_keras.torch_keys import HEADS, load_torch_state_dict, torch_key_map
from resnet_keras.weight_checks import cast_for, real_array

__all__ = [
    "HEADS", "IMAGENET_SOURCES", "KERAS_APPLICATIONS", "KERAS_SUFFIXES",
    "KERAS_WEIGHTS_HASHES", "KERAS_WEIGHTS_URL", "NUMPY_SUFFIXES", "PRETRAINED",
    "SAFETENSORS_SUFFIXES", "STATE_DICT_SUFFIXES", "TORCH_CHECKPOINTS", "TORCH_SUFFIXES",
    "UNTRAINED_IN_TIMM", "WEIGHT_SUFFIXES", "cache_path", "cast_for", "check_keras_file",
    "check_weights_arg", "fetch_imagenet", "imagenet_file", "load_legacy_h5",
    "load_torch_state_dict", "load_weights", "read_legacy_h5", "read_state_dict",
    "real_array", "torch_available", "torch_key_map", "weights_convention"]

# The public files, from the metadata registry (resnet_keras.pretrained).
KERAS_WEIGHTS_URL = pretrained.KERAS_URL
UNTRAINED_IN_TIMM = pretrained.UNTRAINED_IN_TIMM
# Registered name -> keras.applications weights name, and that name's md5
# hashes (with top, without top).
KERAS_APPLICATIONS = {name: row.file_name.split("_weights_")[0]
                      for name, row in PRETRAINED.items() if row.file_format == "keras"}
KERAS_WEIGHTS_HASHES = {KERAS_APPLICATIONS[name]: (row.file_hash, row.notop[1])
                        for name, row in PRETRAINED.items() if row.file_format == "keras"}
# PyTorch checkpoints (torchvision, fyu/drn, timm): registered name -> URL.
TORCH_CHECKPOINTS = {name: row.url for name, row in PRETRAINED.items()
                     if row.file_format == "torch"}
# Public ImageNet weights, by registered name: "keras" or "torch".
IMAGENET_SOURCES = {name: row.file_format for name, row in PRETRAINED.items()}


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
        if source == "torch" and not weight_files.torch_available():
            raise ValueError(f"weights='imagenet' for {model_name}: {weight_files.NEEDS_TORCH}")
        return
    if isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights):
        path = os.fspath(weights)
        if not path.endswith(WEIGHT_SUFFIXES):
            raise ValueError(
                f"weights={path!r}: unsupported file type; expected one of "
                f"{', '.join(WEIGHT_SUFFIXES)}")
        if path.endswith(TORCH_SUFFIXES) and not weight_files.torch_available():
            raise ValueError(f"weights={path!r}: {weight_files.NEEDS_TORCH}")
        if path.endswith(SAFETENSORS_SUFFIXES):
            weight_files.require_safetensors(path)
        return
    raise ValueError(
        f"weights={weights!r} for {model_name}: expected None, 'imagenet' or the "
        "path of an existing weights file")


def weights_convention(weights, model_name):
    """The input convention (see :mod:`resnet_keras.conventions`) that WEIGHTS
    (checked by :func:`check_weights_arg`) expect; None for ``weights=None``.

    ``"imagenet"``: the source's (:data:`resnet_keras.pretrained.PRETRAINED`).
    A file with a ``run_config.json`` beside it (a model dir of
    ``resnet-keras train``): the convention that run recorded. A PyTorch or
    numpy state dict (torchvision, timm, fyu/drn): ``"torch"``. A Keras file
    for one of the keras.applications topologies (``resnet50_v1``..,
    ``resnet50v2``..): keras.applications' convention for it (``"caffe"``,
    ``"tf"``), since those are the public Keras files of these networks; any
    other Keras file: ``"torch"``. Pass ``preprocessing=`` to the builder
    where a file was trained otherwise.
    """
    if weights is None:
        return None
    if isinstance(weights, str) and weights == "imagenet":
        return PRETRAINED[model_name].convention
    path = os.fspath(weights)
    recorded = _recorded_convention(os.path.join(os.path.dirname(os.path.abspath(path)),
                                                 "run_config.json"))
    if recorded is not None:
        return recorded
    if path.endswith(STATE_DICT_SUFFIXES):
        return "torch"
    if model_name in KERAS_APPLICATIONS:
        return PRETRAINED[model_name].convention
    return "torch"


def _recorded_convention(config_path):
    """The ``preprocessing`` a run_config.json at CONFIG_PATH records (runs
    recorded before it was written all used ``"torch"``), or None."""
    import json

    try:
        with open(config_path, encoding="utf-8") as f:
            value = json.load(f).get("preprocessing", "torch")
    except (OSError, ValueError, AttributeError):
        return None
    return value if value in CONVENTIONS else None


def load_weights(model, weights, model_name):
    """Load ``weights`` (checked by :func:`check_weights_arg`) into ``model``."""
    if isinstance(weights, str) and weights == "imagenet":
        path = fetch_imagenet(model_name, include_top=_has_layer(model, "predictions"))
    else:
        path = os.fspath(weights)
    if path.endswith(STATE_DICT_SUFFIXES):
        state_dict = read_state_dict(path)
        try:
            return load_torch_state_dict(model, state_dict)
        except ValueError as err:
            raise ValueError(f"weights file {path!r}: {err}") from None
    if path.endswith((".h5", ".hdf5")) and not path.endswith(".weights.h5"):
        return load_legacy_h5(model, path)
    return load_keras_native(model, path, model_name)


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
    row = PRETRAINED.get(model_name)
    if row is None:
        raise _no_imagenet(model_name)
    if row.notop is not None and not include_top:
        fname, file_hash = row.notop
        return fname, row.url.rsplit("/", 1)[0] + "/" + fname, file_hash
    return row.file_name, row.url, row.file_hash


def _no_imagenet(model_name):
    why = " (timm publishes none for it)" if model_name in UNTRAINED_IN_TIMM else ""
    return ValueError(f"weights='imagenet' is not available for {model_name}{why}; models "
                      f"with ImageNet weights: {', '.join(sorted(IMAGENET_SOURCES))}. "
                      "Pass None or a local weights file")


def cache_path(file_name):
    """Where :func:`fetch_imagenet` keeps FILE_NAME: ``$KERAS_HOME/models/`` (default
    ``~/.keras/models/``), keras.applications' cache."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "models", file_name)


def fetch_imagenet(model_name, include_top=True):
    """Local path of the ImageNet weights (downloaded once to :func:`cache_path`).

    A file already in the cache is used as it is (after its hash check), so
    on a machine without a network, place the file there. A failed download
    raises one ValueError saying which file to put where.
    """
    import keras

    fname, url, file_hash = imagenet_file(model_name, include_top)
    keras_file = PRETRAINED[model_name].file_format == "keras"
    try:
        path = keras.utils.get_file(fname, url, cache_subdir="models",
                                    file_hash=file_hash if keras_file else None)
    except Exception as err:  # network errors come as many types
        algorithm = "md5" if keras_file else "sha256 starting"
        raise ValueError(
            f"could not download the ImageNet weights of {model_name} from {url} "
            f"({type(err).__name__}); download that file elsewhere and place it at "
            f"{cache_path(fname)} ({algorithm} {file_hash}), then run again") from None
    if keras_file:
        return path
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
