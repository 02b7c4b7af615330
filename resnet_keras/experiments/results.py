"""Accuracy results: ResNet against DRN under one training protocol.

``resnet-keras results --out results/cifar10`` trains every model of a
protocol on the same data with the same recipe and seed, then writes:

    OUT/results.md                 the table, the published anchors, the command
    OUT/results.csv                one row per model
    OUT/results.json               rows plus per-epoch curves
    OUT/accuracy_vs_epochs.png     validation top-1 after each epoch
    OUT/accuracy_vs_flops.png      final top-1 against forward FLOPs per image
    OUT/runs/<label>/              each model's training run (resumable)
    OUT/<label>/                   where the protocol keeps models: the final
                                   model, run_config.json and result.json

Finished models are kept: rerunning the same command resumes an interrupted
model from its last checkpoint and skips the finished ones, so a protocol
can be run in several sittings. The protocols are data
(:mod:`~resnet_keras.experiments.protocols`); the report is written by
:mod:`~resnet_keras.experiments.report`.
"""
import json
import os
import shlex
import shutil
import time

from resnet_keras import data as data_lib
from resnet_keras import models, rundir, train as train_lib
from resnet_keras.experiments.measure import machine_line
from resnet_keras.experiments.protocols import DEFAULT_PROTOCOL, get_protocol
from resnet_keras.experiments.report import table_markdown, write_json, write_report

RESULT_FILE = "result.json"


class _Curve:
    """Per-epoch test accuracy and elapsed seconds, kept in RUN_DIR/curve.json.

    A resumed run continues the curve (and the clock) where it stopped.
    """

    def __init__(self, run_dir):
        self.path = os.path.join(run_dir, "curve.json")
        self.points = []
        if os.path.isfile(self.path):
            with open(self.path) as f:
                self.points = json.load(f)
        self.offset = self.points[-1]["seconds"] if self.points else 0.0
        self.started = time.time()

    def on_epoch_end(self, epoch, logs):
        self.points = [p for p in self.points if p["epoch"] < logs["epoch"]]
        point = {"epoch": logs["epoch"], "top1": logs["val_accuracy"],
                 "top5": logs["val_top5"], "train_accuracy": logs["accuracy"],
                 "seconds": self.offset + time.time() - self.started}
        if "val_accuracy_live" in logs:  # without the weight average
            point["top1_live"] = logs["val_accuracy_live"]
        self.points.append(point)
        write_json(self.path, self.points)


def _select(protocol, labels):
    entries = protocol.entries
    if not labels:
        return entries
    known = [e.label for e in entries]
    unknown = [label for label in labels if label not in known]
    if unknown:
        raise ValueError(f"unknown model label {unknown[0]!r} in protocol "
                         f"{protocol.name!r}; choices: {', '.join(known)}")
    return tuple(e for e in entries if e.label in labels)


def _model_cost(entry, image_size, classes):
    model = models.build_model(entry.model, classes=classes,
                               input_shape=(image_size, image_size, 3),
                               **dict(entry.overrides))
    return model.count_params(), models.count_macs(model)


def _finished_row(out_dir, entry, identity):
    """ENTRY's row in OUT_DIR if it finished with IDENTITY (on any device: the row
    records its precision and machine)."""
    path = os.path.join(out_dir, "runs", entry.label, RESULT_FILE)
    if not os.path.isfile(path):
        # A kept model's copy of its row (committed with the model) counts too,
        # so a fresh checkout of OUT does not train it again.
        path = os.path.join(out_dir, entry.label, RESULT_FILE)
        if not os.path.isfile(path):
            return None
    with open(path) as f:
        row = json.load(f)
    return row if row.get("identity") == identity else None


def entry_recipe(entry, protocol):
    """The train() options of ENTRY: the protocol's recipe, then the entry's own."""
    return {**dict(protocol.recipe), **dict(entry.recipe)}


def _identity(entry, protocol, dataset, epochs, train_subset, steps_per_epoch, holdout=None):
    identity = {"protocol": protocol.name, "model": entry.model,
                "overrides": dict(entry.overrides), "dataset": dataset,
                "epochs": epochs or entry.epochs, "train_subset": train_subset,
                "steps_per_epoch": steps_per_epoch}
    if entry.mixed_precision is not None:
        identity["mixed_precision"] = entry.mixed_precision
    if entry.seed is not None:
        identity["seed"] = entry.seed
    recipe = entry_recipe(entry, protocol)
    if recipe:
        identity["recipe"] = recipe
    if holdout:
        identity["holdout"] = holdout
    return identity


def row_precision(entry, finished, requested=None, resuming=False):
    """The ``mixed_precision`` ENTRY trains at (None: the trainer decides).

    The entry's own setting comes first. An interrupted run (RESUMING) keeps
    the precision it started with. A new row takes REQUESTED
    (``--mixed-precision``), else the precision of the protocol's FINISHED rows
    when they share one, so that its rows are compared at one precision
    whatever this device's default, else the device's default.
    """
    if entry.mixed_precision is not None:
        return bool(entry.mixed_precision)
    if resuming:
        return None
    if requested is not None:
        return bool(requested)
    precisions = {row["precision"] for row in finished
                  if "mixed_precision" not in row["identity"]}  # not those pinned
    return precisions.pop() != "float32" if len(precisions) == 1 else None


def _precision_note(label, mixed_precision):
    """The line that says row LABEL trains at the precision of its protocol's
    finished rows, not this device's default; None when they agree."""
    default = train_lib.default_mixed_precision()
    if mixed_precision in (None, default):
        return None
    chosen, other = (train_lib.precision_policy(mixed_precision),
                     train_lib.precision_policy(default))
    flag = "--no-mixed-precision" if mixed_precision else "--mixed-precision"
    speed = " (emulated on this CPU, so slower)" if chosen == "mixed_bfloat16" else ""
    return (f"[{label}] trains in {chosen}{speed}, the precision of this protocol's "
            f"finished rows, not this device's default {other}; {flag} trains in {other}")


def run_entry(entry, protocol, dataset, out_dir, *, epochs=None, train_subset=None,
              steps_per_epoch=None, strategy="auto", holdout=None, finished=(),
              mixed_precision=None, verbose=1):
    """Train one entry (or reuse its finished result); its result row.

    An interrupted run resumes from its last checkpoint at the precision it
    started with, whatever this device's default. A new one trains at the
    precision of the protocol's FINISHED rows (see :func:`row_precision`).
    """
    epochs = epochs or entry.epochs
    run_dir = os.path.join(out_dir, "runs", entry.label)
    identity = _identity(entry, protocol, dataset, epochs, train_subset, steps_per_epoch,
                         holdout)
    done = _finished_row(out_dir, entry, identity)
    if done:
        if verbose:
            print(f"[{entry.label}] finished earlier: top-1 {done['top1']:.4f}", flush=True)
        return done
    if verbose:
        print(f"[{entry.label}] training {entry.model} {dict(entry.overrides) or ''} "
              f"for {epochs} epoch(s)", flush=True)
    resuming = os.path.isfile(os.path.join(run_dir, rundir.CONFIG_FILE))
    follows = not resuming and entry.mixed_precision is None and mixed_precision is None
    mixed_precision = row_precision(entry, finished, mixed_precision, resuming)
    note = _precision_note(entry.label, mixed_precision) if follows else None
    if note and verbose:
        print(note, flush=True)
    os.makedirs(run_dir, exist_ok=True)
    curve = _Curve(run_dir)
    result = train_lib.train(
        entry.model, dataset, epochs=epochs, batch_size=protocol.batch_size,
        model_dir=run_dir, image_size=protocol.image_size, strategy=strategy,
        seed=protocol.seed if entry.seed is None else entry.seed, train_subset=train_subset,
        steps_per_epoch=steps_per_epoch, model_kwargs=dict(entry.overrides),
        mixed_precision=mixed_precision, holdout=holdout, callbacks=[curve],
        verbose=verbose, **entry_recipe(entry, protocol))
    params, macs = _model_cost(entry, protocol.image_size, result.config["num_classes"])
    gains = _gains(result, run_dir, dataset, holdout)
    row = {
        "label": entry.label, "model": entry.model, "overrides": dict(entry.overrides),
        "pair": entry.pair, "params": params, "macs": macs, "flops": 2 * macs,
        "epochs": epochs, "steps": result.steps,
        "wall_time": curve.points[-1]["seconds"] if curve.points else result.wall_time,
        "images_per_second": result.images_per_second, "top1": result.top1,
        "precision": train_lib.precision_policy(result.config["recipe"]["mixed_precision"]),
        "top5": result.top5, "best_top1": result.best_top1, "identity": identity,
        "curve": curve.points, "seed": result.config["seed"],
        "group": entry.group or entry.label, "holdout": holdout,
        "recipe_changes": dict(entry.recipe),
        "eval_split": result.config["eval_split"], "machine": machine_line(),
        **gains}
    write_json(os.path.join(run_dir, RESULT_FILE), row)
    if protocol.keep_models:
        _keep_model(run_dir, os.path.join(out_dir, entry.label))
    return row


def _gains(result, run_dir, dataset, holdout):
    """Top-1 without the weight average and without flip averaging, where the
    recipe has them (measured on the test split; not for holdout runs)."""
    recipe, gains = result.config["recipe"], {}
    last = result.history[-1] if result.history else {}
    if recipe.get("ema_decay") and "val_accuracy_live" in last:
        gains["top1_live"] = last["val_accuracy_live"]
    if recipe.get("eval_flip") and not holdout:
        gains["top1_no_flip"] = train_lib.evaluate(run_dir, dataset, flip=False)["top1"]
    return gains


def _keep_model(run_dir, target):
    """Copy RUN_DIR's final model, run_config.json and result row to TARGET
    (small enough to commit; ``resnet-keras evaluate --model-dir TARGET``
    reproduces the row)."""
    os.makedirs(target, exist_ok=True)
    for name in (rundir.FINAL_MODEL, rundir.CONFIG_FILE, RESULT_FILE):
        shutil.copyfile(os.path.join(run_dir, name), os.path.join(target, name + ".tmp"))
        os.replace(os.path.join(target, name + ".tmp"), os.path.join(target, name))


def reproduce_command(out_dir, protocol, dataset=None, epochs=None, train_subset=None,
                      steps_per_epoch=None, holdout=None, mixed_precision=None):
    """The ``resnet-keras results`` command line that gives these results."""
    parts = ["resnet-keras", "results", "--out", out_dir]
    for flag, value in (("--protocol", None if protocol == DEFAULT_PROTOCOL else protocol),
                        ("--dataset", dataset), ("--epochs", epochs),
                        ("--train-subset", train_subset),
                        ("--steps-per-epoch", steps_per_epoch), ("--holdout", holdout)):
        if value is not None:
            parts += [flag, str(value)]
    if mixed_precision is not None:
        parts.append("--mixed-precision" if mixed_precision else "--no-mixed-precision")
    return shlex.join(parts)


def run_protocol(out_dir, protocol=DEFAULT_PROTOCOL, dataset=None, *, labels=None,
                 epochs=None, train_subset=None, steps_per_epoch=None, strategy="auto",
                 holdout=None, mixed_precision=None, verbose=1):
    """Train the protocol's models and write the table and plots to OUT_DIR.

    ``dataset`` defaults to the offline CIFAR-10 copy (:func:`data.local_cifar10`).
    ``labels`` picks a subset of the protocol's models; ``epochs``,
    ``train_subset`` and ``steps_per_epoch`` shorten every run (for trials);
    ``holdout=N`` validates on the last N training images instead of the test
    split (to choose a recipe; default: the protocol's ``holdout``, if any).
    ``mixed_precision`` sets the precision of new rows (default: that of the
    protocol's finished rows, see :func:`row_precision`).
    Returns the rows of the models run. The report covers every model of the
    protocol finished with these settings (also in earlier sittings) and is
    rewritten after each model, so a long protocol shows results as they come.
    """
    spec = get_protocol(protocol)
    entries = _select(spec, labels)
    if epochs is not None and (not isinstance(epochs, int) or epochs < 1):
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    command = reproduce_command(out_dir, spec.name, dataset, epochs, train_subset,
                                steps_per_epoch, holdout, mixed_precision)
    holdout = holdout or spec.holdout
    dataset = dataset or data_lib.local_cifar10()
    data_lib.parse_dataset_spec(dataset)
    os.makedirs(out_dir, exist_ok=True)

    def finished_rows():
        found = (_finished_row(out_dir, other, _identity(
            other, spec, dataset, epochs, train_subset, steps_per_epoch, holdout))
            for other in spec.entries)
        return [row for row in found if row]

    rows = []
    for entry in entries:
        rows.append(run_entry(entry, spec, dataset, out_dir, epochs=epochs,
                              train_subset=train_subset, steps_per_epoch=steps_per_epoch,
                              strategy=strategy, holdout=holdout, finished=finished_rows(),
                              mixed_precision=mixed_precision, verbose=verbose))
        write_report(out_dir, spec, finished_rows(), dataset, command)
    return rows


def results_main(args):
    """``resnet-keras results``: run a protocol, print where its report is."""
    rows = run_protocol(args.out, args.protocol, args.dataset, labels=args.models,
                        epochs=args.epochs, train_subset=args.train_subset,
                        steps_per_epoch=args.steps_per_epoch, strategy=args.strategy,
                        holdout=args.holdout, mixed_precision=args.mixed_precision,
                        verbose=0 if args.quiet else 1)
    print(table_markdown(rows))
    print(f"report: {os.path.join(args.out, 'results.md')}")
    return 0
