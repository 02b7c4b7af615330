"""Checking weight values before anything is assigned, and assigning them all or none.

Every loader (Keras files, legacy ``.h5`` files, PyTorch state dicts) reads
and converts each array with :func:`real_array` and :func:`cast_for` first,
reports what does not fit with :func:`raise_if_mismatched` /
:func:`raise_if_unusable` (one ValueError, "nothing was loaded"), and only
then assigns with :func:`assign_all`.
"""
import numpy as np

from resnet_keras import errors

# The classifier layers: optional in a source (see resnet_keras.weights).
CLASSIFIER_LAYERS = ("predictions", "seg", "up")

_KINDS = {"b": "booleans", "c": "complex numbers", "M": "dates", "m": "time spans",
          "O": "Python objects", "S": "bytes", "U": "text", "V": "raw records"}
# Low-precision floats (ml_dtypes) that numpy stores as records: read as float32.
_LOW_PRECISION_FLOATS = ("bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2",
                         "float8_e5m2fnuz", "float8_e4m3b11fnuz")


def real_array(label, value):
    """VALUE (numpy array or torch tensor) as a numpy array of real numbers.

    Floats and integers pass; bfloat16/float8 become float32. Anything else
    (bool, text, bytes, object, complex, date/time, records) raises a
    one-line ValueError naming LABEL and the dtype.
    """
    try:
        array = to_numpy(value)
    except Exception as err:  # e.g. a sparse or quantized tensor
        raise ValueError(f"{label} cannot be read as an array "
                         f"({errors.first_line(err)})") from None
    if array.dtype.kind in "fiu":
        return array
    if array.dtype.name in _LOW_PRECISION_FLOATS:
        return array.astype(np.float32)
    raise ValueError(f"{label} has dtype {array.dtype} "
                     f"({_KINDS.get(array.dtype.kind, 'not numbers')}); expected real "
                     "numbers (float or integer)")


def cast_for(label, array, variable):
    """ARRAY (from :func:`real_array`) in VARIABLE's dtype and shape, finite.

    ValueError naming LABEL for a shape other than the variable's, or a nan
    or inf in the array or produced by the conversion (float64 overflowing
    float32).
    """
    if tuple(array.shape) != tuple(variable.shape):
        raise ValueError(f"{label} has shape {tuple(array.shape)}, expected "
                         f"{tuple(variable.shape)}")
    check_finite(label, array)
    dtype = numpy_dtype(variable.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        converted = np.asarray(array, dtype=dtype)
    check_finite(label, converted, f" after conversion to {dtype}")
    return converted


def numpy_dtype(dtype):
    import keras

    name = keras.backend.standardize_dtype(dtype)
    try:
        return np.dtype(name)
    except TypeError:  # bfloat16 and other ml_dtypes names
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, name))


def check_finite(label, array, where=""):
    if array.dtype.kind not in "fc" and array.dtype.name not in _LOW_PRECISION_FLOATS:
        return
    finite = np.isfinite(array.astype(np.float32) if array.dtype.kind == "V" else array)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        raise ValueError(f"{label} has {bad} non-finite value{'s' if bad > 1 else ''} "
                         f"(nan or inf){where}")


def raise_if_unusable(source, model_name, unusable):
    if unusable:
        more = f" (and {len(unusable) - 1} more)" if len(unusable) > 1 else ""
        raise ValueError(f"{source} cannot be loaded into {model_name}: {unusable[0]}{more}; "
                         "nothing was loaded")


def assign_all(pairs):
    """Assign checked values; should an assignment still fail, undo the others."""
    backup = [(variable, variable.numpy()) for variable, _ in pairs]
    try:
        for variable, value in pairs:
            variable.assign(value)
    except Exception:
        for variable, value in backup:
            variable.assign(value)
        raise


def _listing(label, items, limit=6):
    if not items:
        return None
    shown = ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)"
                                       if len(items) > limit else "")
    return f"{len(items)} {label} ({shown})"


def raise_if_mismatched(source, model_name, what, missing, unexpected, misshaped,
                         hint=""):
    parts = [_listing(f"missing {what}", missing),
             _listing(f"unexpected {what}", unexpected),
             _listing("mis-shaped", misshaped)]
    parts = [p for p in parts if p]
    if parts:
        raise ValueError(f"{source} does not fit {model_name}: {'; '.join(parts)}"
                         f"{hint}; nothing was loaded")


def to_numpy(value):
    """A numpy array from a numpy array or a torch tensor (bf16/fp16 -> fp32;
    float64 stays float64, so that an overflow of float32 is seen when it is
    converted to the variable's dtype)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if value.is_floating_point() and value.element_size() < 8:
            value = value.float()
        return value.numpy()
    return np.asarray(value)
