"""resnet_keras: exact ResNet and Dilated Residual Network builders for Keras 3.

    import resnet_keras
    resnet_keras.list_models()
    model = resnet_keras.resnet50()
    model = resnet_keras.build_model("drn_c_26", classes=10, input_shape=(32, 32, 3))

``import resnet_keras`` is light: the registry (``list_models``, ``SPECS``,
``get_spec``) is plain Python, and Keras (with TensorFlow, keras-tuner) loads
when a name that needs it is first used. The package's custom Keras objects
are registered as soon as Keras loads, so saved ``.keras`` models load with
``keras.saving.load_model`` (``safe_mode=True``) after ``import resnet_keras``.
"""
import importlib.util

from resnet_keras import _startup
from resnet_keras.specs import SPECS, ModelSpec, get_spec, list_models

__version__ = "0.1.0"

_startup.set_log_level()
# The custom layers register themselves with Keras when their module loads.
_startup.watch_backend_imports(after_keras=("resnet_keras.layers",))

# Public names whose modules need Keras, TensorFlow or keras-tuner: loaded on
# first access. Name -> module of the package that defines it.
_LAZY = {
    "build_backbone": "models",
    "build_model": "models",
    "count_macs": "models",
    "build_segmentation_model": "segmentation",
    "preprocess_input": "conventions",
    "HyperResNet": "tuning",
}


def _load(name):
    value = getattr(_startup.import_module(f"resnet_keras.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def _model_function(model_name):
    def model_fn(**kwargs):
        return _load("build_model")(model_name, **kwargs)

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
        return _load(name)
    if not name.startswith("__") and importlib.util.find_spec(f"resnet_keras.{name}"):
        return _startup.import_module(f"resnet_keras.{name}")  # e.g. resnet_keras.weights
    raise AttributeError(f"module 'resnet_keras' has no attribute {name!r}")


__all__ = ["ModelSpec", "SPECS", "get_spec", "list_models", *_LAZY, *SPECS]


def __dir__():
    return sorted(set(globals()) | set(__all__))
