"""Argument checks of the search space and the tuners: one-line ValueErrors
that name the bad value and what is allowed."""
from resnet_keras import specs as specs_lib


def choice(field, value, choices):
    """VALUE, if it is one of CHOICES."""
    if value not in choices:
        raise ValueError(f"{field}={value!r} is not valid; choices: {', '.join(choices)}")
    return value


def choices(field, values, allowed):
    """VALUES (a string or a sequence) as a tuple without repeats, each one of ALLOWED."""
    values = (values,) if isinstance(values, str) else tuple(values)
    if not values:
        raise ValueError(f"{field} is empty; choices: {', '.join(allowed)}")
    for value in values:
        if value not in allowed:
            raise ValueError(f"{field}: {value!r} is not valid; choices: {', '.join(allowed)}")
    return tuple(dict.fromkeys(values))


def rates(field, values):
    """VALUES (one or a sequence) as a tuple of floats in [0, 1) without repeats."""
    values = tuple(values) if isinstance(values, (tuple, list)) else (values,)
    if not values:
        raise ValueError(f"{field} is empty; give rates in [0, 1), e.g. (0.0, 0.1)")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ValueError(f"{field}: {value!r} is not a rate in [0, 1)")
    return tuple(dict.fromkeys(float(v) for v in values))


def positive_int(field, value):
    if not specs_lib.is_int(value) or value < 1:
        raise ValueError(f"{field}={value!r}: must be a positive integer")
    return value


def positive_ints(field, values):
    """VALUES as a sorted tuple of distinct positive integers."""
    values = tuple(values)
    if not values:
        raise ValueError(f"{field} is empty: give at least one positive integer")
    for value in values:
        positive_int(field, value)
    return tuple(sorted(set(values)))


def optional_positive(field, value):
    """None, or a positive number as an int."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{field}={value!r}: must be a positive number or None")
    return int(value)


def int_range(field, value):
    """``(min, max)`` positive integers with min <= max."""
    try:
        low, high = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{field}={value!r}: expected (min, max) positive integers") from None
    if not 1 <= low <= high:
        raise ValueError(f"{field}={value!r}: expected 1 <= min <= max")
    return low, high


def log_range(field, value, fallback):
    """``(min, max, default)`` from ``(min, max)`` (FALLBACK's default, clipped)
    or ``(min, max, default)``; 0 < min <= default <= max."""
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{field}={value!r}: expected (min, max) or (min, max, default)") \
            from None
    if len(values) not in (2, 3) or not 0 < values[0] <= values[1]:
        raise ValueError(f"{field}={value!r}: expected 0 < min <= max, as (min, max) or "
                         "(min, max, default)")
    low, high = values[:2]
    default = values[2] if len(values) == 3 else min(max(fallback[2], low), high)
    if not low <= default <= high:
        raise ValueError(f"{field}={value!r}: the default {default} is outside [{low}, {high}]")
    return low, high, default


def fixed_shape(input_shape):
    """A fixed ``(height, width, channels)`` as a tuple of ints."""
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape={input_shape!r}: expected a fixed (height, width, "
                         "channels), e.g. (32, 32, 3)")
    return shape
