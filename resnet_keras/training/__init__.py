"""The trainer's parts; :mod:`resnet_keras.train` is their public face.

    config       TrainConfig and its sections: every option, declared once
    record       run_config.json: the resolved config and the facts of a run
    strategy     tf.distribute strategies, TF_CONFIG, the chief
    recipe       recipe defaults, learning-rate schedule, optimizer, precision
    steps        replica train / evaluation steps, metric sums, the weight average
    checkpoints  the backup/ checkpoints: restore, fall back, save safely
    summaries    TensorBoard logs
    loop         the epoch loop: progress, validation, best model, signals
    trainer      train(), evaluate(), export_trained()
    commands     resnet-keras train / evaluate

Importing this package loads only its config module.
"""
from resnet_keras.training.config import (DataConfig, ModelConfig, Recipe, RunOptions,
                                          TrainConfig)

__all__ = ["DataConfig", "ModelConfig", "Recipe", "RunOptions", "TrainConfig"]
