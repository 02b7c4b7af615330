"""resnet_keras: exact ResNet and Dilated Residual Network builders for Keras 3.

    import resnet_keras
    resnet_keras.list_models()
    model = resnet_keras.resnet50()
    model = resnet_keras.build_model("drn_c_26", classes=10, input_shape=(32, 32, 3))

Attributes that need TensorFlow (the builders) load on first use, so the
command line starts fast and ``list_models()`` works without building
anything.
"""
import importlib

from resnet_keras.specs import SPECS, ModelSpec, get_spec, list_models

__version__ = "0.1.0"

# Public name -> module that defines it (imported on first access).
_LAZY = {
    "build_model": "models",
    "build_backbone": "models",
    "count_macs": "models",
    "build_segmentation_model": "segmentation",
}

__all__ = ["ModelSpec", "SPECS", "get_spec", "list_models", *_LAZY, *SPECS]


def _import(module):
    try:
        return importlib.import_module(f"resnet_keras.{module}")
    except ModuleNotFoundError as err:
        if err.name == "tensorflow":
            raise ImportError(
                "resnet_keras needs TensorFlow: pip install 'resnet-keras[cpu]' "
                "(CPU only) or 'resnet-keras[gpu]'") from err
        raise


def _model_function(model_name):
    def model_fn(**kwargs):
        return _import("models").build_model(model_name, **kwargs)

    model_fn.__name__ = model_fn.__qualname__ = model_name
    model_fn.__module__ = __name__
    model_fn.__doc__ = (
        f"{SPECS[model_name].description}.\n\n"
        f"Same as ``build_model({model_name!r}, **kwargs)``; see build_model for "
        "the arguments.")
    return model_fn


def __getattr__(name):
    if name in _LAZY:
        value = getattr(_import(_LAZY[name]), name)
    elif name in SPECS:
        value = _model_function(name)
    else:
        raise AttributeError(f"module 'resnet_keras' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
