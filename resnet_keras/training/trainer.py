"""A training run from a :class:`TrainConfig` to MODEL_DIR, and the evaluation
and export of a trained MODEL_DIR.

:func:`train` checks everything it can before it writes anything (folders,
dataset, strategy, batch and holdout sizes, class names, a model dir of
another run), resolves the config's defaults against the data and the
devices (:func:`resolve`), takes MODEL_DIR's lock, restores the newest
readable checkpoint and runs the epoch loop (:mod:`.loop`).
"""
import dataclasses
import math
import os
import random
import time
from typing import Optional

import keras
import tensorflow as tf

from resnet_keras import data as data_lib
from resnet_keras import export, rundir
from resnet_keras.conventions import DEFAULT_CONVENTION
from resnet_keras.training import finetune
from resnet_keras.training import recipe as recipe_lib
from resnet_keras.training import record as record_lib
from resnet_keras.training.checkpoints import Checkpoints
from resnet_keras.training.config import Recipe, TrainConfig
from resnet_keras.training.loop import Run, check_evaluated, stop_on_signals
from resnet_keras.training.steps import ReplicaSteps
from resnet_keras.training.strategy import is_chief, make_strategy

DEFAULT_CHECKPOINT_EVERY = 500


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns. ``config`` is the run_config.json object;
    ``record`` is the same, typed."""

    model: object
    model_dir: str
    top1: Optional[float]
    top5: Optional[float]
    best_top1: Optional[float]
    epochs: int
    steps: int
    initial_step: int
    wall_time: float
    images_per_second: float
    export_path: Optional[str]
    config: dict
    history: list
    record: Optional[record_lib.RunRecord] = None


def train(model_name=None, dataset=None, config=None, *, callbacks=(), verbose=1, **options):
    """Train a model: ``train(config)`` with a :class:`TrainConfig`, or
    ``train(model_name, dataset, epochs=..., batch_size=..., model_dir=...,
    **options)`` with the config's options as keywords (on top of ``config``
    if one is given; see :class:`TrainConfig` for every option).

    Writes MODEL_DIR (see :mod:`resnet_keras.rundir`): run_config.json,
    backup/ checkpoints, logs/ for TensorBoard, best.keras (best validation
    top-1) and model.keras (final). Rerunning with the same options resumes
    from the last checkpoint. ``model_kwargs`` are extra ``build_model``
    arguments (e.g. ``{"depths": (1, 1, 1)}``); ``callbacks`` are objects with
    optional ``on_train_batch_end(step, logs)`` / ``on_epoch_end(epoch, logs)``.
    With ``export_dir``, the best model is exported for TF Serving at the end.
    ``holdout=N`` trains on all but the last N training images and validates
    on those N (choose a recipe without looking at the test split).
    ``ema_decay`` (e.g. 0.999) keeps an exponential moving average of the
    weights, which is what is evaluated, saved and exported; ``eval_flip``
    evaluates on the mean prediction of each image and its mirror image.
    ``mixed_precision=None`` takes the per-device default
    (:func:`default_mixed_precision`), or, when resuming, the precision the
    run started with.

    Returns a :class:`TrainResult`. Raises ValueError (one line) for bad
    input, before anything in MODEL_DIR is written or changed.
    """
    if isinstance(model_name, TrainConfig):
        config, model_name = model_name, None
    if options or model_name is not None or dataset is not None or config is None:
        config = TrainConfig.from_keywords(model_name, dataset, base=config, **options)
    return _train(config, callbacks, verbose)


def _train(config, callbacks, verbose):
    started = time.time()
    run = config.run
    rundir.check_writable_dir(run.model_dir, "model dir")
    rundir.check_writable_dir(run.export_dir, "export dir")
    if run.export_dir is not None:
        export.check_export_base(run.export_dir)
    data_lib.parse_dataset_spec(config.data.dataset)
    stored = record_lib.read_existing(run.model_dir)
    config = _with_precision(config, stored)
    dist = make_strategy(run.strategy, run.num_cpu_replicas)
    data = data_lib.load_dataset(config.data.dataset, config.data.data_dir)
    data_lib.check_batch_size(config.data.batch_size, dist.num_replicas_in_sync)
    _check_data(config.data, data)
    record = resolve(config, data, dist.num_replicas_in_sync, stored)
    record_lib.check_same_run(run.model_dir, stored, record)
    keras.utils.set_random_seed(record.config.run.seed)
    recipe = record.config.recipe
    chief = is_chief(dist)
    with dist.scope():
        model = recipe_lib.build_classifier(config.model.name, record.build_kwargs,
                                            recipe_lib.precision_policy(recipe.mixed_precision))
        _start_from(model, record, verbose and chief)
        schedule = recipe_lib.learning_rate_schedule(recipe, record.facts.total_steps)
        optimizer = recipe_lib.make_optimizer(recipe, schedule, model)
        steps = ReplicaSteps(dist, model, optimizer, recipe, config.data.batch_size,
                             data.num_classes)
    # One trainer per model dir; the workers of one cluster share it, the chief locks.
    lock = rundir.RunLock(run.model_dir).acquire() if chief else None
    try:
        return _train_locked(started, run.model_dir, record, data, steps, chief, schedule,
                             verbose, callbacks)
    finally:
        if lock is not None:
            lock.release()


def _start_from(model, record, verbose):
    """Load the run's weights source into MODEL (unless a checkpoint of the run
    exists: restoring it follows), then freeze what the run keeps fixed."""
    options = record.config.model
    if options.weights is not None and not Checkpoints.exist(record.config.run.model_dir):
        source = finetune.resolve_source(options.weights, options.name, record.build_kwargs)
        finetune.load_source(model, source, options.name, record.build_kwargs,
                             say=print if verbose else (lambda line: None))
        if verbose:
            print(f"starting from weights {source.spec} ({source.convention} preprocessing)")
    frozen = finetune.freeze(model, options.freeze_stages, options.freeze_bn)
    if frozen and verbose:
        print(f"frozen: {frozen} layers ({_frozen_parts(options)}); "
              f"{len(model.trainable_variables)} variables train")
    model.preprocessing = options.preprocessing


def _frozen_parts(options):
    parts = [f"stem and {options.freeze_stages} stage(s)"] if options.freeze_stages else []
    return ", ".join(parts + (["BatchNorm"] if options.freeze_bn else []))


def _with_precision(config, stored):
    """CONFIG with mixed_precision decided: as asked, else as the stored run
    started, else the device's default."""
    if config.recipe.mixed_precision is not None:
        return config
    kept = stored.config.recipe.mixed_precision if stored is not None else None
    if not isinstance(kept, bool):
        kept = recipe_lib.default_mixed_precision()
    return config.replace(recipe={"mixed_precision": kept})


def _check_data(options, data):
    """ValueError for a holdout or batch the data cannot give, or class names an
    export could not write (checked before training)."""
    holdout = options.holdout
    if holdout and holdout >= data.num_train:
        raise ValueError(f"holdout {holdout} leaves no training image: {data.spec} has "
                         f"{data.num_train}; use a holdout below {data.num_train}")
    _, num_train = _train_images(options, data)
    if not options.steps_per_epoch and options.batch_size > num_train:
        raise ValueError(
            f"batch size {options.batch_size} is larger than the {num_train} training images "
            f"of {data.spec}; use a batch size of at most {num_train} (or set steps per epoch)")
    export.check_class_names(data.class_names)


def _train_images(options, data):
    """(images before the holdout, images trained on)."""
    available = data.num_train - (options.holdout or 0)
    return available, min(options.train_subset or available, available)


def resolve(config, data, num_replicas, stored=None):
    """The :class:`RunRecord` of CONFIG on DATA: every default filled in (image
    size, steps per epoch, recipe, seed: the stored run's, else a random one)
    and the facts of the run."""
    opts, run = config.data, config.run
    size = int(opts.image_size or data.default_image_size())
    available, num_train = _train_images(opts, data)
    spe = int(opts.steps_per_epoch or max(1, num_train // opts.batch_size))
    total = run.epochs * spe
    if run.max_steps:
        total = min(total, int(run.max_steps))
    recipe = recipe_lib.resolve_recipe(config.recipe, batch_size=opts.batch_size,
                                       num_train=num_train, steps_per_epoch=spe,
                                       total_steps=total)
    seed = run.seed
    if seed is None:
        seed = stored.config.run.seed if stored is not None else None
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    resolved = config.replace(
        data={"dataset": data.spec, "image_size": size, "steps_per_epoch": spe},
        recipe=dataclasses.asdict(recipe),
        run={"seed": seed, "model_dir": os.path.abspath(run.model_dir)})
    model = config.model
    provisional = record_lib.RunRecord(resolved, record_lib.RunFacts(num_classes=data.num_classes))
    source = finetune.resolve_source(model.weights, model.name, provisional.build_kwargs)
    resolved = resolved.replace(model={
        "weights": source.spec if source else None,
        "preprocessing": model.preprocessing or (source.convention if source else None)
        or DEFAULT_CONVENTION})
    facts = record_lib.RunFacts(
        class_names=tuple(data.class_names), num_classes=data.num_classes,
        total_steps=total, train_examples=num_train,
        eval_split=f"train[{available}:]" if opts.holdout else data.eval_split,
        num_replicas=num_replicas)
    return record_lib.RunRecord(resolved, facts)


def _train_locked(started, model_dir, record, data, steps, chief, schedule, verbose,
                  callbacks):
    """The part of :func:`train` that runs holding MODEL_DIR's lock."""
    # Again, now that no other trainer can write it.
    record_lib.check_same_run(model_dir, record_lib.read_existing(model_dir), record)
    checkpoints = Checkpoints(model_dir, steps.model, steps.optimizer, chief, steps.ema)
    initial_step = checkpoints.restore()
    if chief:
        record_lib.write_record(model_dir, record)
    spe = record.config.data.steps_per_epoch
    every = record.config.run.checkpoint_every or min(spe, DEFAULT_CHECKPOINT_EVERY)
    run = Run(steps, data, record, checkpoints, schedule, verbose and chief, callbacks, every)
    try:
        with stop_on_signals(run), data.reading():  # no decodable image: ValueError
            history = run.fit(initial_step)
        if steps.ema is not None:  # the averaged weights are the trained model
            steps.ema.copy_to_model()
        export_path = _save_final(steps.model, record.config.run) if chief else None
    finally:
        run.logs.close()
    last = run.last_eval
    top1, top5 = (last.accuracy, last.top5) if last is not None else (None, None)
    record = record.with_result({"top1": top1, "top5": top5, "best_top1": run.best,
                                 "steps": run.step, "export_path": export_path})
    if chief:
        record_lib.write_record(model_dir, record)
    return TrainResult(
        model=steps.model, model_dir=model_dir, top1=top1, top5=top5, best_top1=run.best,
        epochs=math.ceil(record.facts.total_steps / spe), steps=run.step,
        initial_step=initial_step, wall_time=time.time() - started,
        images_per_second=run.images_per_second(), export_path=export_path,
        config=record.to_json(), history=history, record=record)


def _save_final(model, run):
    """model.keras (and best.keras if no evaluation saved one); export if asked."""
    rundir.save_model_file(model, run.model_dir, rundir.FINAL_MODEL)
    if not os.path.isfile(rundir.path(run.model_dir, rundir.BEST_MODEL)):
        rundir.save_model_file(model, run.model_dir, rundir.BEST_MODEL)
    return export_trained(run.model_dir, run.export_dir) if run.export_dir else None


def export_trained(model_dir, export_dir):
    """Export MODEL_DIR's best (else final) model to EXPORT_DIR/<next version>."""
    model, record = record_lib.load_trained(model_dir)
    return export.export_saved_model(model, export_dir, image_size=record.config.data.image_size,
                                     class_names=list(record.facts.class_names))


def evaluate(model_dir, dataset, data_dir=None, split=None, batch_size=128, flip=None):
    """Top-1 / top-5 of MODEL_DIR's best (else final) model on a dataset split.

    ``flip``: average each image's prediction with its mirror image's; None
    takes the run's recipe (``eval_flip``). Returns ``{"top1", "top5", "loss",
    "count", "split", "flip"}``.
    """
    model, record = record_lib.load_trained(model_dir)
    data = data_lib.load_dataset(dataset, data_dir, eval_split=split)
    trained_on = list(record.facts.class_names)
    if list(data.class_names) != trained_on:
        raise ValueError(
            f"dataset {data.spec!r} has classes {data.class_names[:5]}... but the model in "
            f"{model_dir!r} was trained on {trained_on[:5]}...")
    strategy = tf.distribute.get_strategy()
    if flip is None:
        flip = bool(record.config.recipe.eval_flip)
    recipe = Recipe(weight_decay=0.0, mixed_precision=False, eval_flip=bool(flip))
    steps = ReplicaSteps(strategy, model, None, recipe, batch_size, data.num_classes)
    size = record.config.data.image_size
    convention = record.config.model.preprocessing or DEFAULT_CONVENTION
    dist = data_lib.distribute(strategy, lambda ctx: data_lib.eval_pipeline(
        data.eval, size, batch_size, input_context=ctx, convention=convention), batch_size)
    metrics = check_evaluated(steps.evaluate(dist), data)
    return {"top1": metrics.accuracy, "top5": metrics.top5, "loss": metrics.loss,
            "count": metrics.count, "split": data.eval_split, "flip": bool(flip)}
