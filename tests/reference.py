"""The shared reference material: PyTorch key lists and the golden recipe.

``../shared/reference/torch_keys/NAME.keys.json`` lists a reference model's
state-dict keys and shapes; ``golden/recipe.py`` regenerates its full state
dict from a seed (numpy only). Tests that need them skip without them.
"""
import importlib.util
import json
import os

import pytest
from conftest import REFERENCE

GOLDEN = os.path.join(REFERENCE, "golden")
TORCH_KEYS = os.path.join(REFERENCE, "torch_keys")


def need_reference():
    if not os.path.isdir(TORCH_KEYS):
        pytest.skip(f"shared reference not found at {REFERENCE}")


def golden_recipe():
    """The golden recipe module (make_state_dict, make_input)."""
    need_reference()
    spec = importlib.util.spec_from_file_location("golden_recipe",
                                                  os.path.join(GOLDEN, "recipe.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def torch_keys(name):
    """[(key, shape)] of NAME.keys.json, in state-dict order."""
    need_reference()
    with open(os.path.join(TORCH_KEYS, f"{name}.keys.json")) as f:
        return [(key, tuple(shape)) for key, shape in json.load(f)]


def reference_state_dict(name, seed=1234):
    """The reference's full state dict for NAME (e.g. "resnet18", "drn_d_22_seg19")."""
    return golden_recipe().make_state_dict(torch_keys(name), seed)
