"""Starting a run from trained weights: ``--weights``, ``--freeze-stages``, ``--freeze-bn``.

A weights SOURCE is ``"imagenet"`` (where a public source is known), a
weights file (``.keras``, ``.weights.h5``, ``.h5``, ``.npz``, ``.pth``,
``.safetensors``) or the model dir of an earlier run. :func:`resolve_source`
checks it before anything is built or written (a source of another
architecture is refused in one line) and finds its input convention, which
the new run then uses; :func:`load_source` loads it into the new model. When
the class counts differ, the trunk is loaded and the classifier
(``predictions``) starts from new weights, said in one line.

:func:`freeze` keeps the stem and the first N stages out of training
(``--freeze-stages N``) and puts every BatchNormalization layer in inference
mode with its statistics, scale and offset fixed (``--freeze-bn``).
"""
import dataclasses
import os
import re
from typing import Optional

import keras
import numpy as np

from resnet_keras import build_model, rundir
from resnet_keras import weights as weights_lib
from resnet_keras.conventions import DEFAULT_CONVENTION
from resnet_keras.training import record as record_lib

HEAD = "predictions"
STATE_DICT_HEAD = tuple(f"{weights_lib.HEADS[HEAD]}.{leaf}" for leaf in ("weight", "bias"))


@dataclasses.dataclass(frozen=True)
class Source:
    """A checked weights source: what to load and what it expects."""

    spec: str  # as run_config.json records it: "imagenet" or an absolute path
    path: Optional[str]  # the file to read; None for "imagenet"
    convention: str


def resolve_source(weights, model_name, build_kwargs):
    """The :class:`Source` of WEIGHTS for a run of MODEL_NAME (``None``: no
    source). ValueError (one line) for a source that does not exist, cannot
    be read here or is for another architecture."""
    if weights is None:
        return None
    if weights == "imagenet":
        weights_lib.check_weights_arg("imagenet", model_name, False, None)
        return Source("imagenet", None, weights_lib.weights_convention("imagenet", model_name))
    path = os.path.abspath(os.fspath(weights))
    if os.path.isdir(path):
        return _run_source(path, model_name, build_kwargs)
    if not os.path.exists(path):
        raise ValueError(f"weights {weights!r}: no such file or model dir; expected "
                         "'imagenet', a weights file or the model dir of a run")
    weights_lib.check_weights_arg(path, model_name, False, None)
    return Source(path, path, weights_lib.weights_convention(path, model_name))


def _run_source(path, model_name, build_kwargs):
    record = record_lib.read_record(path)
    trained = record.config.model.name
    if trained != model_name:
        raise ValueError(f"weights {path!r} are a {trained} run; this run trains "
                         f"{model_name}: use weights of a {model_name}")
    mine, theirs = _architecture(build_kwargs), _architecture(record.build_kwargs)
    if mine != theirs:
        raise ValueError(f"weights {path!r} are a {trained} built with {theirs}; this run "
                         f"builds it with {mine}: use the same architecture arguments")
    return Source(path, rundir.trained_model_path(path),
                  record.config.model.preprocessing or DEFAULT_CONVENTION)


def _architecture(build_kwargs):
    return {k: v for k, v in build_kwargs.items() if k not in ("classes", "input_shape")}


def load_source(model, source, model_name, build_kwargs, say=print):
    """Load SOURCE into MODEL (a classifier of ``build_kwargs["classes"]``
    classes), all or nothing; a source with another class count loads the
    trunk only and leaves ``predictions`` as initialised (one line to SAY)."""
    classes = build_kwargs["classes"]
    path = source.path or weights_lib.fetch_imagenet(model_name, include_top=True)
    if path.endswith(weights_lib.STATE_DICT_SUFFIXES):
        state_dict = dict(weights_lib.read_state_dict(path))
        theirs = _state_dict_classes(state_dict)
        if theirs not in (None, classes):
            for key in STATE_DICT_HEAD:
                state_dict.pop(key, None)
        try:
            weights_lib.load_torch_state_dict(model, state_dict)
        except ValueError as err:
            raise ValueError(f"weights {source.spec!r}: {err}") from None
        if theirs not in (None, classes):
            _say_new_head(say, source, theirs, classes)
        return model
    if path.endswith(".keras"):
        twin = rundir.load_keras_file(path)
    else:
        theirs = _h5_classes(path)
        if theirs in (None, classes):
            return weights_lib.load_weights(model, path, model_name)
        twin = build_model(model_name, **{**build_kwargs, "classes": theirs,
                                          "input_shape": tuple(build_kwargs["input_shape"])})
        weights_lib.load_weights(twin, path, model_name)
    theirs = _head_units(twin)
    copy_weights(twin, model, skip=() if theirs == classes else (HEAD,), source=source.spec)
    if theirs not in (None, classes):
        _say_new_head(say, source, theirs, classes)
    return model


def _say_new_head(say, source, theirs, classes):
    say(f"weights {source.spec}: {theirs} classes, this run {classes}: the trunk is loaded "
        f"and the classifier ({HEAD!r}) starts from new weights")


def _state_dict_classes(state_dict):
    weight = state_dict.get(STATE_DICT_HEAD[0])
    return None if weight is None else int(np.shape(weight)[0])


def _h5_classes(path):
    """The class count of the classifier in a Keras .h5 / .weights.h5 file, or None."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            for key in (f"layers/{HEAD}/vars/1", f"{HEAD}/{HEAD}/bias:0",
                        f"model_weights/{HEAD}/{HEAD}/bias:0"):
                if key in f:
                    return int(f[key].shape[0])
    except OSError:
        return None  # unreadable: the loader says why
    return None


def _head_units(model):
    for layer in model.layers:
        if layer.name == HEAD:
            return int(layer.weights[0].shape[-1])
    return None


def copy_weights(source_model, model, skip=(), source="source"):
    """Assign SOURCE_MODEL's weights to MODEL's layers of the same names
    (all or nothing), except the layers named in SKIP."""
    theirs = {layer.name: layer for layer in source_model.layers}
    pairs, problems = [], []
    for layer in model.layers:
        if not layer.weights or layer.name in skip:
            continue
        other = theirs.get(layer.name)
        wanted = [tuple(v.shape) for v in layer.weights]
        found = [tuple(v.shape) for v in other.weights] if other is not None else None
        if found != wanted:
            problems.append(f"{layer.name} ({'missing' if found is None else found})")
            continue
        pairs.extend(zip(layer.weights, other.weights))
    if problems:
        raise ValueError(f"weights {source!r} do not fit {model.name}: "
                         f"{len(problems)} layer(s) differ, e.g. {', '.join(problems[:3])}")
    for variable, value in pairs:
        variable.assign(np.asarray(value.numpy(), variable.dtype))
    return model


_STAGE = re.compile(r"^(?:conv(\d+)|level(\d+))_")
_STEM = re.compile(r"^(?:conv1|pool1)(?:_|$)")


def trunk_stages(model):
    """MODEL's layers grouped as ``[stem, stage 1, stage 2, ...]`` by the
    builders' names (stem ``conv1_*``/``pool1*``; ResNet stage k
    ``conv{k+1}_*``; DRN level k ``level{k}_*``; a v2 model's ``post_*``
    normalisation belongs to its last stage)."""
    groups = {0: []}
    for layer in model.layers:
        match = _STAGE.match(layer.name)
        if _STEM.match(layer.name):
            groups[0].append(layer)
        elif match:
            resnet, level = match.groups()
            index = int(resnet) - 1 if resnet else int(level)
            groups.setdefault(index, []).append(layer)
        elif layer.name.startswith("post_") and len(groups) > 1:
            groups[max(groups)].append(layer)
    return [groups[k] for k in sorted(groups)]


def freeze(model, freeze_stages=0, freeze_bn=False):
    """Keep the stem and the first FREEZE_STAGES stages out of training, and,
    with FREEZE_BN, every BatchNormalization layer in inference mode. Returns
    the number of layers frozen; ValueError if MODEL has fewer stages."""
    frozen = set()
    if freeze_stages:
        stages = trunk_stages(model)
        if freeze_stages > len(stages) - 1:
            raise ValueError(f"freeze stages {freeze_stages}: {model.name} has "
                             f"{len(stages) - 1} stages; use 0 to {len(stages) - 1}")
        for group in stages[:freeze_stages + 1]:
            frozen.update(layer.name for layer in group)
    for layer in model.layers:
        is_bn = isinstance(layer, keras.layers.BatchNormalization)
        if layer.name in frozen or (freeze_bn and is_bn):
            layer.trainable = False
            frozen.add(layer.name)
    return len(frozen)
