"""``resnet-keras train`` and ``resnet-keras evaluate``: the parsed command
line to the Python API and back to printed lines."""
import sys

from resnet_keras import errors, rundir
from resnet_keras.training.checkpoints import CheckpointWriteFailed
from resnet_keras.training.config import TrainConfig, keyword, option_fields
from resnet_keras.training.loop import TrainingInterrupted
from resnet_keras.training.trainer import evaluate, train


def config_from_args(args):
    """The :class:`TrainConfig` of parsed ``resnet-keras train`` arguments (every
    flag's value is at its field's keyword)."""
    values = {keyword(field): getattr(args, keyword(field))
              for _, field in option_fields() if field.metadata["flag"]}
    return TrainConfig.from_keywords(**values)


def train_main(args):
    """``resnet-keras train``: train, save, optionally export, print a summary.

    Exit status 143 / 130 after SIGTERM / SIGINT (a checkpoint was saved), 1
    (one line) when a checkpoint cannot be written.
    """
    try:
        result = train(config_from_args(args))
    except TrainingInterrupted as stop:
        return stop.code
    except CheckpointWriteFailed as err:
        print(f"resnet-keras train: error: {errors.first_line(err)}", file=sys.stderr)
        return 1
    logs = rundir.path(result.model_dir, rundir.LOG_DIR)
    print(f"TensorBoard logs: {logs}  (view with: tensorboard --logdir {logs})")
    print(summary_line(result))
    return 0


def summary_line(result):
    """One line: top-1, steps, wall time, saved model and export path."""
    top1 = "n/a" if result.top1 is None else f"{result.top1:.4f}"
    best = "n/a" if result.best_top1 is None else f"{result.best_top1:.4f}"
    where = result.export_path or rundir.path(result.model_dir, rundir.FINAL_MODEL)
    if result.record is not None:
        model, dataset = result.record.config.model.name, result.record.config.data.dataset
    else:  # a result built by hand: its run_config object
        model, dataset = result.config.get("model"), result.config.get("dataset")
    return (f"done: {model} on {dataset}: top-1 {top1} "
            f"(best {best}), {result.steps} steps, {result.wall_time:.1f} s, "
            f"{result.images_per_second:.0f} images/s; "
            f"{'exported to' if result.export_path else 'saved'} {where}")


def evaluate_main(args):
    """``resnet-keras evaluate``: print top-1 and top-5 accuracy."""
    metrics = evaluate(args.model_dir, args.dataset, args.data_dir, args.split, args.batch_size,
                       flip=args.flip)
    print(f"top-1 {metrics['top1']:.4f}  top-5 {metrics['top5']:.4f}  "
          f"loss {metrics['loss']:.4f}  on {metrics['count']} images "
          f"({args.dataset}, split {metrics['split']}"
          f"{', with mirror-image averaging' if metrics['flip'] else ''})")
    return 0
