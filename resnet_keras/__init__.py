"""resnet_keras: exact ResNet and Dilated Residual Network builders for Keras 3.

    import resnet_keras
    resnet_keras.list_models()
    model = resnet_keras.resnet50()
    model = resnet_keras.build_model("drn_c_26", classes=10, input_shape=(32, 32, 3))
"""
from resnet_keras.models import build_backbone, build_model, count_macs
from resnet_keras.specs import SPECS, ModelSpec, get_spec, list_models

__version__ = "0.1.0"


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

__all__ = ["ModelSpec", "SPECS", "build_backbone", "build_model", "count_macs",
           "get_spec", "list_models", *SPECS]
del _name
