"""Fine-tuning: --weights (a run, a file, a state dict), --freeze-stages,
--freeze-bn, the source's preprocessing, refusals before anything is written."""
import glob
import json
import os

import keras
import numpy as np
import pytest
from PIL import Image

import resnet_keras
from resnet_keras import cli, conventions, rundir
from resnet_keras import train as train_lib
from resnet_keras.export import load_serving
from resnet_keras.training import finetune
from resnet_keras.training.record import load_trained
from reference import reference_state_dict

TINY = {"depths": [1, 1, 1]}
ANIMALS = ("cat", "dog", "frog")
VEHICLES = ("airplane", "ship")


def _folder(cifar_subset, dest, classes):
    """A folder: dataset of CLASSES, as symlinks into the CIFAR subset."""
    for split in ("train", "test"):
        for name in classes:
            os.makedirs(os.path.join(dest, split, name))
            for path in sorted(glob.glob(os.path.join(cifar_subset, split, name, "*"))):
                os.symlink(path, os.path.join(dest, split, name, os.path.basename(path)))
    return f"folder:{dest}"


@pytest.fixture(scope="module")
def datasets(cifar_subset, tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune_data")
    return (_folder(cifar_subset, str(root / "animals"), ANIMALS),
            _folder(cifar_subset, str(root / "vehicles"), VEHICLES))


def _train(dataset, model_dir, **kwargs):
    options = dict(epochs=1, batch_size=8, steps_per_epoch=2, seed=0, model_kwargs=TINY,
                   strategy="one-device", verbose=0, mixed_precision=False)
    options.update(kwargs)
    return train_lib.train("resnet20", dataset, model_dir=str(model_dir), **options)


@pytest.fixture(scope="module")
def source_run(datasets, tmp_path_factory):
    """A 3-class resnet20 run on the "tf" convention (the source of the fine-tunes)."""
    model_dir = tmp_path_factory.mktemp("source") / "run"
    result = _train(datasets[0], model_dir, preprocessing="tf")
    return result, str(model_dir)


def _kernels(model, prefix):
    return {layer.name: [np.asarray(v) for v in layer.weights]
            for layer in model.layers if layer.name.startswith(prefix) and layer.weights}


def test_finetune_from_a_run_dir_with_another_class_count(source_run, datasets, tmp_path,
                                                          capsys):
    """2 classes from a 3-class run: the trunk loads, the head starts anew (one
    line says so), stem + 2 stages and every BatchNorm stay as the source's;
    the source's "tf" preprocessing is the run's, in training, evaluation and
    the export."""
    source, source_dir = source_run
    model_dir = tmp_path / "ft"
    status = cli.main(["train", "--model", "resnet20", "--dataset", datasets[1],
                       "--epochs", "1", "--batch-size", "8", "--steps-per-epoch", "2",
                       "--seed", "0", "--model-dir", str(model_dir), "--weights", source_dir,
                       "--freeze-stages", "2", "--freeze-bn", "--strategy", "one-device",
                       "--no-mixed-precision", "--export-dir", str(tmp_path / "export")])
    out, err = capsys.readouterr()
    # The source has other depths than a command-line resnet20: refused, nothing written.
    assert status == 2 and "built with {'depths': [1, 1, 1]}" in err, (out, err)
    assert not model_dir.exists()

    result = _train(datasets[1], model_dir, weights=source_dir, freeze_stages=2, freeze_bn=True,
                    verbose=1, export_dir=str(tmp_path / "export"))
    out = capsys.readouterr().out
    assert (f"weights {source_dir}: 3 classes, this run 2: the trunk is loaded and the "
            "classifier ('predictions') starts from new weights") in out
    config = json.loads((model_dir / rundir.CONFIG_FILE).read_text())
    assert (config["weights"], config["preprocessing"], config["freeze_stages"],
            config["freeze_bn"]) == (source_dir, "tf", 2, True)

    trained = keras.saving.load_model(str(model_dir / rundir.FINAL_MODEL))
    pretrained = source.model
    for prefix in ("conv1", "conv2_", "conv3_"):  # frozen: bit for bit the source's
        for name, arrays in _kernels(trained, prefix).items():
            for a, b in zip(arrays, _kernels(pretrained, prefix)[name]):
                np.testing.assert_array_equal(a, b, err_msg=name)
    moved = [name for name, arrays in _kernels(trained, "conv4_").items()
             if "conv" in name.rsplit("_", 1)[-1]
             and not np.array_equal(arrays[0], _kernels(pretrained, "conv4_")[name][0])]
    assert moved, "the last stage did not train"
    bn = [layer for layer in trained.layers
          if isinstance(layer, keras.layers.BatchNormalization)]
    source_bn = {layer.name: layer for layer in pretrained.layers}
    for layer in bn:  # statistics frozen everywhere, also in the trained stage
        np.testing.assert_array_equal(np.asarray(layer.moving_mean),
                                      np.asarray(source_bn[layer.name].moving_mean))

    # evaluate applies "tf": the same top-1 as the saved model on tf-preprocessed images
    metrics = train_lib.evaluate(str(model_dir), datasets[1])
    model, _ = load_trained(str(model_dir))
    assert model.preprocessing == "tf"
    root = datasets[1][len("folder:"):]
    images, labels = [], []
    for label, name in enumerate(sorted(VEHICLES)):
        for path in sorted(glob.glob(os.path.join(root, "test", name, "*"))):
            images.append(np.asarray(Image.open(path).convert("RGB")))
            labels.append(label)
    x = conventions.preprocess_input(np.stack(images), "tf")
    top1 = float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == np.array(labels)))
    assert metrics["top1"] == pytest.approx(top1, abs=1e-6)
    served = load_serving(result.export_path)
    probs = served.signatures["serving_default"](images=np.stack(images))["probabilities"]
    np.testing.assert_allclose(np.asarray(probs), model.predict(x, verbose=0), atol=1e-5)


def test_resume_keeps_the_start_and_refuses_other_freezing(source_run, datasets, tmp_path):
    _, source_dir = source_run
    model_dir = tmp_path / "ft"
    first = _train(datasets[1], model_dir, weights=source_dir, freeze_stages=1)
    again = _train(datasets[1], model_dir, weights=source_dir, freeze_stages=1, epochs=2)
    assert (first.steps, again.initial_step, again.steps) == (2, 2, 4)
    with pytest.raises(ValueError, match=r"holds a different run \(freeze_stages 1, not 0\)"):
        _train(datasets[1], model_dir, weights=source_dir, epochs=3)


@pytest.mark.parametrize("weights,message", [
    ("imagenet", "weights='imagenet' is not available for resnet20"),
    ("MISSING", "no such file or model dir"),
    ("OTHER_RUN", "are a resnet32 run; this run trains resnet20"),
    ("WRONG_FILE", "not fit resnet20"),
])
def test_a_bad_source_is_refused_before_anything_is_written(weights, message, datasets,
                                                            tmp_path, capsys):
    if weights == "OTHER_RUN":
        other = tmp_path / "other"
        other.mkdir()
        (other / rundir.CONFIG_FILE).write_text(json.dumps(
            {"version": 3, "model": "resnet32", "model_kwargs": {"classes": 3},
             "num_classes": 3, "dataset": "x", "image_size": 32}))
        weights = str(other)
    elif weights == "WRONG_FILE":
        weights = str(tmp_path / "resnet32.weights.h5")
        resnet_keras.resnet32(classes=2, input_shape=(32, 32, 3)).save_weights(weights)
    elif weights == "MISSING":
        weights = str(tmp_path / "missing.keras")
    model_dir = tmp_path / "run"
    status = cli.main(["train", "--model", "resnet20", "--dataset", datasets[1], "--epochs", "1",
                       "--batch-size", "8", "--model-dir", str(model_dir), "--weights", weights])
    _, err = capsys.readouterr()
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not model_dir.exists()


def test_state_dict_source_with_another_class_count(datasets, tmp_path):
    """torchvision's resnet18 state dict (1000-class fc) into a 2-class run:
    the trunk loads exactly, fc is dropped, the run records "torch"."""
    state = reference_state_dict("resnet18")
    path = str(tmp_path / "resnet18.npz")
    np.savez(path, **state)
    result = train_lib.train("resnet18", datasets[1], model_dir=str(tmp_path / "run"), epochs=1,
                             batch_size=8, steps_per_epoch=1, seed=0, strategy="one-device",
                             verbose=0, mixed_precision=False, weights=path, freeze_stages=4)
    assert result.config["preprocessing"] == "torch" and result.config["weights"] == path
    kernel = np.asarray(result.model.get_layer("conv1_conv").kernel)
    np.testing.assert_array_equal(kernel, state["conv1.weight"].transpose(2, 3, 1, 0))
    bn = result.model.get_layer("conv5_block2_2_bn")
    np.testing.assert_array_equal(np.asarray(bn.moving_mean),
                                  state["layer4.1.bn2.running_mean"])
    assert result.model.get_layer("predictions").kernel.shape == (512, 2)


def test_freeze_mirrored_two_replicas(source_run, datasets, tmp_path):
    """--freeze-bn with the fused BatchNorm under MirroredStrategy: statistics
    and scale stay the source's on both replicas."""
    source, source_dir = source_run
    result = _train(datasets[1], tmp_path / "mirrored", weights=source_dir, freeze_bn=True,
                    strategy="mirrored", num_cpu_replicas=2)
    assert result.record.facts.num_replicas == 2
    source_layers = {layer.name: layer for layer in source.model.layers}
    for layer in result.model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            for attr in ("moving_variance", "gamma"):
                np.testing.assert_array_equal(np.asarray(getattr(layer, attr)),
                                              np.asarray(getattr(source_layers[layer.name], attr)))


def test_trunk_stages_and_freeze_rules():
    model = resnet_keras.resnet50v2(classes=10, input_shape=(64, 64, 3))
    stages = finetune.trunk_stages(model)
    assert len(stages) == 5
    assert {layer.name.split("_")[0] for layer in stages[0]} == {"conv1", "pool1"}
    assert all(layer.name.startswith(("conv5_", "post_")) for layer in stages[4])
    assert any(layer.name.startswith("post_") for layer in stages[4])
    drn = resnet_keras.drn_d_22(classes=10, input_shape=(64, 64, 3))
    assert len(finetune.trunk_stages(drn)) == 9
    frozen = finetune.freeze(model, 4)
    assert frozen and [layer.name for layer in model.layers
                       if layer.weights and layer.trainable] == ["predictions"]
    with pytest.raises(ValueError, match=r"freeze stages 5: resnet50v2 has 4 stages; use 0 to 4"):
        finetune.freeze(model, 5)
