"""keras-tuner oracles that keep candidates within the hypermodel's budget."""
import keras_tuner

from resnet_keras.tuning import _keras_tuner_compat as compat

MAX_RESAMPLES = 200


class BudgetMixin(compat.ResamplingOracle):
    """Resample candidates whose model is over the hypermodel's budget.

    ``budget_model`` (a :class:`HyperResNet`, set by :class:`ResNetTuner`)
    judges each candidate; a rejected one is recorded as tried, so it is
    never proposed again.
    """

    budget_model = None
    max_resamples = MAX_RESAMPLES

    def accept_values(self, values):
        if self.budget_model is None:
            return True
        hp = self.get_space()
        hp.values = dict(values)
        reason = self.budget_model.budget_violation(hp)
        if reason is None:
            return True
        print(f"resampling: {reason}", flush=True)
        return False

    def resampling_failed(self):
        return (f"no candidate within the budget after {self.max_resamples} samples; raise "
                "max_params / max_flops or narrow the search space")


class RandomOracle(BudgetMixin, keras_tuner.oracles.RandomSearchOracle):
    """Random search, resampling over-budget candidates."""


class HyperbandOracle(BudgetMixin, keras_tuner.oracles.HyperbandOracle):
    """Hyperband (successive halving on epochs), resampling over-budget candidates."""


class BayesianOracle(BudgetMixin, keras_tuner.oracles.BayesianOptimizationOracle):
    """Gaussian-process Bayesian optimisation; an over-budget proposal is
    replaced by a random candidate within the budget."""

    def populate_space(self, trial_id):
        response = super().populate_space(trial_id)
        values = response.get("values")
        if response["status"] != "RUNNING" or not values or self.admit(values):
            return response
        values = self.random_values()
        if values is None:
            return {"status": "STOPPED", "values": None}
        return {"status": "RUNNING", "values": values}
