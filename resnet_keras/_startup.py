"""Backend loading for the package: nothing heavy at ``import resnet_keras``,
a clear error when TensorFlow is missing, and TensorFlow's load-time C++ log
lines kept off stderr.

``import resnet_keras`` loads neither Keras nor TensorFlow: the registry
(``list_models``, ``SPECS``, ``get_spec``) and ``resnet-keras list`` / ``info``
are plain Python. Keras loads when a name that needs it is first used
(``resnet_keras.resnet50()``, ``build_model``, ...), or when the user imports
it; :func:`watch_backend_imports` then registers the package's custom layers,
so saved ``.keras`` models load with ``keras.saving.load_model`` after only
``import resnet_keras``.

The model builders (``build_model``, ``count_macs``, the specs) are plain
Keras 3 and also run on the JAX or PyTorch backend (``KERAS_BACKEND=jax``),
where TensorFlow is not needed. Training, data, export and tuning use
``tf.distribute``, ``tf.data`` and SavedModel, so they need TensorFlow.

TensorFlow's native libraries print INFO lines (oneDNN, CPU features) while
loading, before any log level applies. They are held back while Keras or
TensorFlow loads after ``import resnet_keras``, so that the command line's
errors stay one line; set RESNET_KERAS_VERBOSE=1 to see them.

TensorFlow reads ``TF_CPP_MIN_LOG_LEVEL`` once, at its first log line, so
the level is chosen when the package loads, before TensorFlow does: a value
the user set is kept; otherwise 3 (FATAL only) for the ``resnet-keras``
command line, where messages such as ``failed call to cuInit`` on a machine
without a GPU would precede every error line, and 2 (errors and above) for
the Python API. RESNET_KERAS_VERBOSE=1 leaves TensorFlow's own default.
"""
import contextlib
import importlib
import importlib.abc
import os
import sys

MISSING = ("resnet_keras needs TensorFlow: pip install 'resnet-keras[cpu]' "
           "(CPU only) or 'resnet-keras[gpu]'")


CLI_MODULES = ("resnet_keras", "resnet_keras.cli", "resnet_keras.__main__")
# The imports whose native libraries print while they load.
BACKENDS = ("keras", "tensorflow")


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


def set_log_level():
    """TF_CPP_MIN_LOG_LEVEL for the TensorFlow still to load (see above)."""
    if not verbose():
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3" if is_command_line() else "2")


@contextlib.contextmanager
def quiet_native_stderr():
    """File descriptor 2 to /dev/null inside (unless verbose): what native
    libraries print while they load; Python exceptions still propagate."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def import_module(name):
    """``importlib.import_module(NAME)``; where that needs TensorFlow and it is
    not installed, :class:`resnet_keras.errors.MissingExtra` (one line naming
    the install command)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name != "tensorflow":
            raise
        from resnet_keras.errors import MissingExtra

        raise MissingExtra(MISSING) from err


class _BackendFinder(importlib.abc.MetaPathFinder):
    """Finds ``keras`` and ``tensorflow`` with the other finders and loads
    them quietly; once keras has loaded, imports the modules of ``after_keras``."""

    def __init__(self, after_keras):
        self.after_keras = tuple(after_keras)

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in BACKENDS:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    after = self.after_keras if fullname == "keras" else ()
                    spec.loader = _QuietLoader(spec.loader, after)
                return spec
        return None


class _QuietLoader(importlib.abc.Loader):
    """A loader that runs another one's ``exec_module`` quietly, then imports
    the modules of ``after``; the module keeps the original loader."""

    def __init__(self, loader, after):
        self.loader, self.after = loader, after

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        if getattr(module, "__loader__", None) in (None, self):
            module.__loader__ = self.loader
        if getattr(module.__spec__, "loader", None) is self:
            module.__spec__.loader = self.loader
        with quiet_native_stderr():
            self.loader.exec_module(module)
        for name in self.after:
            importlib.import_module(name)

    def __getattr__(self, name):  # get_resource_reader, is_package, ...
        return getattr(self.loader, name)


def watch_backend_imports(after_keras=()):
    """Load keras and tensorflow quietly whenever they are first imported,
    by this package or by the user, and import the modules named in
    ``after_keras`` once keras is there (at once if it is already)."""
    if not any(isinstance(finder, _BackendFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _BackendFinder(after_keras))
    if sys.modules.get("keras") is not None:
        for name in after_keras:
            importlib.import_module(name)
