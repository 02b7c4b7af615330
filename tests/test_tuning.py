"""The architecture search: space, overrides, budget, real searches, resume,
TensorBoard HParams, distributed chief/workers, the command line and the example."""
import csv
import glob
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys

import keras
import keras_tuner as kt
import pytest
import tensorflow as tf

import resnet_keras
from resnet_keras import cli, models, specs, tuning
from resnet_keras import train as train_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Tiny trials: a couple of steps on the CIFAR subset.
TINY = ["--epochs", "1", "--batch-size", "8", "--steps-per-epoch", "2", "--family", "resnet",
        "--seed", "3", "--quiet"]


def small_hypermodel(**kwargs):
    """CIFAR ResNets of one or two blocks per stage: quick to build and train."""
    return tuning.HyperResNet(10, families=("resnet",), depth_range=(1, 2), **kwargs)


def sample_values(hypermodel, count, seed=7, hyperparameters=None):
    """``count`` random candidates' values from a budget-aware RandomOracle."""
    oracle = tuning.RandomOracle(objective=kt.Objective("val_accuracy", "max"),
                                 max_trials=count, seed=seed,
                                 hyperparameters=hyperparameters)
    space = oracle.get_space()
    hypermodel.declare_hyperparameters(space)
    oracle.update_space(space)
    oracle.budget_model = hypermodel
    for _ in range(count):
        hp = oracle.get_space()
        hp.values = oracle._random_values()
        yield hp


def forbid_training(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a rejected candidate was trained")

    monkeypatch.setattr(train_lib, "train", fail)


def tiny_search_kwargs(**extra):
    return {"epochs": 1, "batch_size": 8, "steps_per_epoch": 2, "seed": 3, "verbose": 0,
            **extra}


# --------------------------------------------------------------------------
# The search space


def test_default_space_is_resnet20():
    hypermodel = resnet_keras.HyperResNet(10)
    hp = kt.HyperParameters()
    name, kwargs = hypermodel.hp_to_model_args(hp)
    assert (name, kwargs) == ("resnet20", {"depths": (3, 3, 3), "block": "basic",
                                           "output_stride": 4})
    assert hp.values == {"family": "resnet", "block": "basic", "depth_1": 3, "depth_2": 3,
                         "depth_3": 3, "output_stride": 4, "learning_rate": 0.1,
                         "weight_decay": 0.0005}
    built = hypermodel.build(hp)
    reference = models.build_model("resnet20", classes=10, input_shape=(32, 32, 3))
    assert built.count_params() == reference.count_params()
    assert hypermodel.cost(hp) == (reference.count_params(), models.count_macs(reference))


def test_build_is_uncompiled_and_fit_compiles_the_candidates_recipe():
    """keras-tuner's own tuners call build() then fit(): fit compiles the recipe."""
    hp = kt.HyperParameters()
    for stage in (1, 2, 3):
        hp.Fixed(f"depth_{stage}", 1)
    hp.Fixed("learning_rate", 0.05)
    hypermodel = small_hypermodel()
    assert not getattr(hypermodel.build(hp), "compiled", False)

    class Model:  # records what fit() does with a built model
        def compile(self, **kwargs):
            self.compiled = kwargs

        def fit(self, *args, **kwargs):
            return "history", args, kwargs

    model = Model()
    assert hypermodel.fit(hp, model, "data", epochs=1) == ("history", ("data",), {"epochs": 1})
    optimizer = model.compiled["optimizer"]
    assert isinstance(optimizer, keras.optimizers.SGD) and optimizer.momentum == 0.9
    assert float(optimizer.learning_rate) == pytest.approx(0.05)
    assert optimizer.weight_decay == pytest.approx(tuning.DEFAULT_WEIGHT_DECAY[2])
    assert model.compiled["loss"] == "sparse_categorical_crossentropy"
    assert model.compiled["metrics"] == ["accuracy"]


def test_keras_tuner_outside_the_tested_range_is_one_clear_error():
    from resnet_keras.tuning import _keras_tuner_compat as compat

    compat.check_version(kt.__version__)  # the installed one is in the range
    for version in ("1.3.5", "1.4.6", "1.5.0rc1", "2.0.0", "unknown"):
        with pytest.raises(ImportError, match=r"needs keras-tuner>=1\.4\.7,<1\.5 .*installed: "
                           + re.escape(version)) as info:
            compat.check_version(version)
        assert "\n" not in str(info.value)
    with open(os.path.join(REPO, "setup.cfg")) as f:
        assert f"keras-tuner{compat.TESTED_SPEC}\n" in f.read()  # the same range as the pin


def test_space_ranges_and_conditions():
    hp = kt.HyperParameters()
    tuning.HyperResNet(10).declare_hyperparameters(hp)
    by_name = {}
    for param in hp.space:
        by_name.setdefault(param.name, []).append(param)
    assert by_name["family"][0].values == ["resnet", "drn_c", "drn_d"]
    assert by_name["block"][0].values == ["basic", "bottleneck"]
    resnet_depth, drn_depth = by_name["depth_1"]
    assert (resnet_depth.min_value, resnet_depth.max_value, resnet_depth.default) == (1, 9, 3)
    assert (drn_depth.min_value, drn_depth.max_value, drn_depth.default) == (1, 6, 2)
    assert len(by_name["depth_4"]) == 1  # the DRNs' level 6; CIFAR ResNets have 3 stages
    cifar_os, drn_os = by_name["output_stride"]
    assert cifar_os.values == [1, 2, 4] and cifar_os.default == 4
    assert isinstance(drn_os, kt.engine.hyperparameters.Fixed) and drn_os.value == 8
    width = by_name["bottleneck_width"][0]
    assert width.values == [16, 32, 64, 128, 256] and width.default == 64
    assert [c.name for c in width.conditions] == ["block"]
    groups = {p.conditions[-1].values[0]: p.values for p in by_name["groups"]}
    assert groups == {16: [1, 2, 4], 32: [1, 2, 4, 8], 64: [1, 2, 4, 8, 16],
                      128: [1, 2, 4, 8, 16, 32], 256: [1, 2, 4, 8, 16, 32]}
    for name in ("learning_rate", "weight_decay"):
        assert by_name[name][0].sampling == "log" and not by_name[name][0].conditions


def test_large_images_use_imagenet_rows():
    hypermodel = tuning.HyperResNet(1000, (224, 224, 3))
    hp = kt.HyperParameters()
    assert hypermodel.hp_to_model_args(hp) == (
        "resnet18", {"depths": (2, 2, 2, 2), "block": "basic", "output_stride": 32})
    hp = kt.HyperParameters()
    hp.Fixed("block", "bottleneck")
    hp.Fixed("output_stride", 8)
    name, kwargs = hypermodel.hp_to_model_args(hp)
    assert name == "resnet50" and kwargs["output_stride"] == 8
    assert (kwargs["base_width"], kwargs["groups"]) == (64, 1)


def test_fixed_overrides_are_honoured():
    hp = kt.HyperParameters()
    hp.Fixed("family", "drn_d")
    hp.Fixed("block", "bottleneck")
    hp.Fixed("bottleneck_width", 128)
    hp.Fixed("groups", 32)
    hp.Fixed("depth_3", 4)
    hp.Fixed("learning_rate", 0.05)
    candidate = tuning.HyperResNet(10).candidate(hp)
    assert candidate.model_name == "drn_d_22"
    assert candidate.model_kwargs == {"depths": (1, 1, 2, 2, 4, 2, 1, 1), "block": "bottleneck",
                                      "output_stride": 8, "base_width": 4, "groups": 32}
    assert candidate.learning_rate == 0.05
    specs.resolve_spec(candidate.model_name, **candidate.model_kwargs)


def test_fixed_groups_restricts_widths_in_every_sample():
    hp = kt.HyperParameters()
    hp.Fixed("groups", 8)
    hp.Fixed("block", "bottleneck")
    hypermodel = small_hypermodel()
    widths = set()
    for values in sample_values(hypermodel, 12, hyperparameters=hp):
        kwargs = hypermodel.candidate(values).model_kwargs
        assert kwargs["groups"] == 8
        widths.add(kwargs["base_width"] * 8)
    assert widths <= {32, 64, 128, 256} and len(widths) > 1


def test_impossible_overrides_raise_one_line_errors():
    hp = kt.HyperParameters()
    hp.Fixed("groups", 3)
    with pytest.raises(ValueError, match="no bottleneck width"):
        tuning.HyperResNet(10).candidate(hp)
    hp = kt.HyperParameters()
    hp.Fixed("groups", 32)
    hp.Fixed("bottleneck_width", 16)
    with pytest.raises(ValueError, match="groups=32 does not fit bottleneck_width=16"):
        tuning.HyperResNet(10).candidate(hp)
    with pytest.raises(ValueError, match="'vgg' is not valid; choices: resnet, drn_c, drn_d"):
        tuning.HyperResNet(10, families=("vgg",))
    with pytest.raises(ValueError, match="input_shape"):
        tuning.HyperResNet(10, input_shape=(None, None, 3))
    with pytest.raises(ValueError, match="tuner='grid' is not valid; choices: hyperband"):
        tuning.make_tuner("grid", tuning.HyperResNet(10), "unused", 1)
    with pytest.raises(ValueError, match="hyperband tuner needs max_epochs"):
        tuning.make_tuner("hyperband", tuning.HyperResNet(10), "unused", 1)


def test_sampled_configurations_build_and_count():
    hypermodel = tuning.HyperResNet(10)
    seen = set()
    for hp in sample_values(hypermodel, 30, seed=11):
        candidate = hypermodel.candidate(hp)
        model = models.build_model(candidate.model_name, classes=10, include_top=True,
                                   input_shape=(32, 32, 3), **candidate.model_kwargs)
        assert model.output.shape == (None, 10)
        assert models.count_macs(model) > 0
        seen.add((candidate.family, candidate.model_kwargs["block"]))
    assert len(seen) >= 5


def test_groups_constraint_never_violated():
    hypermodel = tuning.HyperResNet(10)
    pairs = set()
    for hp in sample_values(hypermodel, 300, seed=5):
        kwargs = hypermodel.candidate(hp).model_kwargs
        if kwargs["block"] != "bottleneck":
            assert "groups" not in kwargs
            continue
        width, groups = kwargs["base_width"] * kwargs["groups"], kwargs["groups"]
        assert width == hp["bottleneck_width"] and groups == hp["groups"]
        assert width % groups == 0
        spec = specs.resolve_spec(tuning.base_model_name(hp["family"], "bottleneck", 32),
                                  **{k: v for k, v in kwargs.items() if k != "output_stride"})
        assert all(spec.bottleneck_width(w) >= groups for w in spec.widths)
        pairs.add((width, groups))
    assert (128, 32) in pairs and (16, 4) in pairs and len(pairs) > 12


def test_refinements_are_sampled_and_build():
    """attention, shortcut, drop_path_rate and (per family) stem are searched."""
    hypermodel = tuning.HyperResNet(
        10, families=("resnet", "drn_c"), depth_range=(1, 1), blocks=("basic",),
        attentions=("none", "se", "eca"), shortcuts=("projection", "avgpool", "pad"),
        drop_path_rates=(0.0, 0.1), stems=("imagenet", "deep", "cifar"))
    seen = {"attention": set(), "shortcut": set(), "drop_path_rate": set()}
    for hp in sample_values(hypermodel, 10, seed=4):
        candidate = hypermodel.candidate(hp)
        kwargs = candidate.model_kwargs
        assert kwargs.get("attention", "none") == hp["attention"]
        assert kwargs.get("drop_path_rate", 0.0) == hp["drop_path_rate"]
        spec = specs.resolve_spec(candidate.model_name, **kwargs)
        assert spec.shortcut == hp["shortcut"]
        # 32x32 images: the CIFAR ResNet and the DRN keep their own stems.
        assert spec.stem == {"resnet": "cifar", "drn_c": "drn"}[candidate.family]
        model = models.build_model(candidate.model_name, classes=10, input_shape=(32, 32, 3),
                                   **kwargs)
        names = {layer.name for layer in model.layers}
        assert any(n.endswith("_se_scale") for n in names) == (hp["attention"] == "se")
        assert any(n.endswith("_eca_scale") for n in names) == (hp["attention"] == "eca")
        assert any(n.endswith("_drop_path") for n in names) == (hp["drop_path_rate"] > 0)
        for key in seen:
            seen[key].add(hp[key])
    assert seen == {"attention": {"none", "se", "eca"},
                    "shortcut": {"projection", "avgpool", "pad"}, "drop_path_rate": {0.0, 0.1}}
    # Larger images: the ImageNet ResNets search their stems; the CIFAR stem
    # keeps the output stride relative to the ImageNet stem (32 -> 8).
    large = tuning.HyperResNet(10, (96, 96, 3), families=("resnet",), depth_range=(1, 1),
                               stems=("imagenet", "deep", "cifar"))
    space = kt.HyperParameters()
    large.declare_hyperparameters(space)
    assert [p.values for p in space.space if p.name == "stem"] == [["imagenet", "deep", "cifar"]]
    stems = set()
    for hp in sample_values(large, 8, seed=1):
        name, kwargs = large.hp_to_model_args(hp)
        stems.add(hp["stem"])
        if hp["stem"] == "cifar":
            assert kwargs["output_stride"] * 4 == hp["output_stride"]
            assert "stem=cifar" in large.candidate(hp).describe()
    assert stems == {"imagenet", "deep", "cifar"}
    with pytest.raises(ValueError, match="attentions: 'cbam' is not valid"):
        tuning.HyperResNet(10, attentions=("none", "cbam"))
    with pytest.raises(ValueError, match="drop_path_rates: 1.0 is not a rate"):
        tuning.HyperResNet(10, drop_path_rates=(0.0, 1.0))


def test_budget_rejects_attention_candidates_before_training(tmp_path, monkeypatch, capsys):
    forbid_training(monkeypatch)
    hypermodel = small_hypermodel(attentions=("none", "se"), drop_path_rates=(0.0, 0.2),
                                  max_params=80_000)
    for hp in sample_values(hypermodel, 4, seed=3):
        assert hypermodel.cost(hp)[0] <= 80_000
    hp = kt.HyperParameters()
    for stage in (1, 2, 3):
        hp.Fixed(f"depth_{stage}", 2)
    hp.Fixed("attention", "se")
    plain = models.build_model("resnet20", classes=10, input_shape=(32, 32, 3), depths=(2, 2, 2))
    limit = plain.count_params() + 100  # the SE gates need more
    hypermodel = small_hypermodel(attentions=("none", "se"), max_params=limit)
    tuner = tuning.make_tuner("random", hypermodel, str(tmp_path), 1, hyperparameters=hp)
    trial = kt.engine.trial.Trial(tuner.oracle.get_space(), trial_id="0")
    with pytest.raises(kt.errors.FailedTrialError, match="rejected before training: resnet20 "
                       "basic d=2-2-2 os=4 att=se has .* parameters > max_params"):
        tuner.run_trial(trial, "folder:unused", **tiny_search_kwargs())


# --------------------------------------------------------------------------
# Budget


def test_budget_resamples_instead_of_training(capsys):
    hypermodel = small_hypermodel(max_params=60_000, max_flops=8_000_000)
    for hp in sample_values(hypermodel, 10, seed=2):
        params, flops = hypermodel.cost(hp)
        assert params <= 60_000 and flops <= 8_000_000
    assert "resampling:" in capsys.readouterr().out


def test_over_budget_trial_fails_before_training(tmp_path, monkeypatch):
    forbid_training(monkeypatch)
    hp = kt.HyperParameters()
    hp.Fixed("depth_1", 2)
    hp.Fixed("depth_2", 2)
    hp.Fixed("depth_3", 2)
    hypermodel = small_hypermodel(max_params=50_000)
    tuner = tuning.make_tuner("random", hypermodel, str(tmp_path), 1, hyperparameters=hp)
    trial = kt.engine.trial.Trial(tuner.oracle.get_space(), trial_id="0")
    with pytest.raises(kt.errors.FailedTrialError, match="rejected before training: resnet20 "
                       "basic d=2-2-2 os=4 has .* parameters > max_params=50,000"):
        tuner.run_trial(trial, "folder:unused", **tiny_search_kwargs())


def test_infeasible_budget_stops_before_any_trial(tmp_path, monkeypatch):
    forbid_training(monkeypatch)
    tuner = tuning.make_tuner("random", small_hypermodel(max_params=1_000), str(tmp_path), 3)
    with pytest.raises(ValueError, match="no candidate fits max_params=1000 .* the smallest, "
                       "resnet20 .* has [0-9,]+ parameters"):
        tuner.search("folder:unused", **tiny_search_kwargs())
    assert not glob.glob(str(tmp_path / "search" / "trial_*"))


def test_bayesian_proposals_stay_valid_and_within_budget(tmp_path, monkeypatch):
    """The Gaussian-process phase (training replaced by a score of the candidate)."""
    def fake_train(model_name, dataset, *, model_kwargs, epochs, **kwargs):
        score = 0.5 + 0.01 * sum(model_kwargs["depths"]) - 0.1 * kwargs["learning_rate"]
        return train_lib.TrainResult(
            model=None, model_dir=kwargs["model_dir"], top1=score, top5=None, best_top1=score,
            epochs=epochs, steps=1, initial_step=0, wall_time=0.1, images_per_second=1.0,
            export_path=None, config={}, history=[])

    monkeypatch.setattr(train_lib, "train", fake_train)
    hypermodel = tuning.HyperResNet(10, families=("resnet",), max_params=300_000)
    tuner = tuning.make_tuner("bayesian", hypermodel, str(tmp_path), 7, seed=2,
                              num_initial_points=3)
    tuner.search("folder:unused", **tiny_search_kwargs())
    rows = tuner.results()
    assert [r["status"] for r in rows] == ["COMPLETED"] * 7
    for trial in tuner.oracle.trials.values():
        assert hypermodel.budget_violation(trial.hyperparameters) is None
        params, _ = hypermodel.cost(trial.hyperparameters)
        assert params <= 300_000


# --------------------------------------------------------------------------
# Real searches on the CIFAR subset


@pytest.fixture(scope="module")
def searched(cifar_subset, tmp_path_factory):
    """A 2-trial random search through the command line, with an export."""
    base = tmp_path_factory.mktemp("search")
    directory, export = str(base / "run"), str(base / "export")
    rc = cli.main(["tune", "--dataset", f"folder:{cifar_subset}", "--directory", directory,
                   "--max-trials", "2", "--tuner", "random", "--export-dir", export,
                   "--max-params", "200000", *TINY])
    assert rc == 0
    return directory, export


def read_results(directory):
    with open(os.path.join(directory, "results.csv")) as f:
        return list(csv.DictReader(f))


def test_search_writes_trials_results_and_export(searched, capsys):
    directory, export = searched
    rows = read_results(directory)
    assert [r["trial"] for r in rows] == ["0", "1"]
    for row in rows:
        assert row["status"] == "COMPLETED"
        assert 0.0 <= float(row["val_accuracy"]) <= 1.0
        assert 0 < int(row["params"]) <= 200_000 and int(row["flops"]) > 0
        trial_dir = os.path.join(directory, "search", f"trial_{row['trial']}")
        config = json.load(open(os.path.join(trial_dir, "run_config.json")))
        assert config["model"] == row["base"] == "resnet20"
        assert config["model_kwargs"]["depths"] == [int(d) for d in row["depths"].split("-")]
        assert os.path.isdir(os.path.join(trial_dir, "backup"))
        assert glob.glob(os.path.join(trial_dir, "logs", "train", "events.*"))
    assert os.path.isfile(os.path.join(export, "1", "saved_model.pb"))
    labels = open(os.path.join(export, "1", "assets", "labels.txt")).read().split()
    assert labels[0] == "airplane" and len(labels) == 10


def _hparams_events(path):
    from tensorboard.plugins.hparams import metadata

    found = {}
    for event_file in glob.glob(os.path.join(path, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(event_file):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == metadata.PLUGIN_NAME:
                    found[value.tag] = value.metadata.plugin_data.content
                elif value.HasField("tensor"):
                    found[value.tag] = float(tf.make_ndarray(value.tensor))
    return found


def test_tensorboard_hparams_dashboard(searched):
    from tensorboard.plugins.hparams import metadata

    logdir = os.path.join(searched[0], tuning.TENSORBOARD_DIR)
    config = _hparams_events(logdir)[metadata.EXPERIMENT_TAG]
    experiment = metadata.parse_experiment_plugin_data(config)
    names = {h.name for h in experiment.hparam_infos}
    assert {"family", "block", "depth_1", "bottleneck_width", "groups", "output_stride",
            "learning_rate", "weight_decay"} <= names
    assert {m.name.tag for m in experiment.metric_infos} == {
        "val_accuracy", "params", "flops", "wall_time"}
    rows = {r["trial"]: r for r in read_results(searched[0])}
    for trial_id in ("0", "1"):
        events = _hparams_events(os.path.join(logdir, f"trial_{trial_id}"))
        start = metadata.parse_session_start_info_plugin_data(
            events[metadata.SESSION_START_INFO_TAG])
        assert start.hparams["family"].string_value == "resnet"
        assert start.hparams["depth_1"].number_value == int(rows[trial_id]["depths"][0])
        assert events["val_accuracy"] == pytest.approx(float(rows[trial_id]["val_accuracy"]))
        assert events["params"] == int(rows[trial_id]["params"])


def test_second_search_continues(searched, cifar_subset, tmp_path, capsys):
    import shutil

    directory = str(tmp_path / "run")
    shutil.copytree(searched[0], directory)
    rc = cli.main(["tune", "--dataset", f"folder:{cifar_subset}", "--directory", directory,
                   "--max-trials", "3", "--tuner", "random", "--max-params", "200000", *TINY])
    assert rc == 0
    assert "Reloading Tuner" in capsys.readouterr().out
    rows = read_results(directory)
    assert [r["trial"] for r in rows] == ["0", "1", "2"]
    assert rows[:2] == read_results(searched[0])  # the earlier trials were not rerun
    assert len(glob.glob(os.path.join(directory, "search", "trial_*", "run_config.json"))) == 3


class _StopAfterFirstEpoch:
    """Simulates a kill: interrupt the search after the first epoch's checkpoint."""

    def __init__(self, interrupt):
        self.interrupt, self.epochs = interrupt, []

    def on_epoch_end(self, epoch, logs):
        self.epochs.append(epoch)
        if self.interrupt:
            raise KeyboardInterrupt


def test_interrupted_trial_resumes_from_its_checkpoint(cifar_subset, tmp_path):
    dataset = f"folder:{cifar_subset}"
    kwargs = tiny_search_kwargs(epochs=2)
    first = tuning.make_tuner("random", small_hypermodel(), str(tmp_path), 1, seed=4)
    stopper = _StopAfterFirstEpoch(True)
    with pytest.raises(KeyboardInterrupt):
        first.search(dataset, callbacks=[stopper], **kwargs)
    assert stopper.epochs == [0]

    second = tuning.make_tuner("random", small_hypermodel(), str(tmp_path), 1, seed=4)
    watcher = _StopAfterFirstEpoch(False)
    second.search(dataset, callbacks=[watcher], **kwargs)
    assert watcher.epochs == [1]  # trial 0 continued at its second epoch
    assert second.trials_run == ["0"]
    (row,) = second.results()
    assert row["status"] == "COMPLETED" and row["epochs"] == 2


def test_hyperband_trains_its_epochs_and_continues_promoted_trials(cifar_subset, tmp_path):
    tuner = tuning.make_tuner("hyperband", small_hypermodel(), str(tmp_path), 3, max_epochs=2,
                              factor=2, seed=6)
    tuner.search(f"folder:{cifar_subset}", **tiny_search_kwargs(epochs=2))
    rows = tuner.results()
    assert [r["epochs"] for r in rows] == [1, 1, 2]
    promoted = tuner.oracle.trials["2"].hyperparameters.values
    assert promoted["tuner/trial_id"] in ("0", "1")
    config = json.load(open(os.path.join(tuner.project_dir, "trial_2", "run_config.json")))
    assert config["total_steps"] == 4
    parent = rows[int(promoted["tuner/trial_id"])]
    assert rows[2]["model"] == parent["model"]


# --------------------------------------------------------------------------
# Command line and example


def test_cli_bad_inputs_exit_2_with_one_line(cifar_subset, tmp_path, capsys):
    rc = cli.main(["tune", "--dataset", f"folder:{tmp_path}/missing", "--directory",
                   str(tmp_path / "a"), "--max-trials", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "does not exist" in err
    rc = cli.main(["tune", "--dataset", f"folder:{cifar_subset}", "--directory",
                   str(tmp_path / "b"), "--max-trials", "1", "--max-params", "1000", *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "no candidate fits max_params=1000" in err
    assert cli.main(["tune", "--dataset", "cifar10", "--directory", "d", "--max-trials", "1",
                     "--tuner", "grid"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'grid'" in err


def test_example_runs_with_a_tiny_budget(cifar_subset, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "tune_bottleneck", os.path.join(REPO, "examples", "tune_bottleneck.py"))
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.main(["--data", cifar_subset, "--directory", str(tmp_path / "run"),
                  "--export-dir", str(tmp_path / "export"), "--max-trials", "1",
                  "--epochs", "1", "--steps-per-epoch", "2", "--groups", "4", "--tiny"])
    out = capsys.readouterr().out
    assert "w=" in out and "/g=4" in out and "best trial exported to" in out
    assert os.path.isfile(str(tmp_path / "export" / "1" / "saved_model.pb"))


# --------------------------------------------------------------------------
# Distributed search: keras-tuner's chief and two workers over gRPC


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_chief_and_two_workers(cifar_subset, tmp_path):
    port = _free_port()
    command = [sys.executable, "-m", "resnet_keras", "tune", "--dataset",
               f"folder:{cifar_subset}", "--directory", str(tmp_path / "run"),
               "--max-trials", "2", "--tuner", "random", *TINY]
    base_env = dict(os.environ, KERASTUNER_ORACLE_IP="127.0.0.1",
                    KERASTUNER_ORACLE_PORT=str(port), TF_CPP_MIN_LOG_LEVEL="3")
    processes = {
        role: subprocess.Popen(command, env=dict(base_env, KERASTUNER_TUNER_ID=role),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for role in ("chief", "tuner0", "tuner1")}
    outputs = {}
    try:
        for role, process in processes.items():
            outputs[role] = process.communicate(timeout=400)[0]
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
    for role, process in processes.items():
        assert process.returncode == 0, f"{role}:\n{outputs[role][-3000:]}"
    ran = set()
    for role in ("tuner0", "tuner1"):
        line = [l for l in outputs[role].splitlines() if l.startswith(f"{role}: ran trial")]
        assert line, outputs[role][-3000:]
        ran |= {t.strip() for t in line[0].split("trial(s)")[1].split(",") if t.strip() != "none"}
    assert ran == {"0", "1"}
    rows = read_results(str(tmp_path / "run"))
    assert [(r["trial"], r["status"]) for r in rows] == [("0", "COMPLETED"), ("1", "COMPLETED")]
    oracle = json.load(open(tmp_path / "run" / "search" / "oracle.json"))
    assert sorted(oracle["end_order"]) == ["0", "1"]
