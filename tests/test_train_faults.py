"""The trainer under faults: concurrent trainers, signals, damaged or missing
files, full disks, unwritable paths and bad numbers.

Runs train a ResNet-20 on the real CIFAR-10 subset for a few steps, mostly
through the command line (``cli.main`` in this process, or ``python -m
resnet_keras`` where signals, locks between processes or hangs are involved).
One finished run is shared: tests copy it before damaging it.
"""
import errno
import glob
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO
from resnet_keras import cli, rundir
from resnet_keras import train as train_lib
from resnet_keras.training import steps as steps_lib

# The CLI's model (no depth override), so the CLI can resume these runs.
RUN = dict(epochs=2, batch_size=8, steps_per_epoch=3, checkpoint_every=2, seed=0,
           strategy="one-device")


def _argv(dataset, model_dir, **overrides):
    options = dict(RUN, **overrides)
    argv = ["train", "--model", "resnet20", "--dataset", dataset, "--model-dir", str(model_dir)]
    for key, value in options.items():
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def _cli(capsys, argv):
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def _one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _env():
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    return env


def _cli_process(argv, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "resnet_keras", *argv], cwd=REPO,
                            env=_env(), text=True, **kwargs)


def _backup(model_dir):
    return rundir.path(str(model_dir), rundir.BACKUP_DIR)


def _lock(model_dir):
    return rundir.path(str(model_dir), rundir.LOCK_FILE)


@pytest.fixture(scope="module")
def dataset(cifar_subset):
    return f"folder:{cifar_subset}"


@pytest.fixture(scope="module")
def finished_run(dataset, tmp_path_factory):
    """A finished 6-step run; checkpoints at steps 2, 3, 4, 6 (the last two kept)."""
    model_dir = tmp_path_factory.mktemp("finished") / "run"
    train_lib.train("resnet20", dataset, model_dir=str(model_dir), verbose=0, **RUN)
    kept = sorted(os.path.basename(p) for p in glob.glob(f"{_backup(model_dir)}/ckpt-*.index"))
    assert kept == ["ckpt-4.index", "ckpt-6.index"]
    return model_dir


@pytest.fixture
def run_copy(finished_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


# --------------------------------------------------------------------------
# One trainer per model dir

# Trains through the Python API, pausing after its first step until a file exists.
HOLDER_SCRIPT = """
import json, os, sys, time
from resnet_keras.train import train

args = json.loads(sys.argv[1])
go = args.pop("go_file")

class Hold:
    def on_train_batch_end(self, step, logs):
        deadline = time.time() + 240
        while step == 1 and not os.path.exists(go) and time.time() < deadline:
            time.sleep(0.05)

train(**args, verbose=0, callbacks=[Hold()])
"""


def test_second_trainer_on_a_model_dir_is_refused(dataset, tmp_path, capsys):
    model_dir, go = tmp_path / "dual", tmp_path / "go"
    first = subprocess.Popen(
        [sys.executable, "-c", HOLDER_SCRIPT, json.dumps(dict(
            RUN, model_name="resnet20", dataset=dataset, model_dir=str(model_dir), epochs=1,
            go_file=str(go)))],
        cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 180
        while not os.path.exists(rundir.path(str(model_dir), rundir.CONFIG_FILE)):
            assert first.poll() is None, first.communicate()[0][-3000:]
            assert time.time() < deadline, "the first trainer never started"
            time.sleep(0.1)
        status, _, err = _cli(capsys, _argv(dataset, model_dir, epochs=1, seed=1))
        line = _one_error_line(err)
        assert status == 2
        assert f"is in use by pid {first.pid} on host {socket.gethostname()!r}" in line, line
        go.touch()
        output, _ = first.communicate(timeout=300)
    finally:
        go.touch()
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, output[-3000:]
    config = rundir.read_run_config(str(model_dir))
    assert config["seed"] == 0 and config["result"]["steps"] == 3  # the first run's
    assert not os.path.exists(_lock(model_dir))  # released at the end


def test_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    with open(_lock(tmp_path), "w") as f:  # as left by a killed run
        json.dump({"pid": int(dead.stdout), "host": socket.gethostname()}, f)
    with rundir.RunLock(tmp_path):
        with open(_lock(tmp_path)) as f:
            assert json.load(f)["pid"] == os.getpid()
    assert not os.path.exists(_lock(tmp_path))


def test_lock_without_flock_falls_back_to_the_holders_pid(tmp_path, monkeypatch):
    def no_flock(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(rundir.fcntl, "flock", no_flock)
    with open(_lock(tmp_path), "w") as f:  # a live process on this host holds it
        json.dump({"pid": os.getppid(), "host": socket.gethostname()}, f)
    with pytest.raises(ValueError, match=f"in use by pid {os.getppid()} on host"):
        rundir.RunLock(tmp_path).acquire()
    with open(_lock(tmp_path), "w") as f:  # another host: cannot tell, refused
        json.dump({"pid": os.getpid(), "host": "elsewhere.example"}, f)
    with pytest.raises(ValueError, match="on host 'elsewhere.example'"):
        rundir.RunLock(tmp_path).acquire()
    with open(_lock(tmp_path), "w") as f:  # dead pid on this host: taken over
        json.dump({"pid": 2 ** 22 + 12345, "host": socket.gethostname()}, f)
    lock = rundir.RunLock(tmp_path).acquire()
    lock.release()
    lock.release()
    assert not os.path.exists(_lock(tmp_path))


# --------------------------------------------------------------------------
# Inputs refused before training


def test_batch_larger_than_the_training_set_is_refused(dataset, tmp_path):
    model_dir = tmp_path / "run"
    argv = _argv(dataset, model_dir, batch_size=2000000000, steps_per_epoch=None)
    done = subprocess.run([sys.executable, "-m", "resnet_keras", *argv], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 2, done.stderr[-3000:]
    assert ("error: batch size 2000000000 is larger than the 100 training images"
            in done.stderr), done.stderr
    assert "Traceback" not in done.stderr and not model_dir.exists()


@pytest.fixture(scope="module")
def a_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("files") / "plain.txt"
    path.write_text("not a folder\n")
    return str(path)


@pytest.mark.parametrize("option, where, message", [
    ("--model-dir", "FILE", "model dir 'FILE' is a file, not a folder"),
    ("--model-dir", "FILE/run", "model dir 'FILE/run' cannot be created: 'FILE' is a file"),
    ("--export-dir", "FILE", "export dir 'FILE' is a file, not a folder"),
    ("--export-dir", "/proc/resnet-keras-export",
     "export dir '/proc/resnet-keras-export' is not writable: creating a file in '/proc'"),
])
def test_train_checks_its_folders_before_training(dataset, tmp_path, a_file, capsys, option,
                                                   where, message):
    where, message = where.replace("FILE", a_file), message.replace("FILE", a_file)
    model_dir = tmp_path / "run"
    argv = _argv(dataset, model_dir)
    argv = argv[:argv.index("--model-dir")] + argv[argv.index("--model-dir") + 2:]
    argv += ["--model-dir", where if option == "--model-dir" else str(model_dir)]
    if option == "--export-dir":
        argv += ["--export-dir", where]
    started = time.time()
    status, out, err = _cli(capsys, argv)
    assert status == 2 and message in _one_error_line(err), err
    assert not model_dir.exists() and time.time() - started < 30  # nothing trained


@pytest.mark.parametrize("argv, message", [
    (["export", "--model-dir", "RUN", "--export-dir", "FILE"],
     "export dir 'FILE' is a file, not a folder"),
    (["export", "--model-dir", "RUN", "--export-dir", "/proc/resnet-keras-export"],
     "export dir '/proc/resnet-keras-export' is not writable"),
    (["tune", "--dataset", "DATA", "--directory", "FILE", "--max-trials", "1"],
     "tuner directory 'FILE' is a file, not a folder"),
    (["tune", "--dataset", "DATA", "--directory", "TMP/tune", "--max-trials", "1",
      "--export-dir", "/proc/resnet-keras-export"],
     "export dir '/proc/resnet-keras-export' is not writable"),
])
def test_export_and_tune_check_their_folders(finished_run, dataset, a_file, tmp_path, capsys,
                                             argv, message):
    names = {"RUN": str(finished_run), "FILE": a_file, "DATA": dataset, "TMP": str(tmp_path)}
    argv = [re.sub("RUN|FILE|DATA|TMP", lambda m: names[m.group()], a) for a in argv]
    status, _, err = _cli(capsys, argv)
    assert status == 2 and message.replace("FILE", a_file) in _one_error_line(err), err
    assert not (tmp_path / "tune").exists()


# --------------------------------------------------------------------------
# Disk full and damaged checkpoints


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(dataset, tmp_path,
                                                                    capsys, monkeypatch):
    model_dir = tmp_path / "run"
    write = tf.train.Checkpoint._write

    def full_disk(self, file_prefix, options=None):
        if not str(file_prefix).endswith("ckpt-4"):
            return write(self, file_prefix, options=options)
        temp = f"{file_prefix}_temp"  # as TensorFlow writes: a temp folder first
        os.makedirs(temp)
        with open(os.path.join(temp, "part-00000-of-00001.data-00000-of-00001"), "wb") as f:
            f.write(b"\0" * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tf.train.Checkpoint, "_write", full_disk)
    status, _, err = _cli(capsys, _argv(dataset, model_dir, epochs=1, steps_per_epoch=6))
    line = _one_error_line(err)
    assert status == 1
    assert line.startswith("resnet-keras train: error: could not write the checkpoint at "
                           "step 4 (No space left on device); the last good checkpoint is "
                           "kept (step 2"), line
    assert sorted(os.listdir(_backup(model_dir))) == [
        "checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index"]
    assert not os.path.exists(_lock(model_dir))

    monkeypatch.setattr(tf.train.Checkpoint, "_write", write)  # space freed: resume
    status, out, err = _cli(capsys, _argv(dataset, model_dir, epochs=1, steps_per_epoch=6))
    assert status == 0, err
    assert "resuming from step 2" in out and "done: resnet20" in out
    assert tf.train.latest_checkpoint(_backup(model_dir)).endswith("ckpt-6")


def _truncate(path, size=100):
    with open(path, "r+b") as f:
        f.truncate(size)


def test_damaged_newest_checkpoint_falls_back_to_the_previous(run_copy, dataset, capsys):
    _truncate(f"{_backup(run_copy)}/ckpt-6.data-00000-of-00001")
    status, out, err = _cli(capsys, _argv(dataset, run_copy))
    assert status == 0, err
    warning = [line for line in err.splitlines() if "warning" in line]
    assert len(warning) == 1 and "Traceback" not in err, err
    assert "damaged checkpoint(s)" in warning[0] and "ckpt-6:" in warning[0]
    assert warning[0].endswith("resuming from ckpt-4 (step 4)")
    assert "resuming from step 4" in out and "done: resnet20" in out
    # The damaged one was replaced by the resumed run's step-6 checkpoint.
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(_backup(run_copy)))
    assert reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE") == 6


def test_checkpoint_list_naming_a_missing_file(run_copy, dataset, capsys):
    with open(f"{_backup(run_copy)}/checkpoint", "w") as f:
        f.write('model_checkpoint_path: "ckpt-99"\nall_model_checkpoint_paths: "ckpt-99"\n')
    status, out, err = _cli(capsys, _argv(dataset, run_copy))
    assert status == 0, err
    assert "ckpt-99:" in err and "resuming from ckpt-6 (step 6)" in err
    assert "already trained: step 6 of 6" in out


def test_unreadable_checkpoint_list_still_resumes(run_copy, dataset, capsys):
    with open(f"{_backup(run_copy)}/checkpoint", "w") as f:
        f.write("garbage {{{")  # TensorFlow ignores the list: the files still count
    status, out, err = _cli(capsys, _argv(dataset, run_copy))
    assert status == 0, err
    assert "already trained: step 6 of 6" in out


def test_no_readable_checkpoint_is_one_line(run_copy, dataset, capsys):
    for data in glob.glob(f"{_backup(run_copy)}/ckpt-*.data-*"):
        _truncate(data)
    status, _, err = _cli(capsys, _argv(dataset, run_copy))
    line = _one_error_line(err)
    assert status == 2 and "no checkpoint in" in line and "ckpt-6:" in line and "ckpt-4:" in line
    assert not os.path.exists(_lock(run_copy))


# --------------------------------------------------------------------------
# Signals


def _lines(stream):
    """A queue fed with the lines of STREAM by a reader thread."""
    lines = queue.Queue()

    def read():
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_the_rerun_resumes(dataset, tmp_path):
    """Two processes of a few steps each: the only way to see a real signal."""
    model_dir = tmp_path / "run"
    # Checkpoints only at epoch ends: one at another step comes from SIGTERM.
    argv = _argv(dataset, model_dir, epochs=2, steps_per_epoch=4, checkpoint_every=100)
    process = _cli_process(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        stdout, stderr = _lines(process.stdout), _lines(process.stderr)
        while True:  # after epoch 1's line, training continues in epoch 2
            line = stdout.get(timeout=240)
            assert line is not None, "".join(iter(stderr.get, None))[-3000:]
            if line.startswith("epoch 1/2"):
                break
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
        err = "".join(iter(lambda: stderr.get(timeout=30), None))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 143, err[-3000:]
    assert "Traceback" not in err, err
    stop = re.search(r"^stopped by SIGTERM at step (\d+) of 8: checkpoint saved in (\S+); "
                     r"run the same command again to resume$", err, re.M)
    assert stop, err
    step = int(stop.group(1))
    assert 4 < step < 8 and stop.group(2) == _backup(model_dir)
    assert os.path.isfile(f"{_backup(model_dir)}/ckpt-{step}.index")
    assert not os.path.exists(_lock(model_dir))

    done = subprocess.run([sys.executable, "-m", "resnet_keras", *argv], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming from step {step} (epoch 2)" in done.stdout
    assert "epoch 2/2" in done.stdout and "done: resnet20" in done.stdout
    assert tf.train.latest_checkpoint(_backup(model_dir)).endswith("ckpt-8")


def test_sigint_saves_a_checkpoint_and_exits_130(dataset, tmp_path):
    model_dir = tmp_path / "run"

    class CtrlC:
        def on_train_batch_end(self, step, logs):
            if step == 2:
                os.kill(os.getpid(), signal.SIGINT)

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(train_lib.TrainingInterrupted) as stop:
        train_lib.train("resnet20", dataset, model_dir=str(model_dir), verbose=0,
                        callbacks=[CtrlC()], **dict(RUN, checkpoint_every=100))
    assert (stop.value.code, stop.value.signum) == (130, signal.SIGINT)
    assert stop.value.step == 3  # the step under way when the signal came is finished
    assert tf.train.latest_checkpoint(_backup(model_dir)).endswith("ckpt-3")
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored
    assert not os.path.exists(_lock(model_dir))


# --------------------------------------------------------------------------
# Numbers, damaged files and data the run cannot use


@pytest.mark.parametrize("option, value, message", [
    ("weight_decay", float("nan"), "weight decay (--weight-decay) must be a finite number "
                                   ">= 0, got nan"),
    ("warmup_epochs", float("inf"), "warm-up epochs (--warmup-epochs) must be a finite "
                                    "number >= 0, got inf"),
    ("learning_rate", float("inf"), "learning rate (--learning-rate) must be a finite number "
                                    "> 0, got inf"),
    ("label_smoothing", float("nan"), "label smoothing (--label-smoothing) must be a finite "
                                      "number in [0, 1), got nan"),
    ("max_steps", 2.5, "max steps must be a positive integer, got 2.5"),
])
def test_train_refuses_non_finite_numbers(dataset, tmp_path, option, value, message):
    model_dir = tmp_path / "run"
    with pytest.raises(ValueError) as err:
        train_lib.train("resnet20", dataset, model_dir=str(model_dir), verbose=0,
                        **dict(RUN, **{option: value}))
    assert str(err.value) == message
    assert not model_dir.exists()


def test_weight_decay_nan_from_the_command_line(dataset, tmp_path, capsys):
    status, _, err = _cli(capsys, _argv(dataset, tmp_path / "run") + ["--weight-decay", "nan"])
    line = _one_error_line(err)
    assert status == 2 and "nan" in line and "learning rate" not in line, line


def test_nan_before_the_first_checkpoint_says_none_was_written(dataset, tmp_path):
    model_dir = tmp_path / "run"
    with pytest.raises(train_lib.TrainingDiverged) as err:
        train_lib.train("resnet20", dataset, model_dir=str(model_dir), verbose=0,
                        learning_rate=1e30, **dict(RUN, checkpoint_every=100))
    assert "no checkpoint had been written yet (a rerun starts from step 0)" in str(err.value)
    assert "backup" not in str(err.value) and not os.path.exists(_backup(model_dir))


@pytest.mark.parametrize("damage", ["truncated best", "empty final"])
def test_damaged_saved_model_is_named(run_copy, dataset, capsys, damage):
    best, final = (rundir.path(str(run_copy), n) for n in (rundir.BEST_MODEL, rundir.FINAL_MODEL))
    if damage == "truncated best":
        _truncate(best, os.path.getsize(best) // 2)
        damaged = best
    else:
        os.remove(best)
        open(final, "w").close()
        damaged = final
    for argv in (["evaluate", "--model-dir", str(run_copy), "--dataset", dataset],
                 ["export", "--model-dir", str(run_copy), "--export-dir",
                  str(run_copy / "export")]):
        status, _, err = _cli(capsys, argv)
        line = _one_error_line(err)
        assert status == 2 and f"model file {damaged!r} is damaged" in line, line
        assert "not found" not in line.lower()


def test_damaged_run_config_is_named(run_copy, dataset, capsys):
    config = rundir.path(str(run_copy), rundir.CONFIG_FILE)
    with open(config, "w") as f:
        f.write('{"model": "resnet20", ')
    for argv in (["evaluate", "--model-dir", str(run_copy), "--dataset", dataset],
                 _argv(dataset, run_copy)):
        status, _, err = _cli(capsys, argv)
        line = _one_error_line(err)
        assert status == 2 and f"run config {config!r} is damaged" in line, line


def _two_class_folder(root, cifar, names, test_images="real"):
    """A folder dataset with classes NAMES, images from the CIFAR subset."""
    sources = sorted(glob.glob(os.path.join(cifar, "train", "*")))
    for split in ("train", "test"):
        for name, source in zip(names, sources):
            target = os.path.join(root, split, name)
            os.makedirs(target)
            for i, image in enumerate(sorted(glob.glob(os.path.join(source, "*")))[:6]):
                if split == "test" and test_images == "garbage":
                    with open(os.path.join(target, f"{i}.jpg"), "wb") as f:
                        f.write(b"these bytes are not an image")
                else:
                    shutil.copy(image, target)
    return f"folder:{root}"


def test_class_name_with_a_newline_is_refused_before_training(cifar_subset, tmp_path, capsys):
    data = _two_class_folder(str(tmp_path / "data"), cifar_subset, ["cat\nwild", "dog"])
    model_dir = tmp_path / "run"
    status, _, err = _cli(capsys, _argv(data, model_dir, batch_size=4) + [
        "--export-dir", str(tmp_path / "export")])
    line = _one_error_line(err)
    assert status == 2 and "class names must be non-empty single lines, got 'cat\\nwild'" in line
    assert not model_dir.exists()


def test_evaluation_where_nothing_decodes_is_refused(cifar_subset, tmp_path, capsys):
    data = _two_class_folder(str(tmp_path / "data"), cifar_subset, ["cat", "dog"], "garbage")
    model_dir = tmp_path / "run"
    status, out, err = _cli(capsys, _argv(data, model_dir, batch_size=4, epochs=1))
    line = _one_error_line(err)
    assert status == 2, err
    assert "test" in line and "could" in line and "decoded" in line, line
    assert "val_accuracy" not in out
    assert not os.path.exists(rundir.path(str(model_dir), rundir.BEST_MODEL))
    assert not os.path.exists(_lock(model_dir))


def test_evaluate_where_nothing_decodes_is_refused(finished_run, cifar_subset, tmp_path,
                                                   capsys):
    root = tmp_path / "data"
    names = sorted(os.listdir(os.path.join(cifar_subset, "test")))
    for split in ("train", "test"):
        for name in names:
            os.makedirs(root / split / name)
            (root / split / name / "0.jpg").write_bytes(b"not an image")
    status, _, err = _cli(capsys, ["evaluate", "--model-dir", str(finished_run),
                                   "--dataset", f"folder:{root}"])
    line = _one_error_line(err)
    assert status == 2 and "could" in line and "decoded" in line, line


def test_an_evaluation_that_sees_no_image_is_refused(dataset, tmp_path, monkeypatch):
    """Even past the data's own checks (images that stop decoding mid-run): no
    accuracy from 0 images, no best.keras picked on it; the epoch is kept."""
    model_dir = tmp_path / "run"
    monkeypatch.setattr(steps_lib.ReplicaSteps, "evaluation_totals",
                        lambda self, dist: steps_lib.Sums())
    with pytest.raises(ValueError, match=r"^no image of the 'test' split of folder:.* could "
                                         r"be decoded \(\d+ undecodable skipped\)"):
        train_lib.train("resnet20", dataset, model_dir=str(model_dir), verbose=0,
                        **dict(RUN, epochs=1))
    assert not os.path.exists(rundir.path(str(model_dir), rundir.BEST_MODEL))
    assert tf.train.latest_checkpoint(_backup(model_dir)).endswith("ckpt-3")
    assert not os.path.exists(_lock(model_dir))


def test_finished_run_is_intact(finished_run):
    """The shared run was not changed by the tests that copy it."""
    assert not os.path.exists(_lock(finished_run))
    assert np.isfinite(rundir.read_run_config(str(finished_run))["result"]["top1"])
