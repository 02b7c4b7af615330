"""Backend import for the package: a clear error when TensorFlow is missing,
and its load-time C++ log lines kept off stderr.

The model builders (``build_model``, ``count_macs``, the specs) are plain
Keras 3 and also run on the JAX or PyTorch backend (``KERAS_BACKEND=jax``),
where TensorFlow is not needed. Training, data, export and tuning use
``tf.distribute``, ``tf.data`` and SavedModel, so they need TensorFlow.

TensorFlow's native libraries print INFO lines (oneDNN, CPU features) while
loading, before any log level applies. They are held back here so that the
command line's errors stay one line; set RESNET_KERAS_VERBOSE=1 to see them.
"""
import os
import sys

MISSING = ("resnet_keras needs TensorFlow: pip install 'resnet-keras[cpu]' "
           "(CPU only) or 'resnet-keras[gpu]'")


def import_backend():
    """Import keras, and tensorflow where it is Keras' backend, once, quietly."""
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
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow  # noqa: F401  (imported for its side effect)
    except ModuleNotFoundError as err:
        if err.name == "tensorflow":
            raise ImportError(MISSING) from err
        raise
