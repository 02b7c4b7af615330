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

This module is the public face: the known sources and ``weights=``. Behind
it, :mod:`resnet_keras.weight_files` reads the files,
:mod:`resnet_keras.torch_keys` maps PyTorch parameter names to the Keras
layers and :mod:`resnet_keras.weight_checks` checks every value first.
"""
import hashlib
import os

from resnet_keras import weight_files
from resnet_keras.weight_files import (KERAS_SUFFIXES, NUMPY_SUFFIXES, TORCH_SUFFIXES,
                                      WEIGHT_SUFFIXES, check_keras_file, load_keras_native,
                                      load_legacy_h5, read_legacy_h5, read_state_dict,
                                      torch_available)
from resnet_keras.torch_keys import HEADS, load_torch_state_dict, torch_key_map
from resnet_keras.weight_checks import cast_for, real_array

__all__ = [
    "HEADS", "IMAGENET_SOURCES", "KERAS_APPLICATIONS", "KERAS_SUFFIXES",
    "KERAS_WEIGHTS_HASHES", "KERAS_WEIGHTS_URL", "NUMPY_SUFFIXES", "TORCH_CHECKPOINTS",
    "TORCH_SUFFIXES", "UNTRAINED_IN_TIMM", "WEIGHT_SUFFIXES", "cast_for", "check_keras_file",
    "check_weights_arg", "fetch_imagenet", "imagenet_file", "load_legacy_h5",
    "load_torch_state_dict", "load_weights", "read_legacy_h5", "read_state_dict",
    "real_array", "torch_available", "torch_key_map"]

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
