"""Backend import for the package: a clear error when TensorFlow is missing,
and its load-time C++ log lines kept off stderr.

The model builders (``build_model``, ``count_macs``, the specs) are plain
Keras 3 and also run on the JAX or PyTorch backend (``KERAS_BACKEND=jax``),
where TensorFlow is not needed. Training, data, export and tuning use
``tf.distribute``, ``tf.data`` and SavedModel, so they need TensorFlow.

TensorFlow's native libraries print INFO lines (oneDNN, CPU features) while
loading, before any log level applies. They are held back here so that the
command line's errors stay one line; set RESNET_KERAS_VERBOSE=1 to see them.

TensorFlow reads ``TF_CPP_MIN_LOG_LEVEL`` once, at its first log line, so
the level is chosen here, before the import: a value the user set is kept;
otherwise 3 (FATAL only) for the ``resnet-keras`` command line, where
messages such as ``failed call to cuInit`` on a machine without a GPU would
precede every error line, and 2 (errors and above) for the Python API.
RESNET_KERAS_VERBOSE=1 leaves TensorFlow's own default.
"""
import os
import sys

MISSING = ("resnet_keras needs TensorFlow: pip install 'resnet-keras[cpu]' "
           "(CPU only) or 'resnet-keras[gpu]'")


CLI_MODULES = ("resnet_keras", "resnet_keras.cli", "resnet_keras.__main__")


def verbose():
    """Whether RESNET_KERAS_VERBOSE asks for TensorFlow's logs and tracebacks."""
    return os.environ.get("RESNET_KERAS_VERBOSE", "") not in ("", "0")


def is_command_line():
    """Whether this process is the ``resnet-keras`` console script or
    ``python -m resnet_keras`` (decided before the package's own code runs)."""
    if sys.argv and os.path.basename(sys.argv[0]) in ("resnet-keras", "resnet-keras.exe"):
        return True
    argv, i = list(getattr(sys, "orig_argv", ())), 1
    while i < len(argv):
        arg = argv[i]
        if arg == "-m":
            return i + 1 < len(argv) and argv[i + 1] in CLI_MODULES
        if arg.startswith("-m"):
            return arg[2:] in CLI_MODULES
        if arg.startswith("-c") or not arg.startswith("-") or arg == "-":
            return False  # -c CODE, a script or stdin comes first
        i += 2 if arg in ("-W", "-X") else 1
    return False


def import_backend():
    """Import keras, and tensorflow where it is Keras' backend, once, quietly."""
    if not verbose():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3" if is_command_line() else "2")
    if verbose() or "tensorflow" in sys.modules:
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
