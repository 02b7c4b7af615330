"""TensorBoard's HParams dashboard for a search: the experiment (every
hyperparameter's domain, the metrics) and one session per trial."""
import glob
import os

from resnet_keras.tuning import hyperparameters as hp_lib

SESSION_METRICS = ("val_accuracy", "params", "flops", "wall_time")
_DISPLAY_NAMES = {"val_accuracy": "val top-1", "params": "parameters",
                  "flops": "multiply-adds", "wall_time": "time (s)"}


def _domain(params):
    from tensorboard.plugins.hparams import api as hp_api

    if all(hp_lib.is_float(p) for p in params):
        configs = [p.get_config() for p in params]
        return hp_api.RealInterval(float(min(c["min_value"] for c in configs)),
                                   float(max(c["max_value"] for c in configs)))
    values = []
    for param in params:
        values += [v for v in hp_lib.possible_values(param) if v not in values]
    return hp_api.Discrete(sorted(values))


def write_hparams_config(logdir, space):
    """The HParams experiment: every hyperparameter's domain and the trial metrics."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp_api

    if glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
        return
    by_name = {}
    for param in space.space:
        by_name.setdefault(param.name, []).append(param)
    hparams = [hp_api.HParam(name, _domain(params)) for name, params in by_name.items()]
    metrics = [hp_api.Metric(name, display_name=_DISPLAY_NAMES[name])
               for name in SESSION_METRICS]
    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default():
        hp_api.hparams_config(hparams=hparams, metrics=metrics)
    writer.close()


def write_session(logdir, trial_id, values, metrics):
    """One HParams session: the trial's hyperparameters and its metric values."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp_api

    hparams = {k: v for k, v in values.items() if not k.startswith("tuner/")}
    writer = tf.summary.create_file_writer(os.path.join(logdir, f"trial_{trial_id}"))
    with writer.as_default(step=int(metrics.get("epochs") or 0)):
        hp_api.hparams(hparams, trial_id=f"trial_{trial_id}")
        for name in SESSION_METRICS:
            tf.summary.scalar(name, float(metrics[name]))
    writer.close()
