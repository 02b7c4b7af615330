"""Recipe options of the full CIFAR-10 schedule: weight averaging (EMA),
Nesterov momentum, mirror-image evaluation, a held-out validation slice, and
the precision a resumed run keeps. References are computed here with numpy
from the weights the trainer produced step by step."""
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from resnet_keras import cli, data as data_lib, preprocessing, rundir, train as train_lib
from resnet_keras.training import recipe as recipe_lib

TINY = {"depths": [1, 1, 1]}
DECAY = 0.9
STEPS = 4  # steps per epoch


class _Recorder:
    """After every step, the numpy values of the watched weights of the model
    the trainer built (captured through build_classifier)."""

    def __init__(self, monkeypatch):
        self.model, self.steps = None, []
        build = recipe_lib.build_classifier

        def capture(*args, **kwargs):
            self.model = build(*args, **kwargs)
            self.initial = self.values()
            return self.model

        monkeypatch.setattr(recipe_lib, "build_classifier", capture)

    def watched(self, model=None):
        model = model or self.model
        bn = next(layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
        return [model.get_layer("predictions").kernel, bn.moving_mean, bn.gamma]

    def values(self, model=None):
        return [np.array(v.numpy(), np.float64) for v in self.watched(model)]

    def on_train_batch_end(self, step, logs):
        self.steps.append((step, self.values()))


def _ema_reference(initial, steps, decay=DECAY):
    """min(decay, (1 + t) / (10 + t)) averaging of the weights after step t."""
    average = [np.array(v) for v in initial]
    for step, values in steps:
        d = min(decay, (1.0 + step) / (10.0 + step))
        average = [d * a + (1.0 - d) * v for a, v in zip(average, values)]
    return average


def _train(cifar_subset, model_dir, **kwargs):
    options = dict(epochs=1, batch_size=10, steps_per_epoch=STEPS, seed=0, model_kwargs=TINY,
                   strategy="one-device", verbose=0, learning_rate=0.05)
    options.update(kwargs)
    return train_lib.train("resnet20", f"folder:{cifar_subset}", model_dir=str(model_dir),
                           **options)


@pytest.fixture(scope="module")
def ema_run(cifar_subset, tmp_path_factory):
    """One epoch with the EMA, then a resumed second epoch; the weights of every step."""
    monkeypatch = pytest.MonkeyPatch()
    model_dir = tmp_path_factory.mktemp("ema") / "run"
    try:
        first = _Recorder(monkeypatch)
        _train(cifar_subset, model_dir, ema_decay=DECAY, eval_flip=True, callbacks=[first])
        after_first = keras.saving.load_model(rundir.path(str(model_dir), rundir.FINAL_MODEL))
        second = _Recorder(monkeypatch)
        result = _train(cifar_subset, model_dir, epochs=2, ema_decay=DECAY, eval_flip=True,
                        callbacks=[second])
    finally:
        monkeypatch.undo()
    return dict(model_dir=str(model_dir), first=first, second=second, result=result,
                after_first=after_first)


def test_ema_follows_its_formula_and_survives_a_resume(ema_run):
    first, second = ema_run["first"], ema_run["second"]
    assert [s for s, _ in first.steps] == [1, 2, 3, 4]
    assert [s for s, _ in second.steps] == [5, 6, 7, 8]
    # The saved model of the first epoch holds the average, not the live weights.
    expected = _ema_reference(first.initial, first.steps)
    for got, want in zip(first.values(ema_run["after_first"]), expected):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert np.abs(first.steps[-1][1][0] - expected[0]).max() > 1e-3  # they differ
    # Resumed: the average continues from the checkpoint (not from the live weights).
    expected = _ema_reference(first.initial, first.steps + second.steps)
    final = keras.saving.load_model(rundir.path(ema_run["model_dir"], rundir.FINAL_MODEL))
    for got, want in zip(first.values(final), expected):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    for got, want in zip(first.values(ema_run["result"].model), expected):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_ema_run_records_the_live_accuracy_and_its_recipe(ema_run):
    record = ema_run["result"].history[-1]
    assert {"val_accuracy_live", "val_loss_live"} <= set(record)
    assert record["val_loss"] != record["val_loss_live"]
    with open(rundir.path(ema_run["model_dir"], rundir.CONFIG_FILE)) as f:
        recipe = json.load(f)["recipe"]
    assert recipe["ema_decay"] == DECAY and recipe["eval_flip"] is True
    assert recipe["nesterov"] is False


def _manual_loss_and_top1(model, images, labels, flip):
    probabilities = model.predict(images, verbose=0).astype(np.float64)
    if flip:
        probabilities = 0.5 * (probabilities
                               + model.predict(images[:, :, ::-1], verbose=0).astype(np.float64))
    loss = -np.mean(np.log(probabilities[np.arange(len(labels)), labels]))
    return loss, np.mean(probabilities.argmax(-1) == labels)


def test_flip_evaluation_averages_each_image_with_its_mirror(ema_run, cifar_subset):
    model, _ = rundir.load_trained_model(ema_run["model_dir"])
    data = data_lib.load_dataset(f"folder:{cifar_subset}")
    batches = list(data_lib.eval_pipeline(data.eval, 32, 64).as_numpy_iterator())
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    for flip in (True, False):
        metrics = train_lib.evaluate(ema_run["model_dir"], f"folder:{cifar_subset}", flip=flip)
        loss, top1 = _manual_loss_and_top1(model, images, labels, flip)
        assert metrics["flip"] is flip and metrics["count"] == len(labels) == 40
        assert metrics["loss"] == pytest.approx(loss, abs=1e-4)
        assert metrics["top1"] == pytest.approx(top1)
    # By default, evaluate as the run did (its recipe has eval_flip).
    assert train_lib.evaluate(ema_run["model_dir"], f"folder:{cifar_subset}")["flip"] is True


def test_mirrored_ema_matches_the_formula(cifar_subset, tmp_path, monkeypatch):
    recorder = _Recorder(monkeypatch)
    _train(cifar_subset, tmp_path / "run", strategy="mirrored", num_cpu_replicas=2,
           ema_decay=DECAY, callbacks=[recorder])
    expected = _ema_reference(recorder.initial, recorder.steps)
    final = keras.saving.load_model(str(tmp_path / "run" / rundir.FINAL_MODEL))
    kernel, _, gamma = recorder.values(final)
    # Trainable weights are the same on both replicas, so is their average.
    np.testing.assert_allclose(kernel, expected[0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(gamma, expected[2], rtol=0, atol=1e-5)


def test_nesterov_momentum_matches_its_update_rule():
    recipe = train_lib.default_recipe(nesterov=True, learning_rate=0.5, batch_size=8,
                                      num_train=100, steps_per_epoch=10, total_steps=10)
    assert recipe.nesterov
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    model.layers[0].kernel.assign([[1.0]])
    optimizer = train_lib.make_optimizer(recipe, 0.5, model)
    w, v = 1.0, 0.0
    for grad in (0.2, -0.1, 0.4):
        optimizer.apply_gradients([(tf.constant([[grad]]), model.layers[0].kernel)])
        v = 0.9 * v - 0.5 * grad
        w = w + 0.9 * v - 0.5 * grad  # Nesterov: the look-ahead step
        assert float(model.layers[0].kernel.numpy()[0, 0]) == pytest.approx(w, abs=1e-6)
    with pytest.raises(ValueError, match="Nesterov momentum .* is an SGD option"):
        train_lib.default_recipe(optimizer="adamw", nesterov=True, batch_size=8,
                                 num_train=100, steps_per_epoch=10, total_steps=10)
    with pytest.raises(ValueError, match=r"EMA decay \(--ema-decay\) must be a finite number "
                                         r"in \[0, 1\)"):
        train_lib.default_recipe(ema_decay=1.0, batch_size=8, num_train=100,
                                 steps_per_epoch=10, total_steps=10)


def test_holdout_validates_on_the_last_training_images(cifar_subset, tmp_path):
    result = _train(cifar_subset, tmp_path / "run", holdout=20, steps_per_epoch=None,
                    epochs=1, batch_size=20)
    config = result.config
    assert config["train_examples"] == 80 and config["holdout"] == 20
    assert config["eval_split"] == "train[80:]" and config["steps_per_epoch"] == 4
    # The run's validation loss is the final model's loss on the last 20 train images.
    splits, class_names = data_lib.read_image_folder(cifar_subset)
    held = splits["train"]
    paths = held.paths[80:]
    labels = np.array([class_names.index(name) for name in held.labels[80:]])
    images = np.stack([
        preprocessing.eval_transform(tf.io.decode_jpeg(tf.io.read_file(p), 3), 32)
        for p in paths])
    loss, top1 = _manual_loss_and_top1(result.model, images, labels, flip=False)
    assert result.history[-1]["val_loss"] == pytest.approx(loss, abs=1e-4)
    assert result.top1 == pytest.approx(top1)
    with pytest.raises(ValueError, match="holdout 100 leaves no training image: .* has 100; "
                                         "use a holdout below 100"):
        _train(cifar_subset, tmp_path / "other", holdout=100)


def test_cli_records_the_recipe_options(cifar_subset, tmp_path, capsys):
    model_dir = str(tmp_path / "run")
    status = cli.main(["train", "--model", "resnet20", "--dataset", f"folder:{cifar_subset}",
                       "--epochs", "1", "--batch-size", "10", "--steps-per-epoch", "2",
                       "--model-dir", model_dir, "--nesterov", "--ema-decay", "0.5",
                       "--eval-flip", "--holdout", "30", "--label-smoothing", "0.1"])
    assert status == 0, capsys.readouterr().err
    with open(rundir.path(model_dir, rundir.CONFIG_FILE)) as f:
        config = json.load(f)
    assert config["recipe"]["nesterov"] is True and config["recipe"]["ema_decay"] == 0.5
    assert config["recipe"]["eval_flip"] is True and config["holdout"] == 30
    capsys.readouterr()
    assert cli.main(["evaluate", "--model-dir", model_dir, "--dataset",
                     f"folder:{cifar_subset}", "--no-flip"]) == 0
    assert "mirror" not in capsys.readouterr().out
    assert cli.main(["evaluate", "--model-dir", model_dir, "--dataset",
                     f"folder:{cifar_subset}"]) == 0
    assert "with mirror-image averaging" in capsys.readouterr().out
    assert cli.main(["train", "--model", "resnet20", "--dataset", f"folder:{cifar_subset}",
                     "--epochs", "1", "--batch-size", "10", "--model-dir", model_dir,
                     "--ema-decay", "1.5"]) == 2
    assert "argument --ema-decay: expected a number in [0, 1), got '1.5'" in \
        capsys.readouterr().err


def test_a_resumed_run_keeps_the_precision_it_started_with(cifar_subset, tmp_path,
                                                          monkeypatch):
    model_dir = tmp_path / "run"
    _train(cifar_subset, model_dir, mixed_precision=False, steps_per_epoch=2)
    monkeypatch.setattr(recipe_lib, "default_mixed_precision", lambda *a, **k: True)
    result = _train(cifar_subset, model_dir, epochs=2, steps_per_epoch=2)
    assert result.initial_step == 2
    assert result.config["recipe"]["mixed_precision"] is False
    # A new run takes the device's default.
    fresh = _train(cifar_subset, tmp_path / "fresh", steps_per_epoch=2)
    assert fresh.config["recipe"]["mixed_precision"] is True
