"""Install by use: the builders need keras and numpy only, each use adds its
extra, a missing extra is one line naming the install command, and the
Makefile finds a Python it may install into (PEP 668 systems included)."""
import configparser
import os
import re
import subprocess
import sys

import pytest

from resnet_keras import errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON_ENV = os.path.join(REPO, "tools", "python_env.py")


def _setup_cfg():
    parser = configparser.ConfigParser()
    parser.read(os.path.join(REPO, "setup.cfg"))
    return parser


def _names(requirements):
    return {re.split(r"[<>=!~\[ ]", line.strip())[0].lower()
            for line in requirements.strip().splitlines() if line.strip()}


def test_the_builders_need_only_keras_and_numpy():
    cfg = _setup_cfg()
    assert _names(cfg["options"]["install_requires"]) == {"keras", "numpy"}
    extras = {name: _names(value) for name, value in cfg["options.extras_require"].items()}
    assert {"tensorflow-datasets"} <= extras["train"]
    assert {"keras-tuner", "scipy", "scikit-learn"} <= extras["tune"]
    assert {"matplotlib"} <= extras["results"]
    assert extras["cpu"] == {"tensorflow-cpu"}
    assert {"ai-edge-litert"} <= extras["litert"]
    assert {"tf2onnx", "onnxruntime"} <= extras["onnx"]
    assert extras["safetensors"] == {"safetensors"}
    uses = set().union(*(extras[name] for name in ("train", "tune", "results", "litert", "onnx",
                                                   "safetensors")))
    assert extras["all"] == uses


def test_make_targets_install_the_extras_of_their_use():
    with open(os.path.join(REPO, "Makefile")) as f:
        makefile = f.read()

    def installs(target):
        body = re.search(rf"^{target}:.*?(?=^\S|\Z)", makefile, re.S | re.M).group(0)
        return body

    assert '".[$(EXTRAS),train]"' in installs("install")
    assert "install" in installs("demo").splitlines()[0]
    assert '".[$(EXTRAS),train,tune,results,litert,onnx,test,torch]"' in installs("test")
    assert '--no-deps "tensorflow-serving-api' in installs("test")
    assert "python3 tools/python_env.py" in makefile


def test_missing_extra_is_one_line_naming_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "keras_tuner", None)  # import fails as if absent
    with pytest.raises(errors.MissingExtra) as info:
        errors.require("keras_tuner", "tune", "resnet-keras tune")
    assert str(info.value) == ("resnet-keras tune needs keras-tuner, which is not installed: "
                               "pip install 'resnet-keras[tune]'")
    assert errors.require("json", "x", "y").dumps(1) == "1"


def _python_env(tmp_path, **env):
    environ = dict(os.environ, RESNET_KERAS_VENV=str(tmp_path / "venv"), **env)
    return subprocess.run([sys.executable, PYTHON_ENV], capture_output=True, text=True,
                          env=environ, timeout=120)


def test_python_env_keeps_an_active_environment(tmp_path):
    # The suite runs in a virtual environment (as .ci/run makes); even on a PEP 668
    # system, an active environment is used as it is.
    if sys.prefix == sys.base_prefix:
        pytest.skip("not running in a virtual environment")
    done = _python_env(tmp_path, RESNET_KERAS_EXTERNALLY_MANAGED="1")
    assert done.returncode == 0 and done.stdout.strip() == sys.executable
    assert not (tmp_path / "venv").exists()


def test_python_env_creates_a_project_venv_on_an_externally_managed_python(tmp_path):
    base = os.path.join(sys.base_prefix, "bin", "python3")
    if not os.path.isfile(base):
        pytest.skip(f"no base interpreter at {base}")
    environ = dict(os.environ, RESNET_KERAS_VENV=str(tmp_path / "venv"),
                   RESNET_KERAS_EXTERNALLY_MANAGED="1")
    environ.pop("VIRTUAL_ENV", None)
    environ.pop("CONDA_PREFIX", None)
    first = subprocess.run([base, PYTHON_ENV], capture_output=True, text=True, env=environ,
                           timeout=300)
    assert first.returncode == 0, first.stderr
    python = str(tmp_path / "venv" / "bin" / "python")
    assert first.stdout.strip() == python and os.path.isfile(python)
    assert "externally managed (PEP 668)" in first.stderr and "creating" in first.stderr
    again = subprocess.run([base, PYTHON_ENV], capture_output=True, text=True, env=environ,
                           timeout=60)
    assert again.stdout.strip() == python and "using the virtual environment" in again.stderr
    # Not externally managed: the interpreter itself.
    environ["RESNET_KERAS_EXTERNALLY_MANAGED"] = "0"
    plain = subprocess.run([base, PYTHON_ENV], capture_output=True, text=True, env=environ,
                           timeout=60)
    assert plain.stdout.strip() != python


def test_cli_without_keras_tuner_says_which_extra(tmp_path):
    script = ("import sys; sys.modules['keras_tuner'] = None\n"
              "from resnet_keras import cli\n"
              f"sys.exit(cli.main(['tune', '--dataset', 'folder:{tmp_path}', '--directory', "
              f"'{tmp_path / 'search'}', '--max-trials', '1']))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        "resnet-keras tune: error: architecture search (resnet_keras.tuning) needs "
        "keras-tuner, which is not installed: pip install 'resnet-keras[tune]'")
