"""resnet_keras: exact ResNet and Dilated Residual Network builders for Keras 3.

    import resnet_keras
    resnet_keras.list_models()
    model = resnet_keras.resnet50()
    model = resnet_keras.build_model("drn_c_26", classes=10, input_shape=(32, 32, 3))

Importing the package registers its custom Keras objects, so saved
``.keras`` models load with ``keras.saving.load_model`` (``safe_mode=True``).
"""
import importlib

from resnet_keras._startup import import_backend

import_backend()

from resnet_keras.models import build_backbone, build_model, count_macs  # noqa: E402
from resnet_keras.segmentation import build_segmentation_model  # noqa: E402
from resnet_keras.specs import SPECS, ModelSpec, get_spec, list_models  # noqa: E402

__version__ = "0.1.0"

# Public names whose modules are heavy to import (keras-tuner): loaded on
# first access.
_LAZY = {"HyperResNet": "tuning"}


def _model_function(model_name):
    def model_fn(**kwargs):
        return build_model(model_name, **kwargs)

    model_fn.__name__ = model_fn.__qualname__ = model_name
    model_fn.__doc__ = (
        f"{SPECS[model_name].description}.\n\n"
        f"Same as ``build_model({model_name!r}, **kwargs)``; see build_model for "
        "the arguments.")
    return model_fn


for _name in SPECS:
    globals()[_name] = _model_function(_name)
del _name


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"resnet_keras.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'resnet_keras' has no attribute {name!r}")


__all__ = ["ModelSpec", "SPECS", "build_backbone", "build_model",
           "build_segmentation_model", "count_macs", "get_spec", "list_models",
           *_LAZY, *SPECS]
