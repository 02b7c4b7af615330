"""The command line as a user runs it: the ``resnet-keras`` console script,
its exit statuses and its one-line errors."""
import argparse
import os
import re
import subprocess
import sys
import textwrap
import warnings

import pytest

import resnet_keras
from conftest import REPO
from resnet_keras import _startup, cli
from resnet_keras.errors import first_line
from resnet_keras.training import commands
from resnet_keras.training.config import TrainConfig, option_fields

# pip install -e puts the console script beside the interpreter.
SCRIPT = os.path.join(os.path.dirname(sys.executable), "resnet-keras")


def user_env(**extra):
    """The environment of a user who set no TensorFlow log level."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "RESNET_KERAS_VERBOSE", "PYTHONWARNINGS")}
    env.update(extra)
    return env


def start_script(*args):
    assert os.path.isfile(SCRIPT), f"no console script at {SCRIPT}: pip install -e ."
    return subprocess.Popen([SCRIPT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=user_env(), cwd=REPO)


def finish(process, timeout=300):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def run_cli(*args, timeout=300):
    """Run ``python -m resnet_keras ARGS`` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "resnet_keras", *args],
                          capture_output=True, text=True, timeout=timeout, env=user_env())


def test_list_prints_every_model(capsys):
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == resnet_keras.list_models()


def test_info_reports_params_and_macs(capsys):
    assert cli.main(["info", "resnet18", "--image-size", "224"]) == 0
    out = capsys.readouterr().out
    assert "11,699,112" in out and "1.814 G" in out


def test_info_from_facts_is_what_the_built_model_gives(capsys):
    """``info NAME`` reads the pinned FACTS (CIFAR ResNets at 32x32 and 10
    classes); --summary builds the model and must print the same numbers;
    other sizes and class counts are counted on the built model."""
    assert cli.main(["info", "resnet20"]) == 0
    pinned = capsys.readouterr().out
    assert "input:        32x32x3" in pinned and "output:       (None, 10)" in pinned
    assert cli.main(["info", "resnet20", "--summary"]) == 0
    built = capsys.readouterr().out
    assert "Total params" in built and built.endswith(pinned)
    assert cli.main(["info", "resnet20", "--image-size", "64", "--classes", "7"]) == 0
    model = resnet_keras.build_model("resnet20", classes=7, input_shape=(64, 64, 3))
    out = capsys.readouterr().out
    assert f"parameters:   {model.count_params():,}\n" in out
    assert f"multiply-adds {resnet_keras.count_macs(model) / 1e9:.3f} G\n" in out
    assert "input:        64x64x3\noutput:       (None, 7)\n" in out


def test_unknown_model_exits_2_with_one_line():
    result = run_cli("info", "resnet51")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "resnet51" in result.stderr and "resnet50" in result.stderr
    assert "Traceback" not in result.stderr


def test_usage_error_exits_2():
    result = run_cli("info", "resnet18", "--image-size", "-3")
    assert result.returncode == 2
    assert "positive integer" in result.stderr


# --------------------------------------------------------------------------
# The console script


def test_console_script_lists_models():
    code, out, err = finish(start_script("list"))
    assert code == 0 and err == "", err
    assert [line.split()[0] for line in out.splitlines()] == resnet_keras.list_models()


def test_console_script_errors_are_exactly_one_line(tmp_path):
    """Usage errors (unknown option, bad integer) and input errors (unknown
    model, missing dataset folder): exit 2 and stderr is the error line,
    nothing before or after it (no usage block, no TensorFlow log line)."""
    model_dir = str(tmp_path / "run")
    missing = str(tmp_path / "no-such-folder")
    train = ["train", "--model", "resnet20", "--epochs", "1", "--batch-size", "8",
             "--model-dir", model_dir]
    hint = " (see 'resnet-keras train --help')"
    with pytest.raises(ValueError) as unknown:
        resnet_keras.build_model("resnet51")
    cases = [
        (train + ["--dataset", f"folder:{missing}", "--bogus"],
         "resnet-keras train: error: unrecognized arguments: --bogus" + hint),
        (train + ["--dataset", f"folder:{missing}", "--epochs", "two"],
         "resnet-keras train: error: argument --epochs: expected a positive integer, "
         "got 'two'" + hint),
        (["info", "resnet51"], f"resnet-keras info: error: {first_line(unknown.value)}"),
        (train + ["--dataset", f"folder:{missing}"], None),
    ]
    processes = [start_script(*argv) for argv, _ in cases]
    for (argv, expected), process in zip(cases, processes):
        code, out, err = finish(process)
        assert code == 2, (argv, out, err)
        if expected is None:  # the data module words it; it names the folder
            assert err.count("\n") == 1 and err.startswith("resnet-keras train: error: ")
            assert missing in err, err
        else:
            assert err == expected + "\n", err
    assert not os.path.exists(model_dir)


def test_command_line_quiets_tensorflow_unless_the_user_set_a_level(monkeypatch):
    """TensorFlow reads TF_CPP_MIN_LOG_LEVEL once, so the level is set when
    the package loads: 3 for the console script and python -m resnet_keras,
    2 for the Python API, and a user's own value always wins."""
    cases = [(["/venv/bin/resnet-keras", "list"], ["python", "/venv/bin/resnet-keras"], "3"),
             (["-m"], ["python", "-m", "resnet_keras", "list"], "3"),
             (["-m"], ["python", "-W", "ignore", "-mresnet_keras"], "3"),
             (["/x/pytest"], ["python", "-m", "pytest", "tests"], "2"),
             (["-c"], ["python", "-c", "import resnet_keras"], "2")]
    for argv, orig_argv, level in cases:
        monkeypatch.setattr(sys, "argv", argv)
        monkeypatch.setattr(sys, "orig_argv", orig_argv)
        monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
        _startup.set_log_level()
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == level, orig_argv
        monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
        _startup.set_log_level()
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"


# --------------------------------------------------------------------------
# Exit statuses and messages, in process


def test_usage_errors_return_2_with_one_line(capsys):
    for argv, message in [
            (["info"], "resnet-keras info: error: the following arguments are required: model"),
            (["trian"], "resnet-keras: error: argument COMMAND: invalid choice: 'trian'"),
            (["list", "--bogus"], "resnet-keras list: error: unrecognized arguments: --bogus")]:
        assert cli.main(argv) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1, err
        assert err.startswith(message) and err.endswith("--help')\n"), err
        assert "usage:" not in err


@pytest.mark.parametrize("option, value, expected", [
    ("--warmup-epochs", "inf", "a finite number >= 0"),
    ("--warmup-epochs", "-1", "a finite number >= 0"),
    ("--weight-decay", "nan", "a finite number >= 0"),
    ("--learning-rate", "inf", "a finite positive number"),
    ("--learning-rate", "nan", "a finite positive number"),
    ("--label-smoothing", "nan", "a number in [0, 1)"),
    ("--label-smoothing", "1", "a number in [0, 1)"),
    ("--seed", "1e3", "an integer"),
])
def test_numbers_must_be_finite(option, value, expected, tmp_path, capsys):
    argv = ["train", "--model", "resnet20", "--dataset", f"folder:{tmp_path}", "--epochs",
            "1", "--batch-size", "8", "--model-dir", str(tmp_path / "run"), option, value]
    assert cli.main(argv) == 2
    _, err = capsys.readouterr()
    assert err == (f"resnet-keras train: error: argument {option}: expected {expected}, "
                   f"got {value!r} (see 'resnet-keras train --help')\n")


@pytest.mark.parametrize("option", ["--max-params", "--max-flops"])
def test_tune_limits_must_be_finite(option, tmp_path, capsys):
    argv = ["tune", "--dataset", f"folder:{tmp_path}", "--directory", str(tmp_path),
            "--max-trials", "1", option, "inf"]
    assert cli.main(argv) == 2
    assert "expected a finite positive number, got 'inf'" in capsys.readouterr().err


def test_internal_failure_returns_1_with_one_line(monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("the disk went away\nsecond line")

    monkeypatch.setattr(cli, "_cmd_list", broken)
    monkeypatch.delenv("RESNET_KERAS_VERBOSE", raising=False)
    assert cli.main(["list"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("resnet-keras list: internal error: RuntimeError: the disk went away "
                   "(set RESNET_KERAS_VERBOSE=1 for the traceback)\n")


def test_python_warnings_are_off_while_a_command_runs(monkeypatch, capfd):
    """warnings.warn, tf.get_logger() and absl logging print nothing during a
    command, and the caller's settings are back afterwards."""
    import tensorflow as tf
    from absl import logging as absl_logging

    def noisy(args):
        warnings.warn("a Python warning")
        tf.get_logger().warning("a tensorflow warning")
        absl_logging.warning("an absl warning")
        print("listed")
        return 0

    monkeypatch.setattr(cli, "_cmd_list", noisy)
    monkeypatch.delenv("RESNET_KERAS_VERBOSE", raising=False)
    level = tf.get_logger().level
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli.main(["list"]) == 0
        out, err = capfd.readouterr()
        assert out == "listed\n" and err == "", err
        assert caught == []
        warnings.warn("after the command")
        assert [str(w.message) for w in caught] == ["after the command"]
    assert tf.get_logger().level == level


# --------------------------------------------------------------------------
# The test suite's own set-up


def test_ci_without_the_shared_folder_fails_the_run(tmp_path):
    """Under CI=true a missing shared folder stops pytest with a non-zero
    status and one clear message, instead of skipping the tests that need it."""
    suite = tmp_path / "suite"
    suite.mkdir()
    with open(os.path.join(REPO, "tests", "conftest.py")) as f:
        (suite / "conftest.py").write_text(f.read())
    (suite / "test_tiny.py").write_text(textwrap.dedent("""
        def test_nothing():
            pass
    """))
    missing = str(tmp_path / "no-shared")
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(suite)]
    env = {**os.environ, "RESNET_KERAS_SHARED": missing, "CI": "true"}
    result = subprocess.run(base, capture_output=True, text=True, timeout=300, cwd=suite,
                            env=env)
    assert result.returncode != 0
    assert ("CI needs the shared test data, missing: "
            f"{os.path.join(missing, 'datasets', 'cifar10_jpeg.tar.gz')}, "
            f"{os.path.join(missing, 'reference')}") in result.stdout + result.stderr
    assert "1 passed" not in result.stdout
    env.pop("CI")
    result = subprocess.run(base, capture_output=True, text=True, timeout=300, cwd=suite,
                            env=env)
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout


# --------------------------------------------------------------------------
# The train flags are the TrainConfig fields

# Every flag resnet-keras train has had: none may disappear.
TRAIN_FLAGS = (
    "--model", "--dataset", "--data-dir", "--epochs", "--batch-size", "--model-dir",
    "--export-dir", "--mixed-precision", "--no-mixed-precision", "--jit-compile",
    "--optimizer", "--learning-rate", "--weight-decay", "--schedule", "--warmup-epochs",
    "--label-smoothing", "--nesterov", "--ema-decay", "--eval-flip", "--holdout", "--seed",
    "--cache", "--output-stride", "--image-size", "--strategy", "--num-cpu-replicas",
    "--train-subset", "--steps-per-epoch", "--max-steps", "--checkpoint-every")
REQUIRED = ["--model", "resnet20", "--dataset", "cifar10", "--epochs", "1", "--batch-size",
            "8", "--model-dir", "runs/r20"]


def _subparser(name):
    actions = cli.build_parser()._subparsers._group_actions
    return next(a for a in actions if isinstance(a, argparse._SubParsersAction)).choices[name]


def _flags(parser):
    return {flag for action in parser._actions for flag in action.option_strings} - {
        "-h", "--help"}


def test_every_train_flag_is_a_config_field_and_back():
    declared = set()
    for section, field in option_fields():
        flag = field.metadata["flag"]
        assert field.metadata["help"], f"{section}.{field.name} has no help text"
        if flag is None:  # set from Python or by the trainer, and said so in its help
            assert "Python only" in field.metadata["help"], f"{section}.{field.name}: no flag"
            continue
        declared.add(flag)
        if field.metadata["kind"] == "optional_bool":
            declared.add("--no-" + flag[2:])
    flags = _flags(_subparser("train"))
    assert flags == declared
    assert set(TRAIN_FLAGS) <= flags


def test_train_flag_defaults_are_the_config_defaults():
    parser = _subparser("train")
    parsed = commands.config_from_args(parser.parse_args(REQUIRED))
    assert parsed == TrainConfig.from_keywords("resnet20", "cifar10", epochs=1, batch_size=8,
                                               model_dir="runs/r20")


def test_label_smoothing_flows_from_the_flag_to_the_loss():
    import keras
    import tensorflow as tf

    from resnet_keras.training.steps import ReplicaSteps

    args = _subparser("train").parse_args(REQUIRED + ["--label-smoothing", "0.2"])
    config = commands.config_from_args(args)
    assert config.recipe.label_smoothing == 0.2
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, activation="softmax")])
    steps = ReplicaSteps(tf.distribute.get_strategy(), model, None, config.recipe, 8, 3)
    assert steps.loss_fn.label_smoothing == pytest.approx(0.2)


def test_readme_command_line_section_names_every_train_flag():
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    section = readme.split("\n## Command line\n", 1)[1].split("\n## ", 1)[0]
    missing = [flag for flag in sorted(_flags(_subparser("train")))
               if not re.search(re.escape(flag) + r"(?![\w-])", section)]
    assert not missing, f"README's Command line section lacks {missing}"
