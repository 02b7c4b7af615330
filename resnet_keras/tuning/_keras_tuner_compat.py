"""Every use of keras-tuner internals, in one place, behind a version check.

The search relies on a few keras-tuner methods that are not public API (the
oracles' random sampler and their record of tried values, the tuner's
discovery of the search space) and on one fix of a keras-tuner print. They
are overridden here and nowhere else, for the keras-tuner versions in
TESTED_VERSIONS; importing this module with another version raises a one-line
ImportError naming the installed version and the tested range.
"""
import keras_tuner
from keras_tuner import errors as kt_errors

from resnet_keras import errors

# The keras-tuner releases whose internals match the overrides below (the
# same range as setup.cfg's requirement).
TESTED_VERSIONS = ((1, 4, 7), (1, 5))  # min <= version < max
TESTED_SPEC = ">=1.4.7,<1.5"


class KerasTunerVersionError(errors.MissingExtra):
    """The installed keras-tuner is outside the tested range."""


def check_version(version):
    """Raise :class:`KerasTunerVersionError` unless VERSION is in the tested range."""
    from packaging.version import InvalidVersion, Version

    try:
        release = Version(str(version)).release
    except InvalidVersion:
        release = None
    low, high = TESTED_VERSIONS
    if release is None or not low <= release < high:
        raise KerasTunerVersionError(
            f"resnet_keras.tuning needs keras-tuner{TESTED_SPEC} (the versions it is tested "
            f"on); installed: {version}. Install a tested one: "
            f"pip install 'keras-tuner{TESTED_SPEC}'")


check_version(keras_tuner.__version__)


class ResamplingOracle:
    """Oracle mixin: random candidates refused by :meth:`accept_values` are
    recorded as tried (never proposed again) and resampled.

    Subclasses implement ``accept_values(values) -> bool`` and
    ``resampling_failed() -> str`` (the message when no candidate is accepted
    after ``max_resamples`` samples).
    """

    max_resamples = 200

    def accept_values(self, values):
        return True

    def resampling_failed(self):
        return f"no acceptable candidate after {self.max_resamples} samples"

    def admit(self, values):
        """Whether :meth:`accept_values` accepts VALUES; refused values are
        recorded as tried."""
        if self.accept_values(values):
            return True
        self._tried_so_far.add(self._compute_values_hash(values))
        return False

    def random_values(self):
        """Random values of the space that :meth:`accept_values` accepts, or
        None when the space is exhausted."""
        return self._random_values()

    # keras-tuner's private sampler: RandomSearch, Hyperband and the
    # Bayesian oracle's initial points all draw their candidates from it.
    def _random_values(self):
        for _ in range(self.max_resamples):
            values = super()._random_values()
            if values is None or self.admit(values):
                return values
        raise kt_errors.FatalValueError(self.resampling_failed())

    # keras-tuner's private record of a trial's values, which first calls
    # HyperParameters.ensure_active_values: swapped for a name-aware one.
    def _record_values(self, trial):
        hps = trial.hyperparameters
        hps.ensure_active_values = lambda: ensure_active_values(hps)
        try:
            super()._record_values(trial)
        finally:
            del hps.ensure_active_values


def ensure_active_values(hps):
    """Keep exactly the active values of ``hps``, name by name.

    keras-tuner's ``HyperParameters.ensure_active_values`` drops a value when
    an inactive hyperparameter of the same name (another conditional branch,
    e.g. ``groups`` for another bottleneck width) follows the active one;
    here a name is active when any of its branches is.
    """
    names = {param.name for param in hps.space}
    while True:
        active = {param.name for param in hps.space if hps.is_active(param)}
        stale = [name for name in hps.values if name in names and name not in active]
        for name in stale:
            del hps.values[name]
        missing = [param for param in hps.space
                   if hps.is_active(param) and param.name not in hps.values]
        for param in missing:
            hps.values.setdefault(param.name, param.random_sample())
        if not stale and not missing:
            return hps


def set_max_trials(oracle, max_trials):
    """Cap the trials of an oracle whose constructor takes no ``max_trials``
    (Hyperband): the base Oracle reads this attribute before each trial."""
    oracle.max_trials = max_trials


class DeclaredSpaceTuner(keras_tuner.Tuner):
    """A Tuner whose hypermodel declares its whole space in
    ``declare_hyperparameters`` (every conditional branch in one pass).

    keras-tuner's private ``_populate_initial_space`` discovers conditional
    hyperparameters by building the model again and again; here one
    declaration pass registers them all and no model is built.
    """

    def _populate_initial_space(self):
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)


def silence_condition_debug_print():
    """keras-tuner 1.4 prints each condition's first value whenever it sends a
    trial over gRPC (a leftover ``print`` in ``Parent.to_proto``); mute it."""
    from keras_tuner.src.engine import conditions

    conditions.print = lambda *args, **kwargs: None
