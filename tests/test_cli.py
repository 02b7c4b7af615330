"""The command line's model commands, run as a user runs them."""
import subprocess
import sys

import resnet_keras
from resnet_keras import cli


def run_cli(*args, timeout=300):
    """Run ``python -m resnet_keras ARGS`` in a fresh process."""
    return subprocess.run([sys.executable, "-m", "resnet_keras", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_list_prints_every_model(capsys):
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == resnet_keras.list_models()


def test_info_reports_params_and_macs(capsys):
    assert cli.main(["info", "resnet18", "--image-size", "224"]) == 0
    out = capsys.readouterr().out
    assert "11,699,112" in out and "1.814 G" in out


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
