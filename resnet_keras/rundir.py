"""Layout of a training run's ``--model-dir``, shared by train, evaluate and export.

    MODEL_DIR/run_config.json   what was trained: the run's options, class
                                names, image size, resolved recipe and result
                                (read typed by resnet_keras.training.record)
    MODEL_DIR/best.keras        best model so far by validation accuracy
    MODEL_DIR/model.keras       model at the end of the last finished run
    MODEL_DIR/backup/           fault-tolerance state (resume after a kill)
    MODEL_DIR/logs/             TensorBoard event files
    MODEL_DIR/.lock             held by the process training in MODEL_DIR

Also the checks every command makes on the folders it will write.
"""
import errno
import fcntl
import json
import os
import socket
import tempfile
import zipfile

from resnet_keras.atomic import write_atomic

CONFIG_FILE = "run_config.json"
BEST_MODEL = "best.keras"
FINAL_MODEL = "model.keras"
BACKUP_DIR = "backup"
LOG_DIR = "logs"
LOCK_FILE = ".lock"


def path(model_dir, name):
    return os.path.join(model_dir, name)


def read_run_config(model_dir):
    """The run's config dict; ValueError if MODEL_DIR holds no training run."""
    config_path = path(model_dir, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise ValueError(
            f"model dir {model_dir!r} holds no training run (no {CONFIG_FILE}); "
            "train one with 'resnet-keras train --model-dir ...'")
    try:
        with open(config_path) as f:
            config = json.load(f)
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(
            f"run config {config_path!r} is damaged ({err}); restore it or train "
            "into a new --model-dir") from None
    if not isinstance(config, dict):
        raise ValueError(
            f"run config {config_path!r} is damaged (a JSON {type(config).__name__}, "
            "not an object); restore it or train into a new --model-dir")
    return config


def write_run_config(model_dir, config):
    """Write the config atomically (a reader never sees half a file)."""
    os.makedirs(model_dir, exist_ok=True)
    write_atomic(path(model_dir, CONFIG_FILE), json.dumps(config, indent=2, sort_keys=True))


def save_model_file(model, model_dir, name):
    """Save MODEL as MODEL_DIR/NAME (a .keras file) atomically: written under a
    temporary name, then renamed. Returns the path."""
    target = path(model_dir, name)
    tmp = path(model_dir, f".tmp-{os.getpid()}-{name}")
    model.save(tmp)
    os.replace(tmp, target)
    return target


def trained_model_path(model_dir):
    """best.keras if present, else model.keras; ValueError if neither exists."""
    for name in (BEST_MODEL, FINAL_MODEL):
        candidate = path(model_dir, name)
        if os.path.isfile(candidate):
            return candidate
    raise ValueError(
        f"model dir {model_dir!r} holds no saved model ({BEST_MODEL} or {FINAL_MODEL})")


def load_trained_model(model_dir):
    """(keras model, run config dict) of the best or final model in MODEL_DIR.

    ValueError naming the file if it is damaged (truncated, empty, not a
    Keras archive). :func:`resnet_keras.training.record.load_trained` gives
    the config as a typed record.
    """
    config = read_run_config(model_dir)
    return load_model_file(model_dir), config


def load_model_file(model_dir):
    """The best (else final) Keras model saved in MODEL_DIR; ValueError naming
    the file if it is missing or damaged (truncated, empty, not a Keras archive)."""
    return load_keras_file(trained_model_path(model_dir),
                           "retrain, or remove it to use the other saved model")


def load_keras_file(model_path, advice="use another file"):
    """The Keras model saved in the ``.keras`` file MODEL_PATH; ValueError naming
    the file, and giving ADVICE, if it is damaged (truncated, empty, not a Keras
    archive)."""
    import keras

    if not zipfile.is_zipfile(model_path):
        size = os.path.getsize(model_path)
        raise ValueError(
            f"model file {model_path!r} is damaged ({'empty' if not size else f'{size} bytes'}"
            f", not a Keras archive); {advice}")
    try:
        model = keras.saving.load_model(model_path, compile=False)
    except (ValueError, OSError, KeyError, TypeError, zipfile.BadZipFile) as err:
        from resnet_keras.errors import first_line

        raise ValueError(f"model file {model_path!r} is damaged and cannot be loaded "
                         f"({first_line(err)})") from None
    return model


# --------------------------------------------------------------------------
# Folders a command writes


def check_writable_dir(folder, what):
    """ValueError (one line) unless FOLDER is, or can be made, a writable folder.

    Checks without creating FOLDER: it must be a folder if it exists, and its
    nearest existing ancestor must be a folder that accepts a new file (a
    real probe write, so read-only mounts and ``/proc`` are caught even as
    root). ``None`` is accepted (nothing to write).
    """
    if folder is None:
        return
    folder = os.fspath(folder)
    if not folder:
        raise ValueError(f"{what} is empty; give a folder path")
    absolute = os.path.abspath(folder)
    if os.path.exists(absolute) and not os.path.isdir(absolute):
        raise ValueError(f"{what} {folder!r} is a file, not a folder")
    existing = absolute
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"{what} {folder!r} cannot be created: {existing!r} is a file")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=existing)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise ValueError(f"{what} {folder!r} is not writable: creating a file in "
                         f"{existing!r} failed ({err.strerror or err})") from None


# --------------------------------------------------------------------------
# One trainer per model dir


class RunLock:
    """An exclusive lock on MODEL_DIR: a second trainer is refused.

    ``MODEL_DIR/.lock`` holds the owner's pid and host; the process keeps an
    ``flock`` on it while it trains. The kernel drops the flock when the
    process ends, however it ends, so a lock left by a killed run never
    blocks a resume. Where the file system has no flock, a lock whose pid is
    dead on this host is taken over. Use as a context manager, or
    :meth:`acquire` / :meth:`release`.
    """

    def __init__(self, model_dir):
        self.model_dir = os.fspath(model_dir)
        self.file = path(self.model_dir, LOCK_FILE)
        self._fd = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

    def acquire(self):
        """Take the lock; ValueError naming the holder if another process has it."""
        os.makedirs(self.model_dir, exist_ok=True)
        while self._fd is None:
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise self._refusal(holder) from None
            except OSError as err:  # no flock here (some network file systems)
                if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    os.close(fd)
                    raise
                holder = _read_holder(fd)
                if holder and _alive_here(holder):
                    os.close(fd)
                    raise self._refusal(holder) from None
            try:  # still the file at our path (a releasing holder may have removed it)
                same = os.path.samestat(os.fstat(fd), os.stat(self.file))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
                     .encode())
            os.fsync(fd)
            self._fd = fd
        return self

    def release(self):
        """Drop the lock (and its file); safe to call twice."""
        if self._fd is None:
            return
        try:
            os.remove(self.file)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def _refusal(self, holder):
        who = (f"pid {holder.get('pid')} on host {holder.get('host')!r}" if holder
               else "another process")
        return ValueError(
            f"model dir {self.model_dir!r} is in use by {who} (lock {self.file!r}); wait "
            "for that run to end, or use another --model-dir")


def _read_holder(fd):
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        holder = json.loads(os.read(fd, 4096).decode() or "null")
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return holder if isinstance(holder, dict) else None


def _alive_here(holder):
    if holder.get("host") != socket.gethostname():
        return True  # cannot tell: assume it runs
    try:
        os.kill(int(holder.get("pid")), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True
