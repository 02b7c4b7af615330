"""TFDS image classification datasets: found, checked and prepared.

``tensorflow_datasets`` is imported on first use (it is slow to import).
Every problem (an unknown name or config, a dataset that is not image
classification, one not prepared with no network to download it) is a
one-line ValueError naming the value and the choices.
"""
import difflib
import os
import socket

import tensorflow as tf

from resnet_keras import errors

EXAMPLE_NAMES = " (e.g. cifar10, imagenette/160px)"


def tfds():
    """tensorflow_datasets, imported on first use (it is slow to import)."""
    return errors.require("tensorflow_datasets", "train",
                          "reading a TFDS dataset (use folder:PATH for an image folder)")


def tfds_builder(name, data_dir):
    """The TFDS builder of NAME (``dataset`` or ``dataset/config``), read from
    DATA_DIR, else ``$TFDS_DATA_DIR``, else TFDS' default folder."""
    data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
    lib = tfds()
    try:
        builder = lib.builder(name, data_dir=data_dir)
    except (lib.core.registered.DatasetNotFoundError, ValueError):
        base, _, config = name.partition("/")
        configs = _configs(base) if config else None
        if configs is not None:
            raise ValueError(
                f"unknown config {config!r} of TFDS dataset {base!r}; choices: "
                f"{', '.join(configs) or f'none (use {base!r} alone)'}") from None
        raise ValueError(
            f"unknown dataset {name!r}; expected folder:PATH or a TFDS image "
            f"classification dataset{_suggest(name)}") from None
    return builder


def _configs(name):
    """Config names of a TFDS dataset, or None if there is no such dataset."""
    try:
        return [config.name for config in tfds().builder_cls(name).BUILDER_CONFIGS]
    except Exception:  # unknown dataset
        return None


def _suggest(name):
    try:
        known = tfds().list_builders(with_community_datasets=False)
    except Exception:  # listing is best effort
        return EXAMPLE_NAMES
    close = difflib.get_close_matches(name.split("/")[0], known, n=3)
    return f" (did you mean: {', '.join(close)}?)" if close else EXAMPLE_NAMES


def prepare(builder, name):
    """Download and prepare a TFDS dataset unless it is already prepared."""
    if _is_prepared(builder):
        return
    hint = "pass --data-dir with a prepared copy or use folder:PATH"
    if not _online():
        raise ValueError(
            f"TFDS dataset {name!r} is not prepared in {builder.data_dir!r} and there is "
            f"no network to download it; {hint}")
    try:
        builder.download_and_prepare()
    except Exception as err:  # download refused, manual download needed, disk full, ...
        raise ValueError(
            f"TFDS dataset {name!r} is not prepared in {builder.data_dir!r} and could "
            f"not be downloaded ({errors.first_line(err)}); {hint}") from None


def _online(host="storage.googleapis.com", timeout=5.0):
    """Whether the TFDS download host is reachable (assumed so behind a proxy)."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY")):
        return True
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _is_prepared(builder):
    check = getattr(builder, "is_prepared", None)
    if check is not None:
        return check()
    return tf.io.gfile.exists(os.path.join(builder.data_dir, "dataset_info.json"))


def classification_keys(builder, spec):
    """``(image key, label key)`` of BUILDER; ValueError unless they are an Image
    and a ClassLabel."""
    lib = tfds()
    keys = builder.info.supervised_keys
    features = builder.info.features
    ok = (isinstance(keys, (tuple, list)) and len(keys) == 2
          and all(isinstance(k, str) and k in features for k in keys)
          and isinstance(features[keys[0]], lib.features.Image)
          and isinstance(features[keys[1]], lib.features.ClassLabel))
    if not ok:
        raise ValueError(
            f"dataset {spec!r} is not an image classification dataset "
            f"(supervised keys {keys!r}; expected an Image and a ClassLabel)")
    return keys


def encoded_split(builder, split, image_key, label_key):
    """The split as (encoded image bytes, int64 label), in the builder's order."""
    skip = tfds().decode.SkipDecoding()
    raw = builder.as_dataset(split=split, shuffle_files=False, decoders={image_key: skip})
    return raw.map(lambda ex: (ex[image_key], tf.cast(ex[label_key], tf.int64)))
