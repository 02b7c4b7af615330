"""The tuner: each trial is one :func:`resnet_keras.train.train` run."""
import os
import shutil

import keras_tuner
from keras_tuner import errors as kt_errors

from resnet_keras import errors, rundir
from resnet_keras import train as train_lib
from resnet_keras.tuning import _keras_tuner_compat as compat
from resnet_keras.tuning import checks, hparams
from resnet_keras.tuning import report as report_lib
from resnet_keras.tuning.oracles import (BayesianOracle, BudgetMixin, HyperbandOracle,
                                         RandomOracle)
from resnet_keras.tuning.space import HyperResNet

TUNERS = ("hyperband", "bayesian", "random")
OBJECTIVE = "val_accuracy"
RESULTS_FILE = "results.csv"
TENSORBOARD_DIR = "tensorboard"


def distributed_role():
    """'chief', 'worker' or 'standalone', from keras-tuner's environment variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "standalone"
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


class ResNetTuner(compat.DeclaredSpaceTuner):
    """Runs each trial through :func:`resnet_keras.train.train`.

    ``search(dataset, epochs=..., batch_size=..., **train_kwargs)`` passes
    the keyword arguments to ``train`` for every trial (``image_size`` is the
    hypermodel's). Each trial returns val_accuracy (the objective), params,
    flops (multiply-adds), wall_time and epochs.
    """

    def __init__(self, oracle, hypermodel, **kwargs):
        if not isinstance(hypermodel, HyperResNet):
            raise ValueError(f"hypermodel must be a HyperResNet, got {type(hypermodel).__name__}")
        if isinstance(oracle, BudgetMixin):
            oracle.budget_model = hypermodel
        if distributed_role() != "standalone":
            compat.silence_condition_debug_print()
        super().__init__(oracle, hypermodel, **kwargs)
        self.trials_run = []

    @property
    def role(self):
        return distributed_role()

    @property
    def tensorboard_dir(self):
        return os.path.join(str(self.directory), TENSORBOARD_DIR)

    def search(self, *fit_args, **fit_kwargs):
        """Run the search: trials until max_trials (or the oracle) stops it."""
        if self.role != "worker":
            self.hypermodel.check_feasible(self.oracle.get_space())
            hparams.write_hparams_config(self.tensorboard_dir, self.oracle.get_space())
        super().search(*fit_args, **fit_kwargs)

    def run_trial(self, trial, dataset, **train_kwargs):
        hp = trial.hyperparameters
        candidate = self.hypermodel.candidate(hp)
        reason = self.hypermodel.budget_violation(hp)
        if reason:
            raise kt_errors.FailedTrialError(f"rejected before training: {reason}")
        params, flops = self.hypermodel.candidate_cost(candidate)
        model_dir = self.get_trial_dir(trial.trial_id)
        kwargs = dict(train_kwargs, image_size=self.hypermodel.input_shape[0])
        if "tuner/epochs" in hp.values:
            kwargs["epochs"] = int(hp.values["tuner/epochs"])
            self._warm_start(hp.values.get("tuner/trial_id"), model_dir)
        result = _train(candidate, dataset, model_dir, kwargs)
        metrics = {"val_accuracy": float(result.best_top1), "params": params, "flops": flops,
                   "wall_time": float(result.wall_time), "epochs": result.epochs}
        self.trials_run.append(trial.trial_id)
        hparams.write_session(self.tensorboard_dir, trial.trial_id, hp.values, metrics)
        return metrics

    def _warm_start(self, parent_id, model_dir):
        """Start a promoted Hyperband trial from its parent's checkpoint."""
        backup = rundir.path(model_dir, rundir.BACKUP_DIR)
        if not parent_id or os.path.isdir(backup):
            return
        parent = os.path.join(str(self.project_dir), f"trial_{parent_id}")
        if not os.path.isdir(rundir.path(parent, rundir.BACKUP_DIR)):
            return
        shutil.copytree(rundir.path(parent, rundir.BACKUP_DIR), backup)
        if os.path.isfile(rundir.path(parent, rundir.BEST_MODEL)):
            shutil.copy2(rundir.path(parent, rundir.BEST_MODEL),
                         rundir.path(model_dir, rundir.BEST_MODEL))

    def load_model(self, trial):
        """The trial's best (else final) trained model."""
        return rundir.load_trained_model(self.get_trial_dir(trial.trial_id))[0]

    # Results --------------------------------------------------------------
    def results(self):
        """One dict per trial, in trial order (see :data:`RESULT_COLUMNS`)."""
        return [report_lib.result_row(self.hypermodel, self.oracle.trials[k])
                for k in sorted(self.oracle.trials)]

    def best_trial(self):
        """The completed trial with the highest val_accuracy; ValueError if none."""
        trials = [t for t in self.oracle.get_best_trials(1) if t.status == "COMPLETED"]
        if not trials:
            raise ValueError(f"no completed trial in {self.project_dir}")
        return trials[0]

    def report(self, path=None, stream=None):
        """Print the results table and write it as CSV (default DIRECTORY/results.csv)."""
        rows = self.results()
        path = path or os.path.join(str(self.directory), RESULTS_FILE)
        report_lib.write_csv(rows, path)
        best = next((t.trial_id for t in self.oracle.get_best_trials(1)
                     if t.status == "COMPLETED"), None)
        print(report_lib.format_table(rows, best), file=stream, flush=True)
        print(f"results: {path}  tensorboard: {self.tensorboard_dir}", file=stream, flush=True)
        return rows

    def export_best(self, export_dir):
        """Export the best trial's model for TF Serving; returns the version folder."""
        trial = self.best_trial()
        return train_lib.export_trained(self.get_trial_dir(trial.trial_id), export_dir)


def _train(candidate, dataset, model_dir, kwargs):
    """One trial's training run; keras-tuner's errors for a failed or a bad trial."""
    try:
        result = train_lib.train(
            candidate.model_name, dataset, model_dir=model_dir,
            model_kwargs=candidate.model_kwargs, learning_rate=candidate.learning_rate,
            weight_decay=candidate.weight_decay, **kwargs)
    except train_lib.TrainingDiverged as err:
        raise kt_errors.FailedTrialError(str(err)) from None
    except ValueError as err:  # bad input: every trial would fail the same way
        raise kt_errors.FatalValueError(errors.first_line(err)) from None
    if result.best_top1 is None:
        raise kt_errors.FailedTrialError("training finished without an evaluation")
    return result


def make_tuner(kind, hypermodel, directory, max_trials, *, max_epochs=None,
               project_name="search", seed=None, hyperparameters=None, overwrite=False,
               tune_new_entries=True, num_initial_points=None, factor=3):
    """A :class:`ResNetTuner` with a budget-aware oracle (objective val_accuracy, max).

    Args:
        kind: "hyperband", "bayesian" or "random".
        hypermodel: a :class:`HyperResNet`.
        directory: keras-tuner state, trial folders, results.csv, tensorboard/.
        max_trials: trials in all (a resumed search counts the earlier ones).
        max_epochs: epochs of the longest Hyperband trial (required for hyperband).
        hyperparameters: ``keras_tuner.HyperParameters`` with overrides, e.g.
            ``hp.Fixed("groups", 8)``.
        overwrite: start afresh instead of resuming what ``directory`` holds.
        num_initial_points: random trials before the Bayesian model; default
            a third of ``max_trials`` (at least 3).
    """
    checks.choice("tuner", kind, TUNERS)
    checks.positive_int("max_trials", max_trials)
    common = dict(objective=keras_tuner.Objective(OBJECTIVE, "max"), seed=seed,
                  hyperparameters=hyperparameters, tune_new_entries=tune_new_entries)
    if kind == "random":
        oracle = RandomOracle(max_trials=max_trials, **common)
    elif kind == "bayesian":
        oracle = BayesianOracle(max_trials=max_trials, **common,
                                num_initial_points=num_initial_points or max(3, max_trials // 3))
    else:
        if not max_epochs:
            raise ValueError("the hyperband tuner needs max_epochs (--epochs), the epochs of "
                             "its longest trial")
        oracle = HyperbandOracle(max_epochs=checks.positive_int("max_epochs", max_epochs),
                                 factor=factor, **common)
        compat.set_max_trials(oracle, max_trials)
    return ResNetTuner(oracle, hypermodel, directory=directory, project_name=project_name,
                       overwrite=overwrite)
