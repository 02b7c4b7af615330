"""The epoch loop of a run: training steps, progress and TensorBoard scalars,
validation at each epoch end, checkpoints, the best model, callbacks, and
SIGTERM / SIGINT.

SIGTERM (sent by Kubernetes, Slurm and spot VMs before they stop a machine)
and SIGINT (Ctrl-C) save a checkpoint at the current step, print one line
and end the run with status 143 / 130 (:class:`TrainingInterrupted`); every
worker of a cluster stops at the same step.
"""
import contextlib
import math
import os
import signal
import sys
import threading
import time

import keras
import numpy as np
import tensorflow as tf

from resnet_keras import data as data_lib
from resnet_keras import rundir
from resnet_keras.conventions import DEFAULT_CONVENTION
from resnet_keras.training.steps import Sums
from resnet_keras.training.summaries import SAMPLE_IMAGES, Logs


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
def stop_on_signals(run):
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


def check_evaluated(metrics, data):
    """ValueError if an evaluation saw no image (none of the split decoded)."""
    if not metrics.count:
        raise ValueError(
            f"no image of the {data.eval_split!r} split of {data.spec} could be decoded "
            f"({data.skipped_images} undecodable skipped); cannot evaluate on it")
    return metrics


def make_datasets(record, data, strategy, start_step):
    """(distributed training stream from START_STEP, distributed validation set)."""
    cfg, facts = record.config, record.facts
    examples, batch, size = facts.train_examples, cfg.data.batch_size, cfg.data.image_size
    holdout = cfg.data.holdout
    if holdout:  # the split is cut before decoding: see Dataset.train_slice
        cut = data.num_train - holdout
        train, evaluation = data.train_slice(0, cut).take(examples), data.train_slice(cut)
    else:
        train, evaluation = data.train.take(examples), data.eval
    buffer = data_lib.shuffle_buffer_size(examples, data.native_size)
    convention = cfg.model.preprocessing or DEFAULT_CONVENTION
    train_dist = data_lib.distribute(strategy, lambda ctx: data_lib.train_pipeline(
        train, size, batch, seed=cfg.run.seed, cache=cfg.data.cache, num_examples=examples,
        start_step=start_step, shuffle_buffer=buffer, input_context=ctx,
        convention=convention), batch)
    eval_dist = data_lib.distribute(strategy, lambda ctx: data_lib.eval_pipeline(
        evaluation, size, batch, cache=cfg.data.cache, input_context=ctx,
        convention=convention), batch)
    return train_dist, eval_dist


def _epoch_record(epoch, step, metrics, val, live):
    record = {"epoch": epoch + 1, "step": step, "loss": float(metrics["loss"]),
              "accuracy": float(metrics["accuracy"]), "val_loss": float(val.loss),
              "val_accuracy": float(val.accuracy), "val_top5": float(val.top5)}
    if live is not None:  # the same evaluation without the weight average
        record.update(val_loss_live=float(live.loss), val_accuracy_live=float(live.accuracy))
    return record


def _check_finite(interval, step, epoch, checkpoints):
    """TrainingDiverged if the loss (or any sum) of INTERVAL is not finite."""
    if not np.all(np.isfinite(np.array(interval, dtype=np.float64))):
        raise TrainingDiverged(
            f"loss is {interval.loss / interval.count} at step {step} (epoch {epoch + 1}); "
            f"training stopped and {checkpoints.kept()} (try a lower --learning-rate)")


class _Interval:
    """The step sums of one epoch, read from the device at log points only."""

    def __init__(self):
        self.pending, self.epoch = [], Sums()

    def add(self, sums):
        self.pending.append(sums)

    def collect(self):
        """The sums since the last collect (and add them to the epoch's)."""
        interval = Sums()
        for sums in self.pending:
            interval = interval.plus(sums)
        self.pending = []
        self.epoch = self.epoch.plus(interval)
        return interval


class _Reporter:
    """What a run tells: the progress bar, TensorBoard scalars, callbacks, the
    printed lines and the undecodable images met so far."""

    def __init__(self, logs, schedule, verbose, callbacks, data, spe, total):
        self.logs, self.schedule, self.verbose = logs, schedule, verbose
        self.callbacks, self.data = list(callbacks or ()), data
        self.spe, self.epochs = spe, math.ceil(total / spe)
        self.bar, self.skipped = None, 0

    def start_epoch(self, epoch):
        # A live bar on a terminal; in logs only the per-epoch line (as fit's verbose=2).
        live = bool(self.verbose) and sys.stdout.isatty()
        self.bar = keras.utils.Progbar(self.spe, stateful_metrics=["loss", "accuracy", "img/s"],
                                       verbose=1 if live else 0)
        if live:
            print(f"Epoch {epoch + 1}/{self.epochs}")

    def tick(self, step, epoch, so_far, interval, speed):
        """Progress at STEP: the epoch's means SO_FAR and the INTERVAL's (Metrics)."""
        logs = {"loss": so_far.loss, "accuracy": so_far.accuracy, "img/s": speed}
        self.bar.update(step - epoch * self.spe, list(logs.items()))
        self.logs.scalars(self.logs.train, {
            "loss": interval.loss, "accuracy": interval.accuracy,
            "learning_rate": float(self.schedule(step - 1)), "images_per_second": speed}, step)
        self.callback("on_train_batch_end", step, dict(logs))

    def end_epoch(self, epoch, step, metrics, val, live):
        """Log and print the epoch; its history record."""
        self.logs.scalars(self.logs.train, {
            "epoch_loss": metrics["loss"], "epoch_accuracy": metrics["accuracy"]}, step)
        self.logs.scalars(self.logs.validation, {
            "epoch_loss": val.loss, "epoch_accuracy": val.accuracy, "epoch_top5": val.top5},
            step)
        skipped = self.data.skipped_images
        if skipped > self.skipped:
            print(f"warning: {self.data.skipped_report()}", file=sys.stderr)
            self.skipped = skipped
        self.say(f"epoch {epoch + 1}/{self.epochs}: "
                 f"{metrics['seconds']:.0f}s {metrics['images_per_second']:.0f} img/s  "
                 f"loss {metrics['loss']:.4f}  accuracy {metrics['accuracy']:.4f}  "
                 f"val_loss {val.loss:.4f}  val_accuracy {val.accuracy:.4f}  "
                 f"val_top5 {val.top5:.4f}")
        record = _epoch_record(epoch, step, metrics, val, live)
        self.callback("on_epoch_end", epoch, dict(record))
        return record

    def callback(self, method, index, logs):
        for callback in self.callbacks:
            fn = getattr(callback, method, None)
            if fn is not None:
                fn(index, logs)

    def say(self, message):
        if self.verbose:
            print(message, flush=True)


class Run:
    """The epoch / step loop of one training run."""

    def __init__(self, steps, data, record, checkpoints, schedule, verbose, callbacks,
                 checkpoint_every):
        self.loop, self.data, self.record = steps, data, record
        self.checkpoints, self.chief = checkpoints, checkpoints.chief
        self.model_dir = record.config.run.model_dir
        self.batch_size = record.config.data.batch_size
        self.checkpoint_every = int(checkpoint_every)
        self.logs = Logs(self.model_dir, self.chief)
        self.spe, self.total = record.config.data.steps_per_epoch, record.facts.total_steps
        self.report = _Reporter(self.logs, schedule, verbose, callbacks, data, self.spe,
                                self.total)
        self.step, self.best, self.last_eval, self.eval_dist = 0, None, None, None
        self.seen_images, self.train_seconds = 0, 0.0
        self.stop_signal = None  # set by SIGTERM / SIGINT (see stop_on_signals)
        # Another worker's stop request arrives only through the reduced flag, so a
        # cluster reads it after every step; one process reads it only once its own
        # signal came, keeping the step free of a host sync.
        self.read_stop_every_step = isinstance(
            steps.strategy, tf.distribute.MultiWorkerMirroredStrategy)

    def images_per_second(self):
        return self.seen_images / self.train_seconds if self.train_seconds else 0.0

    def fit(self, initial_step):
        """Train from ``initial_step`` to the total; per-epoch history."""
        self.step = initial_step
        best = float(self.checkpoints.best.numpy())
        self.best = best if best >= 0 else None
        strategy = self.loop.strategy
        if initial_step >= self.total:
            self.report.say(f"already trained: step {initial_step} of {self.total}")
            self.eval_dist = make_datasets(self.record, self.data, strategy, initial_step)[1]
            self.last_eval = check_evaluated(self._validate()[0], self.data)
            return []
        if initial_step:
            self.report.say(f"resuming from step {initial_step} (epoch "
                            f"{initial_step // self.spe + 1}) in {self.checkpoints.directory}")
        train_dist, self.eval_dist = make_datasets(self.record, self.data, strategy,
                                                   initial_step)
        iterator = iter(train_dist)
        history = []
        while self.step < self.total:
            epoch = self.step // self.spe
            metrics = self._train_epoch(iterator, epoch, min((epoch + 1) * self.spe, self.total))
            history.append(self._end_epoch(epoch, metrics))
        return history

    def _train_epoch(self, iterator, epoch, end):
        start, started = self.step, time.time()
        self.report.start_epoch(epoch)
        sums = _Interval()
        log_every = max(1, min(50, self.spe // 20))
        tick, tick_images = time.time(), 0
        while self.step < end:
            batch = next(iterator)
            if self.step == 0 and self.chief:
                images = self.loop.strategy.experimental_local_results(batch[0])[0]
                self.logs.run_start(self.record.to_json(), images[:SAMPLE_IMAGES].numpy(), 0)
            stop = tf.constant(0.0 if self.stop_signal is None else 1.0)
            step_sums, stops = self.loop.train_step(batch, stop)
            sums.add(step_sums)
            self.step += 1
            tick_images += self.batch_size
            reading = self.read_stop_every_step or self.stop_signal is not None
            if reading and float(stops) > 0:  # here, or on any worker of the cluster
                self._interrupt()
            if self.step % log_every and self.step % self.checkpoint_every and self.step < end:
                continue
            interval = sums.collect()
            _check_finite(interval, self.step, epoch, self.checkpoints)
            elapsed = time.time() - tick
            speed = tick_images / elapsed if elapsed > 0 else 0.0
            self.seen_images += tick_images
            self.train_seconds += elapsed
            self.report.tick(self.step, epoch, sums.epoch.metrics(), interval.metrics(), speed)
            if self.step % self.checkpoint_every == 0 and self.step < end:
                self._checkpoint()
            tick, tick_images = time.time(), 0
        seconds, done = time.time() - started, sums.epoch.metrics()
        return {"loss": done.loss, "accuracy": done.accuracy, "steps": self.step - start,
                "seconds": seconds,
                "images_per_second": done.count / seconds if seconds > 0 else 0.0}

    def _validate(self):
        """Validation metrics of the model as it is saved (with the EMA weights if
        the recipe averages them), and of the live weights when they differ."""
        live = self.loop.evaluate(self.eval_dist) if self.loop.ema is not None else None
        with self.loop.averaged_weights():
            return self.loop.evaluate(self.eval_dist), live

    def _end_epoch(self, epoch, metrics):
        val, live = self._validate()
        if not val.count:
            self._checkpoint()  # keep the epoch's training
            check_evaluated(val, self.data)
        self.last_eval = val
        improved = self.best is None or val.accuracy > self.best
        if improved:
            self.best = val.accuracy
        self._checkpoint()
        if improved and self.chief:
            with self.loop.averaged_weights():
                rundir.save_model_file(self.loop.model, self.model_dir, rundir.BEST_MODEL)
        return self.report.end_epoch(epoch, self.step, metrics, val, live)

    def _checkpoint(self):
        self.loop.sync_replicas()
        if not self.loop.weights_finite():
            raise TrainingDiverged(
                f"weights are not finite at step {self.step}; training stopped and "
                f"{self.checkpoints.kept()} (try a lower --learning-rate)")
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
