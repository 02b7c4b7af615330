"""Train and evaluate image classifiers on one device, many GPUs or many machines.

One custom training loop (``strategy.run`` + gradient all-reduce inside a
``tf.function``) serves every ``tf.distribute`` strategy, so one-device,
mirrored and multi-worker runs behave the same: metrics, checkpoints,
TensorBoard logs and resumption. (Keras 3's ``model.fit`` does not run under
``MultiWorkerMirroredStrategy``.)

    from resnet_keras import train

    result = train.train("resnet20", "cifar10", epochs=30, batch_size=128,
                         model_dir="runs/r20", label_smoothing=0.1)
    config = train.TrainConfig.from_keywords("resnet20", "cifar10", epochs=30,
                                             batch_size=128, model_dir="runs/r20")
    result = train.train(config)

Every option is a field of :class:`TrainConfig` (its sections ``model``,
``data``, ``recipe``, ``run``); MODEL_DIR/run_config.json is the run's
resolved config plus the facts of the run (:class:`RunRecord`).

Batch normalisation: each replica normalises with its own batch statistics,
as in ``model.fit``. The moving averages are averaged across replicas before
every evaluation, checkpoint and save; since the moving-average update is
linear, this equals averaging them after every step. A run on R replicas
(any mix of workers and devices) with global batch B therefore reproduces
any other run on R replicas with batch B and the same seed.

Fault tolerance: ``MODEL_DIR/backup`` holds a ``tf.train.Checkpoint`` of the
model, the optimizer and the step, written every ``checkpoint_every`` steps
and at each epoch end. Rerunning the same command resumes from it; the input
stream continues where it stopped (see :mod:`resnet_keras.data`). In
multi-worker runs the chief writes MODEL_DIR and every worker restores from
it, so MODEL_DIR must be on storage that all workers share. The two newest
checkpoints are kept; a damaged one is skipped on resume, and one that
cannot be written (a full disk) stops the run with one line, leaving the
previous checkpoint intact.

One trainer per MODEL_DIR: the training process (the chief, in multi-worker
runs) holds ``MODEL_DIR/.lock``; a second trainer is refused, naming the
holder's pid and host. The lock dies with its process, so a killed run never
blocks its resume.

SIGTERM (sent by Kubernetes, Slurm and spot VMs before they stop a machine)
and SIGINT (Ctrl-C) save a checkpoint at the current step, print one line
and end the run with status 143 / 130; every worker of a cluster stops at the
same step. Rerunning the same command resumes from that step.

The implementation lives in :mod:`resnet_keras.training`: ``config``
(TrainConfig), ``record`` (run_config.json), ``strategy``, ``recipe``
(defaults, schedule, optimizer, precision), ``steps`` (replica steps, EMA),
``checkpoints``, ``summaries`` (TensorBoard), ``loop`` (epochs, signals),
``trainer`` (train, evaluate, export) and ``commands`` (the CLI).
"""
from resnet_keras.training.checkpoints import CheckpointWriteFailed
from resnet_keras.training.commands import evaluate_main, summary_line, train_main
from resnet_keras.training.config import (DataConfig, ModelConfig, Recipe, RunOptions,
                                          TrainConfig)
from resnet_keras.training.loop import TrainingDiverged, TrainingInterrupted
from resnet_keras.training.recipe import (DEFAULT_WARMUP_FRACTION, LARGE_DATASET,
                                          NATIVE_BFLOAT16_FLAGS, WarmupDecay,
                                          build_classifier, cpu_has_native_bfloat16,
                                          default_mixed_precision, default_recipe,
                                          learning_rate_schedule, make_optimizer,
                                          precision_policy)
from resnet_keras.training.record import IDENTITY_KEYS, RunFacts, RunRecord
from resnet_keras.training.strategy import is_chief, make_strategy, parse_tf_config
from resnet_keras.training.summaries import SAMPLE_IMAGES
from resnet_keras.training.trainer import (DEFAULT_CHECKPOINT_EVERY, TrainResult, evaluate,
                                           export_trained, train)

__all__ = [
    "CheckpointWriteFailed", "DEFAULT_CHECKPOINT_EVERY", "DEFAULT_WARMUP_FRACTION",
    "DataConfig", "IDENTITY_KEYS", "LARGE_DATASET", "ModelConfig", "NATIVE_BFLOAT16_FLAGS",
    "Recipe", "RunFacts", "RunOptions", "RunRecord", "SAMPLE_IMAGES", "TrainConfig",
    "TrainResult", "TrainingDiverged", "TrainingInterrupted", "WarmupDecay",
    "build_classifier", "cpu_has_native_bfloat16", "default_mixed_precision",
    "default_recipe", "evaluate", "evaluate_main", "export_trained", "is_chief",
    "learning_rate_schedule", "make_optimizer", "make_strategy", "parse_tf_config",
    "precision_policy", "summary_line", "train", "train_main",
]
