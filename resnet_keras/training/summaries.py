"""TensorBoard logs of a run: MODEL_DIR/logs/train and MODEL_DIR/logs/validation."""
import json
import os

import numpy as np
import tensorflow as tf

from resnet_keras import rundir
from resnet_keras.conventions import DEFAULT_CONVENTION, restore_pixels

SAMPLE_IMAGES = 8


class Logs:
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
        """CONFIG (the run_config.json object) as text and as HParams, and a few
        de-normalised input images."""
        from tensorboard.plugins.hparams import api as hp

        with self.train.as_default(step=step):
            text = json.dumps(config, indent=2, sort_keys=True)
            tf.summary.text("run_config", "```\n" + text + "\n```")
            hp.hparams(_hparams(config), trial_id=os.path.basename(
                os.path.abspath(config.get("model_dir", "run"))))
            if images is not None:
                convention = config.get("preprocessing") or DEFAULT_CONVENTION
                pixels = np.clip(restore_pixels(images, convention) / 255.0, 0.0, 1.0)
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
