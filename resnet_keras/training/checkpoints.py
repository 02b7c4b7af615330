"""Fault-tolerance state of a run: ``tf.train.Checkpoint`` of the model, the
optimizer, the step, the best validation top-1 (and the weight average) in
MODEL_DIR/backup.

The two newest checkpoints are kept. On resume a damaged one (truncated,
missing files, a checkpoint list naming a file that is gone) is skipped with
a one-line warning and the newest readable one is used. A checkpoint that
cannot be written (a full disk) raises :class:`CheckpointWriteFailed`,
leaving the previous checkpoint intact and no partial files. In
multi-worker runs the chief writes MODEL_DIR and every worker restores from
it, so MODEL_DIR must be on storage that all workers share.
"""
import glob
import os
import shutil
import sys
import tempfile

import tensorflow as tf

from resnet_keras import errors, rundir


class CheckpointWriteFailed(RuntimeError):
    """A checkpoint could not be written (e.g. the disk is full); the previous
    checkpoints are kept and no partial files are left."""


class Checkpoints:
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

    @staticmethod
    def exist(model_dir):
        """Whether MODEL_DIR's backup folder holds a checkpoint."""
        backup = rundir.path(model_dir, rundir.BACKUP_DIR)
        return bool(glob.glob(os.path.join(glob.escape(backup), "ckpt-*.index")))

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

    def kept(self):
        """Where the last good state is, as the end of a sentence."""
        if self.last_saved:
            step, prefix = self.last_saved
            return f"the last good checkpoint is kept (step {step}, {prefix})"
        return "no checkpoint had been written yet (a rerun starts from step 0)"
