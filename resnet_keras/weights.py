"""Loading weights into zoo models: local Keras files and known public sources."""
import os

KERAS_SUFFIXES = (".weights.h5", ".keras", ".h5")

# Public ImageNet weights, by registered name: filled by the loaders below.
IMAGENET_SOURCES = {}


def check_weights_arg(weights, model_name, include_top, classes):
    """Validate ``weights`` before a model is built (ValueError, one line)."""
    if weights is None:
        return
    if isinstance(weights, str) and weights == "imagenet":
        if model_name not in IMAGENET_SOURCES:
            known = ", ".join(sorted(IMAGENET_SOURCES)) or "none"
            raise ValueError(
                f"weights='imagenet' is not available for {model_name}; models with "
                f"ImageNet weights: {known}. Pass None or a local weights file")
        if include_top and classes != 1000:
            raise ValueError(
                f"weights='imagenet' with include_top=True needs classes=1000, got {classes}")
        return
    if isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights):
        path = os.fspath(weights)
        if not path.endswith(KERAS_SUFFIXES):
            raise ValueError(
                f"weights={path!r}: unsupported file type; expected one of "
                f"{', '.join(KERAS_SUFFIXES)}")
        return
    raise ValueError(
        f"weights={weights!r} for {model_name}: expected None, 'imagenet' or the "
        "path of an existing weights file")


def load_weights(model, weights, model_name):
    """Load ``weights`` (checked by :func:`check_weights_arg`) into ``model``."""
    path = os.fspath(weights)
    try:
        model.load_weights(path)
    except (ValueError, OSError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"weights file {path!r} does not fit {model_name}: {first}") from None
    return model
