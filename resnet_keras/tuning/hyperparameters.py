"""Helpers on keras-tuner ``HyperParameters``: a user's overrides, choices
declared per group of families, and the values a hyperparameter can take.

The space declares its names only inside conditional scopes, so an
unconditional hyperparameter of the same name is a user's override
(``hp.Fixed``, ``hp.Choice``...) and replaces the range.
"""
import keras_tuner

_HP = keras_tuner.engine.hyperparameters


def user_choices(hp, name):
    """Possible values of an unconditional hyperparameter ``name``, or None."""
    for param in hp.space:
        if param.name == name and not param.conditions:
            return possible_values(param)
    return None


def overridden(hp, name):
    """Whether the user gave ``name`` (an unconditional hyperparameter)."""
    return user_choices(hp, name) is not None


def searched(hp, name, values):
    """A user's ``name`` if given, a Choice over ``values`` if several, else the one value."""
    if overridden(hp, name):
        return hp.get(name)
    if len(values) == 1:
        return values[0]
    return hp.Choice(name, list(values), default=values[0])


def choice_or_fixed(hp, name, values, default):
    """A user's unconditional ``name`` if given, else a Choice (Fixed for one value)."""
    if overridden(hp, name):
        return hp.get(name)
    if len(values) == 1:
        return hp.Fixed(name, values[0])
    return hp.Choice(name, list(values), default=default)


def group_families(families, key):
    """``{key(family): [families with that key]}``, in the order of FAMILIES."""
    groups = {}
    for family in families:
        groups.setdefault(key(family), []).append(family)
    return groups


def declare_per_group(hp, family, groups, declare):
    """Call ``declare(key)`` once per group of ``groups`` (see
    :func:`group_families`) inside a conditional scope on ``family``; the value
    declared for the group holding FAMILY."""
    active = None
    for key, families in groups.items():
        with hp.conditional_scope("family", list(families)):
            value = declare(key)
        if family in families:
            active = value
    return active


def possible_values(param):
    """The values of a hyperparameter (a range's ends for a Float)."""
    config = param.get_config()
    if isinstance(param, _HP.Fixed):
        return [config["value"]]
    if "values" in config:
        return list(config["values"])
    if isinstance(param, _HP.Int):
        return list(range(config["min_value"], config["max_value"] + 1, config["step"] or 1))
    if isinstance(param, _HP.Boolean):
        return [False, True]
    return [config["min_value"], config["max_value"]]


def space_values(space, name):
    """Every value any branch of ``name`` can take, in declaration order."""
    values = []
    for param in space.space:
        if param.name == name:
            values += [v for v in possible_values(param) if v not in values]
    return values


def is_float(param):
    return isinstance(param, _HP.Float)


def is_fixed(param):
    return isinstance(param, _HP.Fixed)
