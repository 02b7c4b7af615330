"""The transfer command: pretrain on CIFAR-10's animals, fine-tune on its vehicles."""
import contextlib
import io
import json
import os

import numpy as np
import pytest

from resnet_keras import cli, rundir
from resnet_keras.experiments import transfer

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BUDGET = transfer.Budget(pretrain_per_class=10, pretrain_epochs=1, per_class=5, epochs=1,
                         steps_per_epoch=1)
LABELS = ["scratch", "pretrained", "pretrained-frozen2"]


@pytest.fixture(scope="module")
def experiment(cifar_subset, tmp_path_factory):
    """The whole experiment on real CIFAR-10 images, one step per run."""
    out = str(tmp_path_factory.mktemp("transfer"))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rows = transfer.run_transfer(out, BUDGET, f"folder:{cifar_subset}")
    return out, rows, printed.getvalue()


def _read_json(*parts):
    with open(os.path.join(*parts)) as f:
        return json.load(f)


def _kernel(model_dir, name, layer):
    import keras

    model = keras.saving.load_model(rundir.path(model_dir, name), compile=False)
    return np.asarray(model.get_layer(layer).weights[0])


def test_class_subsets_are_links_to_the_first_images(experiment, cifar_subset):
    out, _, _ = experiment
    vehicles = os.path.join(out, "data", "vehicles-5")
    assert sorted(os.listdir(os.path.join(vehicles, "train"))) == sorted(transfer.VEHICLES)
    ships = sorted(os.listdir(os.path.join(vehicles, "train", "ship")))
    assert ships == sorted(os.listdir(os.path.join(cifar_subset, "train", "ship")))[:5]
    link = os.path.join(vehicles, "train", "ship", ships[0])
    assert os.path.islink(link)
    assert os.readlink(link) == os.path.join(cifar_subset, "train", "ship", ships[0])
    animals = os.path.join(out, "data", "animals-10", "test")
    assert sorted(os.listdir(animals)) == sorted(transfer.ANIMALS)
    assert len(os.listdir(os.path.join(animals, "cat"))) == 4  # every test image


def test_report_files_hold_the_three_curves(experiment):
    out, rows, printed = experiment
    stored = _read_json(out, "transfer.json")
    assert [r["label"] for r in stored["finetune"]] == LABELS
    assert stored["pretrain"]["train_images"] == 60 and stored["pretrain"]["test_images"] == 24
    steps = {r["steps"] for r in stored["finetune"]}
    assert steps == {1}  # the same number of steps for all three
    for run, row in zip(stored["finetune"], rows["finetune"]):
        assert [p["step"] for p in run["curve"]] == [1]
        assert run["top1"] == run["curve"][-1]["top1"] == row["top1"]
        assert run["train_images"] == 20 and run["test_images"] == 16
        assert run["learning_rate"] == transfer.FINETUNE_LEARNING_RATE
        assert run["batch_size"] == 32 and run["wall_time"] > 0
    text = open(os.path.join(out, "transfer.md")).read()
    assert f"    {stored['command']}\n" in text
    assert stored["command"].startswith(f"resnet-keras transfer --out {out} --dataset folder:")
    assert "--per-class 5 --epochs 1 --steps-per-epoch 1" in stored["command"]
    assert f"Machine: {stored['machine']}." in text
    assert "TF " in stored["machine"] and "Keras " in stored["machine"]
    assert f"Pretraining: top-1 {100 * rows['pretrain']['top1']:.2f} % on the 24" in text
    for run in stored["finetune"]:
        assert f"| {run['title']} |" in text
    with open(os.path.join(out, "transfer.png"), "rb") as f:
        assert f.read(8) == PNG_MAGIC
    assert "![transfer](transfer.png)" in text
    assert printed.count("epoch 1/1:") == 4  # progress of every run


def test_fine_tunes_start_from_the_pretrained_trunk(experiment):
    out, _, printed = experiment
    runs = os.path.join(out, "runs")
    pretrain = os.path.join(runs, transfer.PRETRAIN_LABEL)
    configs = {label: _read_json(runs, label, "run_config.json") for label in LABELS}
    assert configs["scratch"]["weights"] is None
    assert [configs[label]["weights"] for label in LABELS[1:]] == [pretrain, pretrain]
    assert [configs[label]["freeze_stages"] for label in LABELS] == [0, 0, 2]
    assert printed.count("the trunk is loaded and the classifier ('predictions') starts "
                         "from new weights") == 2
    # The frozen stem and stage 2 of (c) end where pretraining left them; stage 3 trained.
    for layer, same in (("conv1_conv", True), ("conv3_block1_1_conv", True),
                        ("conv4_block1_1_conv", False)):
        before = _kernel(pretrain, rundir.BEST_MODEL, layer)
        after = _kernel(os.path.join(runs, LABELS[2]), rundir.FINAL_MODEL, layer)
        assert np.array_equal(before, after) == same, layer


def test_rerun_skips_finished_runs(experiment, capsys):
    out, rows, _ = experiment
    results = [os.path.join(out, "runs", label, "result.json")
               for label in [transfer.PRETRAIN_LABEL] + LABELS]
    before = [os.path.getmtime(path) for path in results]
    command = _read_json(out, "transfer.json")["command"].split()[1:]
    assert cli.main(command) == 0
    printed = capsys.readouterr().out
    assert printed.count("finished earlier") == 4 and "epoch 1/1:" not in printed
    assert [os.path.getmtime(path) for path in results] == before
    assert _read_json(out, "transfer.json")["finetune"][1]["top1"] == rows["finetune"][1]["top1"]


def test_runs_of_another_budget_are_refused(experiment, capsys):
    out, _, _ = experiment
    command = _read_json(out, "transfer.json")["command"].split()[1:]
    assert cli.main(command[:-2] + ["--steps-per-epoch", "2"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "holds transfer runs with steps_per_epoch 1, not 2; use another --out or the same "
        "options")


def test_too_few_images_are_refused_before_anything_trains(cifar_subset, tmp_path, capsys):
    out = str(tmp_path / "out")
    argv = ["transfer", "--out", out, "--dataset", f"folder:{cifar_subset}",
            "--pretrain-per-class", "10", "--per-class", "11"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("resnet-keras transfer: error: per class 11: ")
    assert err.endswith("holds 10 images; use at most 10")
    assert not os.path.exists(os.path.join(out, "runs"))  # the corrected command may run
