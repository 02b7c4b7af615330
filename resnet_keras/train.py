"""Train and evaluate image classifiers on one device, many GPUs or many machines.

One custom training loop (``strategy.run`` + gradient all-reduce inside a
``tf.function``) serves every ``tf.distribute`` strategy, so one-device,
mirrored and multi-worker runs behave the same: metrics, checkpoints,
TensorBoard logs and resumption. (Keras 3's ``model.fit`` does not run under
``MultiWorkerMirroredStrategy``.)

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
it, so MODEL_DIR must be on storage that all workers share.

The two newest checkpoints are kept. On resume a damaged one (truncated,
missing files, a checkpoint list naming a file that is gone) is skipped with
a one-line warning and the newest readable one is used. A checkpoint that
cannot be written (a full disk) stops the run with one line, leaving the
previous checkpoint intact and no partial files.

One trainer per MODEL_DIR: the training process (the chief, in multi-worker
runs) holds ``MODEL_DIR/.lock``; a second trainer is refused, naming the
holder's pid and host. The lock dies with its process, so a killed run never
blocks its resume.

SIGTERM (sent by Kubernetes, Slurm and spot VMs before they stop a machine)
and SIGINT (Ctrl-C) save a checkpoint at the current step, print one line
and end the run with status 143 / 130; every worker of a cluster stops at the
same step. Rerunning the same command resumes from that step.
"""
import contextlib
import dataclasses
import glob
import json
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from resnet_keras import data as data_lib
from resnet_keras import errors, preprocessing, rundir

# Keys of run_config.json that identify a run: a model dir holding a run
# that differs in one of them is refused rather than overwritten.
IDENTITY_KEYS = ("model", "model_kwargs", "dataset", "num_classes", "holdout")
LARGE_DATASET = 100_000
DEFAULT_WARMUP_FRACTION = 0.03
DEFAULT_CHECKPOINT_EVERY = 500
SAMPLE_IMAGES = 8


@dataclasses.dataclass
class Recipe:
    """Optimiser, schedule and regularisation of a run."""

    optimizer: str
    learning_rate: float
    weight_decay: float
    schedule: str
    warmup_steps: int
    label_smoothing: float
    mixed_precision: bool
    jit_compile: bool
    nesterov: bool = False  # Nesterov momentum (SGD)
    ema_decay: float = 0.0  # exponential moving average of the weights; 0: off
    eval_flip: bool = False  # evaluate on the mean of each image and its mirror


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns."""

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


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(SystemExit):
    """SIGTERM or SIGINT stopped training after saving a checkpoint at ``step``.

    A SystemExit with status 128 + the signal number (143 for SIGTERM, 130
    for SIGINT): uncaught, it ends the process as that signal would, after
    cleaning up. Rerunning the same training resumes from ``step``.
    """

    def __init__(self, signum, step):
        super().__init__(128 + int(signum))
        self.signum, self.step = int(signum), int(step)


@contextlib.contextmanager
def _stop_on_signals(run):
    """While training, SIGTERM and SIGINT ask RUN to checkpoint and stop at the
    next step; a second signal ends the process at once. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if run.stop_signal is not None:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        run.stop_signal = signum

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            if old is not None:
                signal.signal(sig, old)


# --------------------------------------------------------------------------
# Strategies


def make_strategy(kind="auto", num_cpu_replicas=None):
    """A tf.distribute strategy: auto, one-device, mirrored or multi-worker.

    ``auto`` is mirrored with more than one GPU (or with ``num_cpu_replicas``
    > 1 and no GPU), else one-device. ``mirrored`` without GPUs splits the
    CPU into ``num_cpu_replicas`` logical devices. ``multi-worker`` reads the
    cluster from ``TF_CONFIG``. Create it before TensorFlow runs any op.
    """
    choices = ("auto", "mirrored", "multi-worker", "one-device")
    if kind not in choices:
        raise ValueError(f"unknown strategy {kind!r}; choices: {', '.join(choices)}")
    if kind == "multi-worker":
        return _multi_worker_strategy()
    gpus = tf.config.list_physical_devices("GPU")
    if kind == "auto":
        many = len(gpus) > 1 or (not gpus and (num_cpu_replicas or 1) > 1)
        kind = "mirrored" if many else "one-device"
    if kind == "one-device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if gpus:
        if num_cpu_replicas:
            print(f"note: --num-cpu-replicas ignored, using the {len(gpus)} GPU(s)",
                  file=sys.stderr)
        return tf.distribute.MirroredStrategy()
    devices = _cpu_devices(num_cpu_replicas or 1)
    return tf.distribute.MirroredStrategy(
        devices, cross_device_ops=tf.distribute.ReductionToOneDevice())


def _cpu_devices(count):
    """Names of ``count`` logical CPU devices, configuring them if TF is not started."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu) or [None]
    if len(current) != count:
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * count)
        except RuntimeError:
            have = len(tf.config.list_logical_devices("CPU"))
            if have != count and count > 1:
                raise ValueError(
                    f"--num-cpu-replicas {count}: TensorFlow already runs with {have} CPU "
                    "device(s) in this process; start a fresh process") from None
            count = min(count, have)
    return [f"/cpu:{i}" for i in range(count)]


def parse_tf_config(raw):
    """The TF_CONFIG JSON -> (cluster dict, task type, task index); ValueError if invalid."""
    if not raw:
        raise ValueError(
            "--strategy multi-worker needs TF_CONFIG, e.g. "
            '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": 0}}; it is not set')
    try:
        config = json.loads(raw)
        cluster, task = config["cluster"], config["task"]
        task_type, index = task["type"], int(task["index"])
        members = cluster[task_type]
        assert isinstance(members, list) and all(isinstance(m, str) for m in members)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise ValueError(
            f"TF_CONFIG is not valid: {raw!r}; expected JSON with cluster.<type> "
            "(a list of host:port) and task.type / task.index") from None
    if task_type not in ("chief", "worker") or not 0 <= index < len(members):
        raise ValueError(
            f"TF_CONFIG task {task!r} is not in the cluster "
            f"({', '.join(f'{k}: {len(v)}' for k, v in cluster.items())})")
    return cluster, task_type, index


def _multi_worker_strategy():
    parse_tf_config(os.environ.get("TF_CONFIG"))
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as err:
        raise ValueError(
            "--strategy multi-worker must start before TensorFlow runs any op "
            f"({errors.first_line(err)}); run it in a fresh process") from None


def is_chief(strategy):
    """True on the worker that writes files (always true off multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief" or task_type is None:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


# --------------------------------------------------------------------------
# Recipe: optimiser and learning-rate schedule


def default_recipe(*, optimizer="sgd", learning_rate=None, weight_decay=None,
                   schedule="cosine", warmup_epochs=None, label_smoothing=0.0,
                   mixed_precision=False, jit_compile=False, nesterov=False,
                   ema_decay=0.0, eval_flip=False, batch_size,
                   num_train, steps_per_epoch, total_steps):
    """Fill in the defaults: lr 0.1 * B / 256 (SGD) or 1e-3 * B / 256 (AdamW),
    weight decay by dataset size, warm-up over 3 % of the steps."""
    if optimizer not in ("sgd", "adamw"):
        raise ValueError(f"unknown optimizer {optimizer!r}; choices: sgd, adamw")
    if schedule not in ("cosine", "step"):
        raise ValueError(f"unknown schedule {schedule!r}; choices: cosine, step")
    _check_number("label smoothing (--label-smoothing)", label_smoothing, "in [0, 1)",
                  lambda v: 0.0 <= v < 1.0)
    _check_number("EMA decay (--ema-decay)", ema_decay, "in [0, 1) (0: off)",
                  lambda v: 0.0 <= v < 1.0)
    if nesterov and optimizer != "sgd":
        raise ValueError(f"Nesterov momentum (--nesterov) is an SGD option; "
                         f"optimizer is {optimizer!r}")
    for name, value, rule, test in (
            ("learning rate (--learning-rate)", learning_rate, "> 0", lambda v: v > 0),
            ("weight decay (--weight-decay)", weight_decay, ">= 0", lambda v: v >= 0),
            ("warm-up epochs (--warmup-epochs)", warmup_epochs, ">= 0", lambda v: v >= 0)):
        if value is not None:
            _check_number(name, value, rule, test)
    if learning_rate is None:
        learning_rate = (0.1 if optimizer == "sgd" else 1e-3) * batch_size / 256
    if weight_decay is None:
        weight_decay = (0.05 if optimizer == "adamw"
                        else 1e-4 if num_train >= LARGE_DATASET else 5e-4)
    if warmup_epochs is None:
        warmup = int(round(DEFAULT_WARMUP_FRACTION * total_steps))
    else:
        warmup = int(round(warmup_epochs * steps_per_epoch))
    return Recipe(optimizer=optimizer, learning_rate=float(learning_rate),
                  weight_decay=float(weight_decay), schedule=schedule,
                  warmup_steps=min(warmup, total_steps), label_smoothing=float(label_smoothing),
                  mixed_precision=bool(mixed_precision), jit_compile=bool(jit_compile),
                  nesterov=bool(nesterov), ema_decay=float(ema_decay),
                  eval_flip=bool(eval_flip))


def _check_number(name, value, rule, test):
    """ValueError unless VALUE is a finite real number passing TEST."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    if isinstance(value, bool) or number is None or not math.isfinite(number) \
            or not test(number):
        raise ValueError(f"{name} must be a finite number {rule}, got {value!r}")


@keras.saving.register_keras_serializable(package="resnet_keras")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to ``base``, then cosine decay to 0 or step decay (/10 at
    1/3 and 2/3 of the steps after warm-up)."""

    def __init__(self, base, total, warmup, kind="cosine"):
        self.base, self.total, self.warmup, self.kind = base, total, warmup, kind

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = self.base * (step + 1.0) / max(self.warmup, 1)
        progress = tf.clip_by_value(
            (step - self.warmup) / max(self.total - self.warmup, 1), 0.0, 1.0)
        if self.kind == "cosine":
            decayed = 0.5 * self.base * (1.0 + tf.cos(math.pi * progress))
        else:
            decayed = self.base * tf.pow(0.1, tf.floor(progress * 3.0))
            decayed = tf.where(progress >= 1.0, self.base * 0.01, decayed)
        return tf.where(step < self.warmup, warm, decayed)

    def get_config(self):
        return {"base": self.base, "total": self.total, "warmup": self.warmup,
                "kind": self.kind}


def learning_rate_schedule(recipe, total_steps):
    """The recipe's :class:`WarmupDecay` schedule over ``total_steps``."""
    return WarmupDecay(recipe.learning_rate, total_steps, recipe.warmup_steps, recipe.schedule)


def make_optimizer(recipe, schedule, model):
    """SGD (momentum 0.9, Nesterov's if the recipe says so) or AdamW
    (decoupled weight decay).

    For SGD the training loop adds the classic L2 term to the loss instead.
    Biases and normalisation parameters (rank <= 1) get no weight decay.
    """
    if recipe.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate=schedule,
                                           weight_decay=recipe.weight_decay)
        optimizer.exclude_from_weight_decay(var_list=_no_decay(model))
    else:
        optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=0.9,
                                         nesterov=recipe.nesterov)
    if recipe.mixed_precision and tf.config.list_physical_devices("GPU"):
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    return optimizer


def _no_decay(model):
    return [v for v in model.trainable_variables if len(v.shape) <= 1]


CPUINFO = "/proc/cpuinfo"
NATIVE_BFLOAT16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_has_native_bfloat16(cpuinfo=None):
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX).

    Reads the first ``flags`` line of ``cpuinfo`` (a path; :data:`CPUINFO`,
    Linux's /proc/cpuinfo, by default). False where it cannot be read.
    """
    try:
        with open(cpuinfo or CPUINFO) as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.split(":", 1)[0].strip() == "flags" and ":" in line), [])
    except OSError:
        return False
    return bool(NATIVE_BFLOAT16_FLAGS & set(flags))


def _has_gpu(has_gpu):
    return bool(tf.config.list_physical_devices("GPU")) if has_gpu is None else bool(has_gpu)


def default_mixed_precision(has_gpu=None, cpuinfo=None):
    """The per-device default of ``mixed_precision``, chosen from measurements.

    On CPUs with native bfloat16 (AVX-512 BF16, AMX), mixed bfloat16 trained
    faster than float32 with our trainer at the same accuracy per step (2
    cores, AVX-512 BF16: resnet50 at 224, batch 32: 11.7 against 6.7 images/s;
    resnet20 at 32, batch 128: 786 against 530; README, Benchmarks). Other
    CPUs emulate bfloat16, so they default to float32, as GPUs do until
    measured (pass ``mixed_precision=True`` for float16 there).
    ``has_gpu=None`` asks TensorFlow; ``cpuinfo`` is read as in
    :func:`cpu_has_native_bfloat16`.
    """
    return not _has_gpu(has_gpu) and cpu_has_native_bfloat16(cpuinfo)


def precision_policy(mixed_precision, has_gpu=None):
    """mixed_float16 on GPU, mixed_bfloat16 on CPU, float32 when off."""
    if not mixed_precision:
        return "float32"
    return "mixed_float16" if _has_gpu(has_gpu) else "mixed_bfloat16"


def build_classifier(model_name, model_kwargs, policy):
    """build_model under a dtype policy (restored afterwards); float32 outputs."""
    from resnet_keras import build_model

    kwargs = dict(model_kwargs)
    kwargs["input_shape"] = tuple(kwargs["input_shape"])
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        model = build_model(model_name, **kwargs)
    finally:
        keras.config.set_dtype_policy(previous)
    if model.output.dtype != "float32":
        raise ValueError(f"model {model_name!r} gives {model.output.dtype} outputs under "
                         f"{policy}; its 'predictions' layer must compute in float32")
    return model


# --------------------------------------------------------------------------
# The distributed step functions


class _Ema:
    """Exponential moving average of a model's float weights (the trainable
    ones and the BatchNorm statistics).

    Each replica updates its own copy after each step, without communication;
    reading the average (evaluation, saving, checkpoints) takes the mean over
    the replicas. The decay warms up as ``min(decay, (1 + t) / (10 + t))`` at
    step ``t``, so the first averages are not held at the initial weights.
    Create it inside the strategy's scope.
    """

    def __init__(self, model, decay):
        self.decay = float(decay)
        self.targets = [v for v in model.weights
                        if v.dtype in ("float32", "float16", "bfloat16", "float64")]
        self.averages = [
            tf.Variable(tf.identity(v.value), trainable=False, name=f"ema_{i}",
                        synchronization=tf.VariableSynchronization.ON_READ,
                        aggregation=tf.VariableAggregation.MEAN)
            for i, v in enumerate(self.targets)]

    def update(self, step):
        """In replica context, after the optimizer step number STEP."""
        t = tf.cast(step, tf.float32)
        decay = tf.minimum(self.decay, (1.0 + t) / (10.0 + t))
        for average, target in zip(self.averages, self.targets):
            value = tf.cast(target.value, average.dtype)
            average.assign(decay * average + (1.0 - decay) * value)

    def copy_to_model(self):
        """Set the model's weights to the averages (cross-replica context)."""
        for average, target in zip(self.averages, self.targets):
            target.value.assign(average.read_value())

    @contextlib.contextmanager
    def swapped_in(self):
        """The model holds the averaged weights inside the block."""
        live = [tf.identity(v.value) for v in self.targets]
        self.copy_to_model()
        try:
            yield
        finally:
            for value, target in zip(live, self.targets):
                target.value.assign(value)


class _Loop:
    """Train, evaluate and checkpoint one model on one strategy."""

    def __init__(self, strategy, model, optimizer, recipe, global_batch, num_classes):
        self.strategy, self.model, self.optimizer = strategy, model, optimizer
        self.recipe, self.global_batch, self.num_classes = recipe, global_batch, num_classes
        self.loss_fn = keras.losses.CategoricalCrossentropy(
            label_smoothing=recipe.label_smoothing, reduction=None)
        decay = recipe.weight_decay if recipe.optimizer == "sgd" else 0.0
        no_decay = {id(v) for v in _no_decay(model)}
        # SGD's L2 term, per replica (the optimizer sums gradients over replicas).
        self.l2 = decay / strategy.num_replicas_in_sync
        self.decayed = [v for v in model.trainable_variables
                        if decay and id(v) not in no_decay]
        self.averaged = [v for v in model.non_trainable_variables
                         if v.dtype in ("float32", "float16", "bfloat16", "float64")]
        self.ema = _Ema(model, recipe.ema_decay) if recipe.ema_decay else None
        grads = tf.function(self._gradients, jit_compile=True) if recipe.jit_compile \
            else self._gradients
        self._grads_fn = grads
        self.train_step = tf.function(self._train_step)
        self.eval_step = tf.function(self._eval_step)
        self.sync = tf.function(self._sync)

    def _loss(self, labels, probabilities):
        onehot = tf.one_hot(labels, self.num_classes)
        return self.loss_fn(onehot, tf.cast(probabilities, tf.float32))

    def _gradients(self, images, labels):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            probabilities = self.model(images, training=True)
            per_example = self._loss(labels, probabilities)
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch)
            if self.model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.model.losses))
            if self.decayed:
                loss += 0.5 * self.l2 * tf.add_n(
                    [tf.reduce_sum(tf.square(v.value)) for v in self.decayed])
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, variables)
        return grads, per_example, probabilities

    # No tensor-dependent Python control flow: AutoGraph need not convert it
    # (its conversion of bound methods inside strategy.run has dropped `self`).
    @tf.autograph.experimental.do_not_convert
    def _replica_train(self, images, labels, stop):
        grads, per_example, probabilities = self._grads_fn(images, labels)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        if self.ema is not None:
            self.ema.update(self.optimizer.iterations)
        loss, hits, _, count = _sums(per_example, probabilities, labels, 1)
        return loss, hits, count, tf.identity(stop)  # a per-replica value to reduce

    def _train_step(self, batch, stop):
        """One step; sums of loss, hits, count and of the replicas' STOP requests
        (so every worker of a cluster sees a stop request at the same step)."""
        results = self.strategy.run(self._replica_train, args=(*batch, stop))
        return [self.strategy.reduce("SUM", r, axis=None) for r in results]

    @tf.autograph.experimental.do_not_convert  # as _replica_train
    def _replica_eval(self, images, labels):
        # The last evaluation step can leave a replica with an empty batch,
        # which convolutions and batch norm reject: it contributes zeros.
        def run():
            probabilities = self.model(images, training=False)
            if self.recipe.eval_flip:  # the mean over each image and its mirror
                mirrored = self.model(tf.reverse(images, axis=[2]), training=False)
                probabilities = 0.5 * (tf.cast(probabilities, tf.float32)
                                       + tf.cast(mirrored, tf.float32))
            return _sums(self._loss(labels, probabilities), probabilities, labels,
                         min(5, self.num_classes))

        return tf.cond(tf.shape(images)[0] > 0, run, lambda: (tf.constant(0.0),) * 4)

    def _eval_step(self, batch):
        results = self.strategy.run(self._replica_eval, args=batch)
        return [self.strategy.reduce("SUM", r, axis=None) for r in results]

    def _sync(self):
        def average():
            context = tf.distribute.get_replica_context()
            for variable in self.averaged:
                value = variable.value
                value.assign(context.all_reduce("MEAN", tf.identity(value)))

        self.strategy.run(average)

    def sync_replicas(self):
        """Average per-replica state (BN moving statistics) across replicas."""
        if self.averaged and self.strategy.num_replicas_in_sync > 1:
            self.sync()

    def evaluate(self, dist_dataset):
        """{"loss", "accuracy", "top5", "count"} on a distributed evaluation dataset."""
        self.sync_replicas()
        totals = self.evaluation_totals(dist_dataset)
        count = max(totals[3], 1.0)
        return {"loss": totals[0] / count, "accuracy": totals[1] / count,
                "top5": totals[2] / count, "count": int(totals[3])}

    def averaged_weights(self):
        """A context in which the model holds the EMA weights (if the recipe has
        an EMA; otherwise nothing changes)."""
        return self.ema.swapped_in() if self.ema is not None else contextlib.nullcontext()

    def evaluation_totals(self, dist_dataset):
        """Sums of loss, top-1 hits, top-5 hits and images over the dataset."""
        totals = np.zeros(4)
        for batch in dist_dataset:
            totals += np.array([float(t) for t in self.eval_step(batch)])
        return totals

    def weights_finite(self):
        return all(bool(tf.reduce_all(tf.math.is_finite(v.value)))
                   for v in self.model.weights if v.dtype.startswith(("float", "bfloat")))


def _sums(per_example_loss, probabilities, labels, k):
    """Per-replica sums: loss, top-1 hits, top-k hits, count."""
    probabilities = tf.cast(probabilities, tf.float32)
    labels = tf.cast(labels, tf.int64)
    hits = tf.cast(tf.equal(tf.argmax(probabilities, axis=-1), labels), tf.float32)
    topk = tf.cast(tf.math.in_top_k(labels, probabilities, k), tf.float32)
    count = tf.cast(tf.size(labels), tf.float32)
    return (tf.reduce_sum(per_example_loss), tf.reduce_sum(hits), tf.reduce_sum(topk), count)


# --------------------------------------------------------------------------
# Run directory: config, checkpoints, saved models, TensorBoard


def check_model_dir(model_dir, config):
    """ValueError if MODEL_DIR holds a different run; the stored config otherwise."""
    if not os.path.isfile(rundir.path(model_dir, rundir.CONFIG_FILE)):
        return None
    stored = rundir.read_run_config(model_dir)
    for key in IDENTITY_KEYS:
        if _plain(stored.get(key)) != _plain(config[key]):
            raise ValueError(
                f"model dir {model_dir!r} holds a different run ({key} "
                f"{stored.get(key)!r}, not {config[key]!r}); use a new --model-dir "
                "or the same model and dataset to resume")
    return stored


def _plain(value):
    return json.loads(json.dumps(value))


def _save_model(model, model_dir, name):
    """Save a .keras file atomically (write to a temporary name, then rename)."""
    target = rundir.path(model_dir, name)
    tmp = rundir.path(model_dir, f".tmp-{os.getpid()}-{name}")
    model.save(tmp)
    os.replace(tmp, target)
    return target


class CheckpointWriteFailed(RuntimeError):
    """A checkpoint could not be written (e.g. the disk is full); the previous
    checkpoints are kept and no partial files are left."""


class _Checkpoints:
    """tf.train.Checkpoint of model, optimizer and progress in MODEL_DIR/backup.

    The two newest checkpoints are kept; a damaged newest one is skipped on
    restore with a warning. In multi-worker runs every worker saves (non-chief
    workers into a temporary folder that is then removed) and all restore
    from the chief's.
    """

    KEEP = 2

    def __init__(self, model_dir, model, optimizer, chief, ema=None):
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.best = tf.Variable(-1.0, dtype=tf.float64, trainable=False)
        extra = {"ema": ema.averages} if ema is not None else {}
        self.checkpoint = tf.train.Checkpoint(
            model=model, optimizer=optimizer, step=self.step, best=self.best, **extra)
        self.directory = rundir.path(model_dir, rundir.BACKUP_DIR)
        self.chief = chief
        self.last_saved = None  # (step, path) of the newest readable checkpoint
        self.manager = self._manager()

    def _manager(self):
        return tf.train.CheckpointManager(self.checkpoint, self.directory, max_to_keep=self.KEEP)

    def candidates(self):
        """Checkpoint prefixes in the backup folder, newest step first."""
        found = set(self.manager.checkpoints)
        if self.manager.latest_checkpoint:  # the list may name a file that is gone
            found.add(self.manager.latest_checkpoint)
        for index in glob.glob(os.path.join(glob.escape(self.directory), "ckpt-*.index")):
            found.add(index[:-len(".index")])
        numbered = []
        for prefix in found:
            try:
                numbered.append((int(prefix.rsplit("-", 1)[1]), prefix))
            except ValueError:
                continue
        return [prefix for _, prefix in sorted(numbered, reverse=True)]

    def restore(self):
        """Restore the newest readable checkpoint if any; return its step.

        A checkpoint that cannot be read (truncated, missing files) is
        skipped with a one-line warning and removed; ValueError if none can
        be read.
        """
        failures, damaged = [], []
        for prefix in self.candidates():
            try:
                self.checkpoint.restore(prefix).assert_existing_objects_matched()
            except (tf.errors.OpError, ValueError, AssertionError, IndexError,
                    RuntimeError, KeyError) as err:
                failures.append(f"{os.path.basename(prefix)}: {errors.first_line(err, 120)}")
                damaged.append(prefix)
                continue
            step = int(self.step.numpy())
            if damaged:
                print(f"warning: damaged checkpoint(s) in {self.directory} skipped"
                      f"{' and removed' if self.chief else ''} ({'; '.join(failures)}); "
                      f"resuming from {os.path.basename(prefix)} (step {step})",
                      file=sys.stderr)
                if self.chief:
                    self._forget(damaged, prefix)
            self.last_saved = (step, prefix)
            return step
        if failures:
            raise ValueError(
                f"no checkpoint in {self.directory!r} can be read ({'; '.join(failures)}); "
                "move that folder away to train from the start")
        return 0

    def _forget(self, damaged, restored):
        """Remove damaged checkpoints and list only the readable ones."""
        for prefix in damaged:
            for leftover in glob.glob(glob.escape(prefix) + ".*"):
                os.remove(leftover)
        readable = [p for p in reversed(self.candidates()) if p not in damaged]
        tf.compat.v1.train.update_checkpoint_state(
            self.directory, restored, all_model_checkpoint_paths=readable)
        self.manager = self._manager()

    def save(self, step, best):
        """Write a checkpoint at STEP; :class:`CheckpointWriteFailed` if it cannot be
        written, with the previous checkpoints intact and partial files removed."""
        self.step.assign(step)
        self.best.assign(-1.0 if best is None else best)
        if not self.chief:
            scratch = tempfile.mkdtemp(prefix="worker-backup-")
            try:
                tf.train.CheckpointManager(self.checkpoint, scratch, max_to_keep=1).save(step)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            return None
        try:
            saved = self.manager.save(checkpoint_number=step)
        except (OSError, tf.errors.OpError) as err:
            self._remove_partial(step)
            where = (f"step {self.last_saved[0]} in {self.directory}" if self.last_saved
                     else f"none yet in {self.directory}")
            raise CheckpointWriteFailed(
                f"could not write the checkpoint at step {step} "
                f"({getattr(err, 'strerror', None) or errors.first_line(err, 120)}); "
                f"the last good checkpoint is kept ({where}); free space and run the "
                "same command again to resume") from err
        self.last_saved = (step, saved)
        return saved

    def _remove_partial(self, step):
        prefix = os.path.join(self.directory, f"ckpt-{step}")
        shutil.rmtree(prefix + "_temp", ignore_errors=True)
        if prefix not in self.manager.checkpoints:
            for leftover in glob.glob(glob.escape(prefix) + ".*"):
                os.remove(leftover)


class _Logs:
    """TensorBoard writers under MODEL_DIR/logs (no-ops off the chief)."""

    def __init__(self, model_dir, chief):
        if chief:
            base = rundir.path(model_dir, rundir.LOG_DIR)
            self.train = tf.summary.create_file_writer(os.path.join(base, "train"))
            self.validation = tf.summary.create_file_writer(os.path.join(base, "validation"))
        else:
            self.train = self.validation = tf.summary.create_noop_writer()

    def scalars(self, writer, values, step):
        with writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, value)
        writer.flush()

    def run_start(self, config, images, step):
        """Config (as text and as HParams) and a few de-normalised input images."""
        from tensorboard.plugins.hparams import api as hp

        with self.train.as_default(step=step):
            text = json.dumps(config, indent=2, sort_keys=True)
            tf.summary.text("run_config", "```\n" + text + "\n```")
            hp.hparams(_hparams(config), trial_id=os.path.basename(
                os.path.abspath(config.get("model_dir", "run"))))
            if images is not None:
                mean = np.array(preprocessing.IMAGENET_MEAN, np.float32)
                std = np.array(preprocessing.IMAGENET_STD, np.float32)
                pixels = np.clip(np.asarray(images, np.float32) * std + mean, 0.0, 1.0)
                tf.summary.image("input_images", pixels, max_outputs=SAMPLE_IMAGES)
        self.train.flush()

    def close(self):
        for writer in (self.train, self.validation):
            writer.close()


def _hparams(config):
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            for sub, item in value.items():
                flat[f"{key}.{sub}"] = item
        elif key != "class_names":
            flat[key] = value
    return {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v)
            for k, v in flat.items()}


# --------------------------------------------------------------------------
# The public API


def train(model_name, dataset, *, epochs, batch_size, model_dir, data_dir=None,
          export_dir=None, image_size=None, strategy="auto", num_cpu_replicas=None,
          mixed_precision=None, jit_compile=False, optimizer="sgd", learning_rate=None,
          weight_decay=None, schedule="cosine", warmup_epochs=None, label_smoothing=0.0,
          seed=None, max_steps=None, steps_per_epoch=None, train_subset=None,
          cache=False, output_stride=None, model_kwargs=None, checkpoint_every=None,
          nesterov=False, ema_decay=0.0, eval_flip=False, holdout=None,
          callbacks=(), verbose=1):
    """Train ``model_name`` on ``dataset`` (a TFDS name or ``folder:PATH``).

    Writes MODEL_DIR (see :mod:`resnet_keras.rundir`): run_config.json,
    backup/ checkpoints, logs/ for TensorBoard, best.keras (best validation
    top-1) and model.keras (final). Rerunning with the same arguments resumes
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
    started = time.time()
    if mixed_precision is None:
        mixed_precision = _started_precision(model_dir)
    if mixed_precision is None:
        mixed_precision = default_mixed_precision()
    for name, value, optional in (
            ("epochs", epochs, False), ("batch size", batch_size, False),
            ("image size", image_size, True), ("max steps", max_steps, True),
            ("steps per epoch", steps_per_epoch, True), ("train subset", train_subset, True),
            ("checkpoint every", checkpoint_every, True), ("output stride", output_stride, True),
            ("holdout", holdout, True),
            ("CPU replicas", num_cpu_replicas, True)):
        if optional and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    rundir.check_writable_dir(model_dir, "model dir")
    rundir.check_writable_dir(export_dir, "export dir")
    if export_dir is not None:
        from resnet_keras import export

        export.check_export_base(export_dir)
    data_lib.parse_dataset_spec(dataset)
    dist = make_strategy(strategy, num_cpu_replicas)
    data = data_lib.load_dataset(dataset, data_dir)
    data_lib.check_batch_size(batch_size, dist.num_replicas_in_sync)
    _check_holdout(holdout, data)
    _check_batch_fits(batch_size, data, train_subset, steps_per_epoch, holdout)
    _check_class_names(data)
    config, recipe = _run_config(
        model_name, data, dist, dict(
            model_kwargs=model_kwargs, output_stride=output_stride, image_size=image_size,
            epochs=epochs, batch_size=batch_size, steps_per_epoch=steps_per_epoch,
            max_steps=max_steps, train_subset=train_subset, seed=seed, cache=cache,
            strategy=strategy, data_dir=data_dir, model_dir=model_dir, holdout=holdout),
        dict(optimizer=optimizer, learning_rate=learning_rate, weight_decay=weight_decay,
             schedule=schedule, warmup_epochs=warmup_epochs,
             label_smoothing=label_smoothing, mixed_precision=mixed_precision,
             jit_compile=jit_compile, nesterov=nesterov, ema_decay=ema_decay,
             eval_flip=eval_flip))
    stored = check_model_dir(model_dir, config)
    if config["seed"] is None:
        config["seed"] = (stored or {}).get("seed") or random.SystemRandom().randrange(2**31)
    keras.utils.set_random_seed(config["seed"])
    with dist.scope():
        model = build_classifier(model_name, config["model_kwargs"],
                                 precision_policy(recipe.mixed_precision))
        schedule_fn = learning_rate_schedule(recipe, config["total_steps"])
        optimizer_obj = make_optimizer(recipe, schedule_fn, model)
        loop = _Loop(dist, model, optimizer_obj, recipe, batch_size, data.num_classes)
    chief = is_chief(dist)
    # One trainer per model dir; the workers of one cluster share it, the chief locks.
    lock = rundir.RunLock(model_dir).acquire() if chief else None
    try:
        return _train_locked(started, model_dir, model, data, config, loop, chief,
                             schedule_fn, optimizer_obj, export_dir, verbose, callbacks,
                             checkpoint_every)
    finally:
        if lock is not None:
            lock.release()


def _train_locked(started, model_dir, model, data, config, loop, chief, schedule_fn,
                  optimizer_obj, export_dir, verbose, callbacks, checkpoint_every):
    """The part of :func:`train` that runs holding MODEL_DIR's lock."""
    check_model_dir(model_dir, config)  # again, now that no other trainer can write it
    checkpoints = _Checkpoints(model_dir, model, optimizer_obj, chief, loop.ema)
    initial_step = checkpoints.restore()
    if chief:
        rundir.write_run_config(model_dir, config)
    run = _Run(loop, data, config, checkpoints, schedule_fn, verbose and chief, callbacks,
               checkpoint_every or min(config["steps_per_epoch"], DEFAULT_CHECKPOINT_EVERY))
    try:
        with _stop_on_signals(run), data.reading():  # no decodable image: ValueError
            history = run.fit(initial_step)
        if loop.ema is not None:  # the averaged weights are the trained model
            loop.ema.copy_to_model()
        export_path = _save_final(model, model_dir, export_dir) if chief else None
    finally:
        run.logs.close()
    result = TrainResult(
        model=model, model_dir=model_dir, top1=run.last_eval.get("accuracy"),
        top5=run.last_eval.get("top5"), best_top1=run.best,
        epochs=math.ceil(config["total_steps"] / config["steps_per_epoch"]), steps=run.step,
        initial_step=initial_step, wall_time=time.time() - started,
        images_per_second=run.images_per_second(), export_path=export_path,
        config=config, history=history)
    if chief:
        config["result"] = {"top1": result.top1, "top5": result.top5,
                            "best_top1": result.best_top1, "steps": result.steps,
                            "export_path": export_path}
        rundir.write_run_config(model_dir, config)
    return result


def _started_precision(model_dir):
    """The mixed_precision of the run already in MODEL_DIR, if any."""
    try:
        stored = rundir.read_run_config(model_dir)
    except (OSError, ValueError):
        return None
    value = stored.get("recipe", {}).get("mixed_precision") if isinstance(stored, dict) else None
    return value if isinstance(value, bool) else None


def _check_holdout(holdout, data):
    if holdout and holdout >= data.num_train:
        raise ValueError(f"holdout {holdout} leaves no training image: {data.spec} has "
                         f"{data.num_train}; use a holdout below {data.num_train}")


def _check_batch_fits(batch_size, data, train_subset, steps_per_epoch, holdout=None):
    """ValueError if an epoch (steps_per_epoch unset) would not hold one batch."""
    available = data.num_train - (holdout or 0)
    num_train = min(train_subset or available, available)
    if not steps_per_epoch and batch_size > num_train:
        raise ValueError(
            f"batch size {batch_size} is larger than the {num_train} training images of "
            f"{data.spec}; use a batch size of at most {num_train} (or set steps per epoch)")


def _check_class_names(data):
    """ValueError for class names an export could not write (checked before training)."""
    from resnet_keras import export

    export.check_class_names(data.class_names)


def _check_evaluated(metrics, data):
    """ValueError if an evaluation saw no image (none of the split decoded)."""
    if not metrics["count"]:
        raise ValueError(
            f"no image of the {data.eval_split!r} split of {data.spec} could be decoded "
            f"({data.skipped_images} undecodable skipped); cannot evaluate on it")
    return metrics


def _run_config(model_name, data, strategy, options, recipe_options):
    """The run_config.json dict and the :class:`Recipe` of a :func:`train` call."""
    size = int(options["image_size"] or data.default_image_size())
    batch = options["batch_size"]
    holdout = options["holdout"]
    available = data.num_train - (holdout or 0)
    num_train = min(options["train_subset"] or available, available)
    spe = int(options["steps_per_epoch"] or max(1, num_train // batch))
    total = options["epochs"] * spe
    if options["max_steps"]:
        total = min(total, int(options["max_steps"]))
    recipe = default_recipe(**recipe_options, batch_size=batch, num_train=num_train,
                            steps_per_epoch=spe, total_steps=total)
    kwargs = {"classes": data.num_classes, "input_shape": [size, size, 3]}
    if options["output_stride"]:
        kwargs["output_stride"] = options["output_stride"]
    kwargs.update(options["model_kwargs"] or {})
    config = {
        "model": model_name, "model_kwargs": _plain(kwargs), "dataset": data.spec,
        "data_dir": options["data_dir"], "class_names": list(data.class_names),
        "num_classes": data.num_classes, "image_size": size, "batch_size": batch,
        "epochs": options["epochs"], "seed": options["seed"], "steps_per_epoch": spe,
        "total_steps": total, "train_examples": num_train, "holdout": holdout,
        "eval_split": f"train[{available}:]" if holdout else data.eval_split,
        "strategy": options["strategy"], "num_replicas": strategy.num_replicas_in_sync,
        "recipe": dataclasses.asdict(recipe), "cache": bool(options["cache"]),
        "model_dir": os.path.abspath(options["model_dir"])}
    return config, recipe


def _save_final(model, model_dir, export_dir):
    """model.keras (and best.keras if no evaluation saved one); export if asked."""
    _save_model(model, model_dir, rundir.FINAL_MODEL)
    if not os.path.isfile(rundir.path(model_dir, rundir.BEST_MODEL)):
        _save_model(model, model_dir, rundir.BEST_MODEL)
    return export_trained(model_dir, export_dir) if export_dir else None


def export_trained(model_dir, export_dir):
    """Export MODEL_DIR's best (else final) model to EXPORT_DIR/<next version>."""
    from resnet_keras import export

    model, config = rundir.load_trained_model(model_dir)
    return export.export_saved_model(model, export_dir, image_size=config["image_size"],
                                     class_names=config["class_names"])


class _Run:
    """The epoch / step loop of one :func:`train` call."""

    def __init__(self, loop, data, config, checkpoints, schedule, verbose, callbacks,
                 checkpoint_every):
        self.loop, self.data, self.config = loop, data, config
        self.checkpoints, self.chief = checkpoints, checkpoints.chief
        self.model_dir, self.cache = config["model_dir"], config["cache"]
        self.schedule, self.callbacks = schedule, list(callbacks or ())
        self.verbose, self.checkpoint_every = verbose, int(checkpoint_every)
        self.logs = _Logs(self.model_dir, self.chief)
        self.spe, self.total = config["steps_per_epoch"], config["total_steps"]
        self.step, self.best, self.last_eval = 0, None, {}
        self.seen_images, self.train_seconds = 0, 0.0
        self.skipped = 0
        self.stop_signal = None  # set by SIGTERM / SIGINT (see _stop_on_signals)
        # Another worker's stop request arrives only through the reduced flag, so a
        # cluster reads it after every step; one process reads it only once its own
        # signal came, keeping the step free of a host sync.
        self.read_stop_every_step = isinstance(
            loop.strategy, tf.distribute.MultiWorkerMirroredStrategy)

    def images_per_second(self):
        return self.seen_images / self.train_seconds if self.train_seconds else 0.0

    def _datasets(self, start_step):
        cfg, data = self.config, self.data
        train = data.train.take(cfg["train_examples"])
        holdout = cfg.get("holdout")
        evaluation = data.train.skip(data.num_train - holdout) if holdout else data.eval
        strategy, batch, size = self.loop.strategy, cfg["batch_size"], cfg["image_size"]
        buffer = data_lib.shuffle_buffer_size(cfg["train_examples"], data.native_size)
        train_dist = data_lib.distribute(strategy, lambda ctx: data_lib.train_pipeline(
            train, size, batch, seed=cfg["seed"], cache=self.cache,
            num_examples=cfg["train_examples"], start_step=start_step,
            shuffle_buffer=buffer, input_context=ctx), batch)
        eval_dist = data_lib.distribute(strategy, lambda ctx: data_lib.eval_pipeline(
            evaluation, size, batch, cache=self.cache, input_context=ctx), batch)
        return train_dist, eval_dist

    def fit(self, initial_step):
        """Train from ``initial_step`` to the total; per-epoch history."""
        self.step = initial_step
        best = float(self.checkpoints.best.numpy())
        self.best = best if best >= 0 else None
        if initial_step >= self.total:
            self._say(f"already trained: step {initial_step} of {self.total}")
            self.eval_dist = self._datasets(initial_step)[1]
            self.last_eval = _check_evaluated(self._validate()[0], self.data)
            return []
        if initial_step:
            self._say(f"resuming from step {initial_step} (epoch "
                      f"{initial_step // self.spe + 1}) in {self.checkpoints.directory}")
        train_dist, self.eval_dist = self._datasets(initial_step)
        iterator = iter(train_dist)
        history = []
        while self.step < self.total:
            epoch = self.step // self.spe
            end = min((epoch + 1) * self.spe, self.total)
            metrics = self._train_epoch(iterator, epoch, end)
            history.append(self._end_epoch(epoch, metrics))
        return history

    def _train_epoch(self, iterator, epoch, end):
        start, started = self.step, time.time()
        # A live bar on a terminal; in logs only the per-epoch line (as fit's verbose=2).
        live = bool(self.verbose) and sys.stdout.isatty()
        bar = keras.utils.Progbar(self.spe, stateful_metrics=["loss", "accuracy", "img/s"],
                                  verbose=1 if live else 0)
        if live:
            print(f"Epoch {epoch + 1}/{math.ceil(self.total / self.spe)}")
        totals, pending = np.zeros(3), []
        log_every = max(1, min(50, self.spe // 20))
        tick, tick_images = time.time(), 0
        while self.step < end:
            batch = next(iterator)
            if self.step == 0 and self.chief:
                self._log_run_start(batch)
            stop = tf.constant(0.0 if self.stop_signal is None else 1.0)
            *sums, stops = self.loop.train_step(batch, stop)
            pending.append(sums)
            self.step += 1
            tick_images += self.config["batch_size"]
            reading = self.read_stop_every_step or self.stop_signal is not None
            if reading and float(stops) > 0:  # here, or on any worker of the cluster
                self._interrupt()
            if self.step % log_every and self.step % self.checkpoint_every and self.step < end:
                continue
            interval = np.sum([[float(t) for t in r] for r in pending], axis=0)
            pending = []
            self._check_finite(interval, epoch)
            totals += interval
            elapsed = time.time() - tick
            speed = tick_images / elapsed if elapsed > 0 else 0.0
            self.seen_images += tick_images
            self.train_seconds += elapsed
            logs = {"loss": totals[0] / totals[2], "accuracy": totals[1] / totals[2],
                    "img/s": speed}
            bar.update(self.step - epoch * self.spe, list(logs.items()))
            self.logs.scalars(self.logs.train, {
                "loss": interval[0] / interval[2], "accuracy": interval[1] / interval[2],
                "learning_rate": float(self.schedule(self.step - 1)),
                "images_per_second": speed}, self.step)
            self._callbacks("on_train_batch_end", self.step, dict(logs))
            if self.step % self.checkpoint_every == 0 and self.step < end:
                self._checkpoint()
            tick, tick_images = time.time(), 0
        seconds = time.time() - started
        return {"loss": totals[0] / max(totals[2], 1), "accuracy": totals[1] / max(totals[2], 1),
                "steps": self.step - start, "seconds": seconds,
                "images_per_second": totals[2] / seconds if seconds > 0 else 0.0}

    def _validate(self):
        """Validation metrics of the model as it is saved (with the EMA weights if
        the recipe averages them), and of the live weights when they differ."""
        live = self.loop.evaluate(self.eval_dist) if self.loop.ema is not None else None
        with self.loop.averaged_weights():
            return self.loop.evaluate(self.eval_dist), live

    def _end_epoch(self, epoch, metrics):
        val, live = self._validate()
        if not val["count"]:
            self._checkpoint()  # keep the epoch's training
            _check_evaluated(val, self.data)
        self.last_eval = val
        improved = self.best is None or val["accuracy"] > self.best
        if improved:
            self.best = val["accuracy"]
        self._checkpoint()
        if improved and self.chief:
            with self.loop.averaged_weights():
                _save_model(self.loop.model, self.model_dir, rundir.BEST_MODEL)
        self.logs.scalars(self.logs.train, {
            "epoch_loss": metrics["loss"], "epoch_accuracy": metrics["accuracy"]}, self.step)
        self.logs.scalars(self.logs.validation, {
            "epoch_loss": val["loss"], "epoch_accuracy": val["accuracy"],
            "epoch_top5": val["top5"]}, self.step)
        self._report_skipped()
        record = {"epoch": epoch + 1, "step": self.step, "loss": float(metrics["loss"]),
                  "accuracy": float(metrics["accuracy"]), "val_loss": float(val["loss"]),
                  "val_accuracy": float(val["accuracy"]), "val_top5": float(val["top5"])}
        if live is not None:  # the same evaluation without the weight average
            record.update(val_loss_live=float(live["loss"]),
                          val_accuracy_live=float(live["accuracy"]))
        self._say(f"epoch {epoch + 1}/{math.ceil(self.total / self.spe)}: "
                  f"{metrics['seconds']:.0f}s {metrics['images_per_second']:.0f} img/s  "
                  f"loss {metrics['loss']:.4f}  accuracy {metrics['accuracy']:.4f}  "
                  f"val_loss {val['loss']:.4f}  val_accuracy {val['accuracy']:.4f}  "
                  f"val_top5 {val['top5']:.4f}")
        self._callbacks("on_epoch_end", epoch, dict(record))
        return record

    def _checkpoint(self):
        self.loop.sync_replicas()
        if not self.loop.weights_finite():
            raise TrainingDiverged(
                f"weights are not finite at step {self.step}; training stopped and "
                f"{self._kept()} (try a lower --learning-rate)")
        self.checkpoints.save(self.step, self.best)

    def _interrupt(self):
        """Save a checkpoint at the current step and stop (SIGTERM / SIGINT)."""
        signum = self.stop_signal or signal.SIGTERM
        self._checkpoint()
        name = signal.Signals(signum).name if self.stop_signal else "a signal to another worker"
        where = self.checkpoints.directory if self.chief else "the chief's model dir"
        print(f"stopped by {name} at step {self.step} of {self.total}: checkpoint saved "
              f"in {where}; run the same command again to resume", file=sys.stderr,
              flush=True)
        raise TrainingInterrupted(signum, self.step)

    def _kept(self):
        """Where the last good state is, as the end of a sentence."""
        if self.checkpoints.last_saved:
            step, prefix = self.checkpoints.last_saved
            return f"the last good checkpoint is kept (step {step}, {prefix})"
        return "no checkpoint had been written yet (a rerun starts from step 0)"

    def _check_finite(self, interval, epoch):
        if not np.all(np.isfinite(interval)):
            raise TrainingDiverged(
                f"loss is {interval[0] / interval[2]} at step {self.step} (epoch {epoch + 1}); "
                f"training stopped and {self._kept()} (try a lower --learning-rate)")

    def _log_run_start(self, batch):
        images = self.loop.strategy.experimental_local_results(batch[0])[0]
        self.logs.run_start(self.config, images[:SAMPLE_IMAGES].numpy(), 0)

    def _report_skipped(self):
        skipped = self.data.skipped_images
        if skipped > self.skipped:
            print(f"warning: {self.data.skipped_report()}", file=sys.stderr)
            self.skipped = skipped

    def _callbacks(self, method, index, logs):
        for callback in self.callbacks:
            fn = getattr(callback, method, None)
            if fn is not None:
                fn(index, logs)

    def _say(self, message):
        if self.verbose:
            print(message, flush=True)


# --------------------------------------------------------------------------
# Command line entry points


def train_main(args):
    """``resnet-keras train``: train, save, optionally export, print a summary.

    Exit status 143 / 130 after SIGTERM / SIGINT (a checkpoint was saved), 1
    (one line) when a checkpoint cannot be written.
    """
    try:
        result = _train_from_args(args)
    except TrainingInterrupted as stop:
        return stop.code
    except CheckpointWriteFailed as err:
        print(f"resnet-keras train: error: {errors.first_line(err)}", file=sys.stderr)
        return 1
    logs = rundir.path(result.model_dir, rundir.LOG_DIR)
    print(f"TensorBoard logs: {logs}  (view with: tensorboard --logdir {logs})")
    print(summary_line(result))
    return 0


def _train_from_args(args):
    return train(
        args.model, args.dataset, epochs=args.epochs, batch_size=args.batch_size,
        model_dir=args.model_dir, data_dir=args.data_dir, export_dir=args.export_dir,
        image_size=args.image_size, strategy=args.strategy,
        num_cpu_replicas=args.num_cpu_replicas, mixed_precision=args.mixed_precision,
        jit_compile=args.jit_compile, optimizer=args.optimizer,
        learning_rate=args.learning_rate, weight_decay=args.weight_decay,
        schedule=args.schedule, warmup_epochs=args.warmup_epochs,
        label_smoothing=args.label_smoothing, seed=args.seed, max_steps=args.max_steps,
        steps_per_epoch=args.steps_per_epoch, train_subset=args.train_subset,
        cache=args.cache, output_stride=args.output_stride,
        checkpoint_every=args.checkpoint_every, nesterov=args.nesterov,
        ema_decay=args.ema_decay, eval_flip=args.eval_flip, holdout=args.holdout)


def summary_line(result):
    """One line: top-1, steps, wall time, saved model and export path."""
    top1 = "n/a" if result.top1 is None else f"{result.top1:.4f}"
    best = "n/a" if result.best_top1 is None else f"{result.best_top1:.4f}"
    where = result.export_path or rundir.path(result.model_dir, rundir.FINAL_MODEL)
    return (f"done: {result.config['model']} on {result.config['dataset']}: top-1 {top1} "
            f"(best {best}), {result.steps} steps, {result.wall_time:.1f} s, "
            f"{result.images_per_second:.0f} images/s; "
            f"{'exported to' if result.export_path else 'saved'} {where}")


def evaluate(model_dir, dataset, data_dir=None, split=None, batch_size=128, flip=None):
    """Top-1 / top-5 of MODEL_DIR's best (else final) model on a dataset split.

    ``flip``: average each image's prediction with its mirror image's; None
    takes the run's recipe (``eval_flip``). Returns ``{"top1", "top5", "loss",
    "count", "split", "flip"}``.
    """
    model, config = rundir.load_trained_model(model_dir)
    data = data_lib.load_dataset(dataset, data_dir, eval_split=split)
    if list(data.class_names) != list(config["class_names"]):
        raise ValueError(
            f"dataset {data.spec!r} has classes {data.class_names[:5]}... but the model in "
            f"{model_dir!r} was trained on {config['class_names'][:5]}...")
    strategy = tf.distribute.get_strategy()
    if flip is None:
        flip = bool(config.get("recipe", {}).get("eval_flip", False))
    recipe = Recipe("sgd", 0.0, 0.0, "cosine", 0, 0.0, False, False, eval_flip=bool(flip))
    loop = _Loop(strategy, model, None, recipe, batch_size, data.num_classes)
    dist = data_lib.distribute(strategy, lambda ctx: data_lib.eval_pipeline(
        data.eval, config["image_size"], batch_size, input_context=ctx), batch_size)
    metrics = _check_evaluated(loop.evaluate(dist), data)
    return {"top1": metrics["accuracy"], "top5": metrics["top5"], "loss": metrics["loss"],
            "count": metrics["count"], "split": data.eval_split, "flip": bool(flip)}


def evaluate_main(args):
    """``resnet-keras evaluate``: print top-1 and top-5 accuracy."""
    metrics = evaluate(args.model_dir, args.dataset, args.data_dir, args.split, args.batch_size,
                       flip=args.flip)
    print(f"top-1 {metrics['top1']:.4f}  top-5 {metrics['top5']:.4f}  "
          f"loss {metrics['loss']:.4f}  on {metrics['count']} images "
          f"({args.dataset}, split {metrics['split']}"
          f"{', with mirror-image averaging' if metrics['flip'] else ''})")
    return 0
