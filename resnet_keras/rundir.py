"""Layout of a training run's ``--model-dir``, shared by train, evaluate and export.

    MODEL_DIR/run_config.json   what was trained: model name and arguments,
                                dataset, class names, image size, recipe
    MODEL_DIR/best.keras        best model so far by validation accuracy
    MODEL_DIR/model.keras       model at the end of the last finished run
    MODEL_DIR/backup/           fault-tolerance state (resume after a kill)
    MODEL_DIR/logs/             TensorBoard event files
"""
import json
import os

CONFIG_FILE = "run_config.json"
BEST_MODEL = "best.keras"
FINAL_MODEL = "model.keras"
BACKUP_DIR = "backup"
LOG_DIR = "logs"


def path(model_dir, name):
    return os.path.join(model_dir, name)


def read_run_config(model_dir):
    """The run's config dict; ValueError if MODEL_DIR holds no training run."""
    config_path = path(model_dir, CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise ValueError(
            f"model dir {model_dir!r} holds no training run (no {CONFIG_FILE}); "
            "train one with 'resnet-keras train --model-dir ...'")
    with open(config_path) as f:
        return json.load(f)


def write_run_config(model_dir, config):
    """Write the config atomically (a reader never sees half a file)."""
    os.makedirs(model_dir, exist_ok=True)
    tmp = path(model_dir, CONFIG_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    os.replace(tmp, path(model_dir, CONFIG_FILE))


def trained_model_path(model_dir):
    """best.keras if present, else model.keras; ValueError if neither exists."""
    for name in (BEST_MODEL, FINAL_MODEL):
        candidate = path(model_dir, name)
        if os.path.isfile(candidate):
            return candidate
    raise ValueError(
        f"model dir {model_dir!r} holds no saved model ({BEST_MODEL} or {FINAL_MODEL})")


def load_trained_model(model_dir):
    """(keras model, run config) of the best or final model in MODEL_DIR."""
    import keras

    config = read_run_config(model_dir)
    model = keras.saving.load_model(trained_model_path(model_dir), compile=False)
    return model, config
