"""The parameter / multiply-add budget of a search and its cost cache.

A candidate's cost is measured by building its model (no training) and
counting its parameters and multiply-adds per image
(:func:`resnet_keras.count_macs`); each architecture is built once.
"""
import json

import keras_tuner

from resnet_keras import errors, models
from resnet_keras import specs as specs_lib
from resnet_keras.tuning import hyperparameters as hp_lib

# Names whose largest value gives the cheapest model (the rest: smallest).
_CHEAPEST_IS_MAX = ("groups", "output_stride")
# Names whose values are ranked by cost, cheapest first.
_CHEAPEST_FIRST = {"attention": ("none", "eca", "se"), "stem": ("imagenet", "deep", "cifar"),
                   "shortcut": ("pad", "projection", "avgpool")}


class Budget:
    """``max_params`` / ``max_flops`` (None: no limit) for the candidates of a space.

    Args:
        max_params, max_flops: the limits.
        input_shape: the size the candidates are built and counted at.
        candidate_of: ``hp -> Candidate`` (the hypermodel's ``candidate``).
        build: ``Candidate -> keras.Model``.
    """

    def __init__(self, max_params, max_flops, input_shape, candidate_of, build):
        self.max_params = max_params
        self.max_flops = max_flops
        self.input_shape = input_shape
        self._candidate_of = candidate_of
        self._build = build
        self._costs = {}

    @property
    def limited(self):
        return bool(self.max_params or self.max_flops)

    def cost(self, candidate):
        """``(parameters, multiply-adds per image)`` of ``candidate``."""
        key = json.dumps([candidate.model_name, candidate.model_kwargs], sort_keys=True)
        if key not in self._costs:
            model = self._build(candidate)
            self._costs[key] = (int(model.count_params()), int(models.count_macs(model)))
            del model
        return self._costs[key]

    def violation(self, hp):
        """Why the candidate in ``hp`` cannot be trained (over budget, invalid), or None."""
        try:
            candidate = self._candidate_of(hp)
            specs_lib.resolve_spec(candidate.model_name, **candidate.model_kwargs)
            if not self.limited:
                return None
            params, flops = self.cost(candidate)
        except ValueError as err:
            return f"invalid candidate: {errors.first_line(err)}"
        return self.over(candidate, params, flops)

    def over(self, candidate, params, flops):
        """The limit that ``(params, flops)`` exceed, as a sentence, or None."""
        if self.max_params and params > self.max_params:
            return (f"{candidate.describe()} has {params:,} parameters > "
                    f"max_params={self.max_params:,}")
        if self.max_flops and flops > self.max_flops:
            return (f"{candidate.describe()} has {flops:,} multiply-adds > "
                    f"max_flops={self.max_flops:,}")
        return None

    def check_feasible(self, space):
        """ValueError if no candidate of ``space`` fits the budget.

        Tries the cheapest corner of each family and block: smallest depths
        and width, largest groups and output stride.
        """
        if not self.limited:
            return
        smallest = None
        for values in cheapest_values(space):
            hp = space.copy()
            hp.values = values
            candidate = self._candidate_of(hp)
            try:
                params, flops = self.cost(candidate)
            except ValueError:
                continue
            if self.over(candidate, params, flops) is None:
                return
            if smallest is None or (params, flops) < smallest[1:]:
                smallest = (candidate, params, flops)
        detail = ("" if smallest is None else f"; the smallest, {smallest[0].describe()}, has "
                  f"{smallest[1]:,} parameters and {smallest[2]:,} multiply-adds")
        raise ValueError(
            f"no candidate fits max_params={self.max_params} max_flops={self.max_flops} at "
            f"input {self.input_shape[0]}x{self.input_shape[1]}{detail}")


class BudgetMethods:
    """The budget's methods of a hypermodel that has a :class:`Budget` as
    ``budget`` and a ``candidate(hp)`` method."""

    def cost(self, hp):
        """``(parameters, multiply-adds per image)`` of the candidate in ``hp``."""
        return self.budget.cost(self.candidate(hp))

    def candidate_cost(self, candidate):
        """``(parameters, multiply-adds per image)`` of a candidate."""
        return self.budget.cost(candidate)

    def budget_violation(self, hp):
        """Why the candidate in ``hp`` cannot be trained (over budget, invalid), or None."""
        return self.budget.violation(hp)

    def check_feasible(self, space):
        """ValueError if no candidate of ``space`` fits the budget."""
        self.budget.check_feasible(space)


def cheapest_values(space):
    """Per family and block, the values of the cheapest candidate of ``space``."""
    for family in hp_lib.space_values(space, "family"):
        for block in hp_lib.space_values(space, "block"):
            pinned = {"family": family, "block": block}
            hps = keras_tuner.HyperParameters()
            for param in space.space:
                hps.merge([param])
                if hps.is_active(param):
                    hps.values[param.name] = pinned.get(param.name, _cheapest(param))
            yield hps.values


def _cheapest(param):
    values = hp_lib.possible_values(param)
    if hp_lib.is_fixed(param):
        return values[0]
    if param.name in _CHEAPEST_FIRST:
        return min(values, key=_CHEAPEST_FIRST[param.name].index)
    return max(values) if param.name in _CHEAPEST_IS_MAX else min(values)
