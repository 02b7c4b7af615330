"""TensorFlow import for the package: a clear error when it is missing, and
its load-time C++ log lines kept off stderr.

TensorFlow's native libraries print INFO lines (oneDNN, CPU features) while
loading, before any log level applies. They are held back here so that the
command line's errors stay one line; set RESNET_KERAS_VERBOSE=1 to see them.
"""
import os
import sys

MISSING = ("resnet_keras needs TensorFlow: pip install 'resnet-keras[cpu]' "
           "(CPU only) or 'resnet-keras[gpu]'")


def import_tensorflow():
    """Import tensorflow and keras once, quietly."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ.get("RESNET_KERAS_VERBOSE") or "tensorflow" in sys.modules:
        return _import()
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        return _import()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _import():
    try:
        import keras  # noqa: F401  (imported for its side effect)
        import tensorflow  # noqa: F401
    except ModuleNotFoundError as err:
        if err.name == "tensorflow":
            raise ImportError(MISSING) from err
        raise
