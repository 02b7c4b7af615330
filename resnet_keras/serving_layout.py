"""The folder layout of TF Serving exports: signature and file names,
integer versions, and atomic publishing of a new version.

A version is written to a hidden staging folder
``BASE/.tmp-<version>-<host>-<pid>-<start>`` and renamed into place, so a
numbered version is either complete or absent, even if the exporting
process is killed. A staging folder left by a killed exporter on this host
is removed by the next export into the same base; those of live exporters,
and of other hosts (a shared file system), are left alone.
"""
import contextlib
import hashlib
import os
import re
import shutil
import socket

SERVING_DEFAULT = "serving_default"
SERVING_BYTES = "serving_bytes"
SIGNATURES = (SERVING_DEFAULT, SERVING_BYTES)  # the predict signatures
OUTPUTS = ("logits", "probabilities", "classes")
LABELS_FILE = "labels.txt"
SAVED_MODEL_FILE = "saved_model.pb"


# --------------------------------------------------------------------------
# Versions


def list_versions(export_base):
    """Sorted integer version folders in EXPORT_BASE; other names are ignored."""
    if not os.path.isdir(export_base):
        return []
    return sorted(
        int(name) for name in os.listdir(export_base)
        if name.isascii() and name.isdigit()
        and os.path.isdir(os.path.join(export_base, name)))


def next_version(export_base):
    """One more than the highest version present, 1 if there is none.

    Integer names that are files, not folders, are skipped too, so the
    version returned is always free.
    """
    if not os.path.isdir(export_base):
        return 1
    taken = [int(name) for name in os.listdir(export_base) if name.isascii() and name.isdigit()]
    return max(taken) + 1 if taken else 1


def check_export_base(export_base):
    """ValueError (one line) unless EXPORT_BASE can hold numbered versions.

    Refused: a file, and a folder that is itself an exported version (holds
    ``saved_model.pb``), since versions written inside it would change it.
    """
    export_base = os.fspath(export_base)
    if os.path.exists(export_base) and not os.path.isdir(export_base):
        raise ValueError(f"export dir {export_base!r} is a file, not a folder")
    if os.path.isfile(os.path.join(export_base, SAVED_MODEL_FILE)):
        parent = os.path.dirname(os.path.abspath(export_base))
        raise ValueError(
            f"export dir {export_base!r} is an existing exported version (it holds "
            f"{SAVED_MODEL_FILE}); nothing was written: pass the folder of the versions, "
            f"e.g. {parent!r}")


def check_version(export_base, version):
    if version is None:
        return next_version(export_base)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"export version must be a non-negative integer, got {version!r}")
    target = os.path.join(export_base, str(version))
    if os.path.exists(target):
        raise ValueError(
            f"export version {version} already exists at {target!r}; nothing was "
            f"overwritten (next free version: {next_version(export_base)})")
    return version


# --------------------------------------------------------------------------
# Staging folders


_STAGING = re.compile(r"\.tmp-(\d+)-([0-9a-f]{8})-(\d+)-(\d+)")


def _host_tag():
    return hashlib.sha1(socket.gethostname().encode("utf-8")).hexdigest()[:8]


def _process_start(pid):
    """``(state, start time in clock ticks since boot)`` of PID from /proc, or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], fields[19]


def staging_name(version):
    start = _process_start(os.getpid())
    return f".tmp-{version}-{_host_tag()}-{os.getpid()}-{start[1] if start else 0}"


def _owner_alive(pid, start):
    """Whether the process that made a staging folder on this host still runs."""
    info = _process_start(pid)
    if info is not None:
        state, started = info
        return state not in ("Z", "X") and (start == "0" or started == start)
    if os.path.isdir("/proc/self"):
        return False  # Linux: no /proc entry, no process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's live process
        return True
    return True


def remove_dead_staging(export_base):
    """Remove the staging folders of exporters on this host that no longer run.

    Returns the names removed. Folders of live processes, of other hosts and
    any other hidden names are kept.
    """
    if not os.path.isdir(export_base):
        return []
    removed, host = [], _host_tag()
    for name in sorted(os.listdir(export_base)):
        match = _STAGING.fullmatch(name)
        if not match or match.group(2) != host:
            continue
        if not _owner_alive(int(match.group(3)), match.group(4)):
            shutil.rmtree(os.path.join(export_base, name), ignore_errors=True)
            removed.append(name)
    return removed


def publish(staged, target):
    """Rename the finished SavedModel into place; never replace a version."""
    if os.path.exists(target):
        raise ValueError(f"export version already exists at {target!r}; nothing was overwritten")
    try:
        os.rename(staged, target)
    except OSError as err:
        raise ValueError(f"could not move the export into {target!r}: {err}") from err


# --------------------------------------------------------------------------
# Writing a version


@contextlib.contextmanager
def staged_version(export_base, version=None):
    """Stage a new version of EXPORT_BASE: yields ``(staging, target)``.

    EXPORT_BASE and VERSION (default: the next one) are checked and dead
    staging folders removed first. The caller writes the SavedModel to
    ``staging/model``; on a clean exit it is published as TARGET
    (``EXPORT_BASE/<version>``). The staging folder is removed in every case.
    """
    check_export_base(export_base)
    version = check_version(export_base, version)
    remove_dead_staging(export_base)
    staging = os.path.join(export_base, staging_name(version))
    shutil.rmtree(staging, ignore_errors=True)
    target = os.path.join(export_base, str(version))
    try:
        yield staging, target
        publish(os.path.join(staging, "model"), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_labels(folder, class_names):
    """FOLDER/labels.txt with CLASS_NAMES, one a line, in index order; its path."""
    os.makedirs(folder, exist_ok=True)
    labels_path = os.path.join(folder, LABELS_FILE)
    with open(labels_path, "w", encoding="utf-8") as f:
        f.write("".join(f"{name}\n" for name in class_names))
    return labels_path


def labels_table(labels_path):
    """A class-index -> name table read from LABELS_PATH.

    Tracking it in an export archive makes the file a SavedModel asset,
    copied to ``assets/labels.txt`` of the export.
    """
    import tensorflow as tf

    initializer = tf.lookup.TextFileInitializer(
        labels_path, key_dtype=tf.int64, key_index=tf.lookup.TextFileIndex.LINE_NUMBER,
        value_dtype=tf.string, value_index=tf.lookup.TextFileIndex.WHOLE_LINE)
    return tf.lookup.StaticHashTable(initializer, default_value="")
