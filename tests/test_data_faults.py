"""Damaged and odd image folders, as a user meets them from the command line.

Folders are small real CIFAR-10 subsets (4 train / 2 test JPEGs per class)
with files broken in the test. Runs that could hang (a stream that never
yields, a named pipe) go through a subprocess with a timeout.
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import CIFAR_CLASSES, CIFAR_TARBALL, REPO, extract_cifar_subset
from resnet_keras import cli, data
from resnet_keras.data import datasets

# Lines libjpeg prints for the files these tests damage.
LIBJPEG_LINES = ("Improper call to JPEG library", "Corrupt JPEG data")


@pytest.fixture(scope="module")
def small_cifar(tmp_path_factory):
    if not os.path.isfile(CIFAR_TARBALL):
        pytest.skip(f"shared CIFAR-10 not found at {CIFAR_TARBALL}")
    return extract_cifar_subset(str(tmp_path_factory.mktemp("cifar")), 4, 2)


def _copy(src, dest):
    shutil.copytree(src, dest)
    return dest


def _truncate(path, keep=300):
    """Cut a JPEG after its headers: libjpeg fails on it (and says so on stderr)."""
    with open(path, "rb") as f:
        content = f.read()
    with open(path, "wb") as f:
        f.write(content[:keep])


def _add_extraneous_bytes(path):
    """Three junk bytes before the quantisation table: the image still decodes,
    and libjpeg warns "Corrupt JPEG data: 3 extraneous bytes before marker 0xdb"."""
    with open(path, "rb") as f:
        content = f.read()
    at = content.index(b"\xff\xdb")
    with open(path, "wb") as f:
        f.write(content[:at] + b"\x00\x00\x00" + content[at:])


def _train_argv(root, model_dir, *extra):
    return ["train", "--model", "resnet20", "--dataset", f"folder:{root}", "--epochs", "1",
            "--batch-size", "8", "--seed", "1", "--model-dir", str(model_dir), *extra]


def _run(code, args=(), timeout=150):
    """Run Python CODE in a fresh process (bounded by TIMEOUT); the finished process."""
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    try:
        return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        stderr = err.stderr or b""
        pytest.fail(f"still running after {timeout} s; {len(stderr)} bytes on stderr, ending "
                    f"{stderr[-300:]!r}")


CLI = "import sys\nfrom resnet_keras import cli\nsys.exit(cli.main(sys.argv[1:]))\n"


def _reported_skips(err):
    """The skipped-image counts the trainer reported on stderr."""
    return [int(n) for n in re.findall(
        r"(\d+) (?:undecodable|of \d+ train images)", err)]


# --------------------------------------------------------------------------
# No training image decodes


@pytest.mark.slow  # a fresh process, so that a hang stays bounded
def test_no_decodable_training_image_exits_2_at_once_and_a_fixed_rerun_trains(
        small_cifar, tmp_path, capsys):
    root = _copy(small_cifar, tmp_path / "data")
    for path in glob.glob(str(root / "train" / "*" / "*.jpg")):
        _truncate(path)
    model_dir = tmp_path / "run"
    done = _run(CLI, _train_argv(root, model_dir), timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1, lines[:5]
    assert lines[0].startswith("resnet-keras train: error: none of the 40 train images of "
                               f"folder:{root} could be read or decoded"), lines[0]
    assert not any(text in done.stderr for text in LIBJPEG_LINES)
    # The same command, once the images are fixed, trains in the same model dir.
    shutil.rmtree(root / "train")
    shutil.copytree(os.path.join(small_cifar, "train"), root / "train")
    status = cli.main(_train_argv(root, model_dir, "--max-steps", "1"))
    out, err = capsys.readouterr()
    assert status == 0, err
    assert out.strip().splitlines()[-1].startswith("done: resnet20")


@pytest.mark.slow  # a fresh process, so that a hang stays bounded
def test_a_stream_without_images_stops_with_an_error(small_cifar, tmp_path, monkeypatch):
    """Past what loading probes (a huge split), the training stream itself stops at
    its first empty pass: one error after exactly one pass (40 decoder lines), not an
    endless spin."""
    root = _copy(small_cifar, tmp_path / "data")
    for path in glob.glob(str(root / "train" / "*" / "*.jpg")):
        _truncate(path)
    # With the probe limited to 4 images, loading passes: the error below is the stream's.
    monkeypatch.setattr(datasets, "PROBE_LIMIT", 4)
    assert data.load_dataset(f"folder:{root}").num_train == 40
    probe_less = "from resnet_keras.data import datasets\ndatasets.PROBE_LIMIT = 4\n" + CLI
    done = _run(probe_less, _train_argv(root, tmp_path / "run"), timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and "none of the 40 train images" in lines[0], lines[:5]
    assert "(40 decoder message(s) hidden; e.g. train/" in lines[0], lines[0]


# --------------------------------------------------------------------------
# Splits whose class folders hold no images


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_split_without_images_is_one_line(small_cifar, tmp_path, capsys, split):
    root = _copy(small_cifar, tmp_path / "data")
    for path in glob.glob(str(root / split / "*" / "*.jpg")):
        os.remove(path)
    (root / split / "cat" / "notes.txt").write_text("not an image")
    model_dir = tmp_path / "run"
    status = cli.main(_train_argv(root, model_dir))
    _, err = capsys.readouterr()
    assert status == 2
    assert err.startswith(f"resnet-keras train: error: split {split!r} of dataset folder "
                          f"{str(root)!r} has no images: its class folders "
                          f"{', '.join(CIFAR_CLASSES)} hold no *.jpg"), err
    assert "cat/notes.txt" in err and len(err.strip().splitlines()) == 1
    assert not model_dir.exists()


# --------------------------------------------------------------------------
# Hidden entries and files that are not regular files


def _files_by_class(root, split):
    """(images decoded by PIL [N, 32, 32, 3], their class indices) from the folders."""
    images, labels = [], []
    for index, name in enumerate(CIFAR_CLASSES):
        for path in sorted(glob.glob(os.path.join(root, split, name, "*.jpg"))):
            images.append(np.asarray(Image.open(path).convert("RGB"), np.float32))
            labels.append(index)
    return np.stack(images), np.array(labels)


def test_dot_entries_are_not_classes_or_images(small_cifar, tmp_path, capsys):
    root = _copy(small_cifar, tmp_path / "data")
    some_jpeg = sorted(glob.glob(str(root / "train" / "truck" / "*.jpg")))[0]
    for split in ("train", "test"):
        hidden = root / split / ".ipynb_checkpoints"
        hidden.mkdir()
        shutil.copy(some_jpeg, hidden / "0000-checkpoint.jpg")
        (root / split / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    shutil.copy(some_jpeg, root / "train" / "airplane" / "._0000.jpg")  # AppleDouble
    os.makedirs(root / ".Trash" / "x")
    model_dir = tmp_path / "run"
    status = cli.main(_train_argv(root, model_dir, "--max-steps", "1"))
    _, err = capsys.readouterr()
    assert status == 0, err
    with open(model_dir / "run_config.json") as f:
        assert json.load(f)["class_names"] == list(CIFAR_CLASSES)

    dataset = data.load_dataset(f"folder:{root}")
    assert (dataset.class_names, dataset.num_train, dataset.num_eval) == (
        list(CIFAR_CLASSES), 40, 20)
    for split, pipeline in (("train", dataset.train), ("test", dataset.eval)):
        files, file_labels = _files_by_class(small_cifar, split)
        matched = []
        for image, label in pipeline:  # each image is labelled as its file's folder
            distance = np.abs(files - image.numpy().astype(np.float32)).mean(axis=(1, 2, 3))
            nearest = int(np.argmin(distance))
            assert distance[nearest] < 3 and file_labels[nearest] == int(label)
            matched.append(nearest)
        assert sorted(matched) == list(range(len(files)))
    assert dataset.skipped_images == 0


@pytest.mark.slow  # a fresh process, so that a hang stays bounded
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_named_pipe_or_folder_called_jpg_is_skipped_not_read(small_cifar, tmp_path):
    root = _copy(small_cifar, tmp_path / "data")
    os.mkfifo(root / "train" / "cat" / "x.jpg")
    os.mkdir(root / "train" / "dog" / "folder.jpg")
    done = _run(CLI, _train_argv(root, tmp_path / "run", "--max-steps", "1"), timeout=150)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _reported_skips(done.stderr) == [2], done.stderr[-2000:]

    dataset = data.load_dataset(f"folder:{root}")
    assert dataset.num_train == 42
    assert sum(1 for _ in dataset.train) == 40
    report = dataset.skipped_report()
    assert report.startswith("2 of 42 train images of ") and "train/cat/x.jpg" in report


# --------------------------------------------------------------------------
# Undecodable images are counted once, and libjpeg's lines are not shown


def test_undecodable_images_are_counted_once_across_epochs(small_cifar, tmp_path, capfd):
    root = _copy(small_cifar, tmp_path / "data")
    paths = sorted(glob.glob(str(root / "train" / "*" / "*.jpg")))
    for path in paths[::8]:  # 5 of the 40
        _truncate(path)
    _add_extraneous_bytes(paths[1])  # decodes, with a libjpeg warning
    # Batch 5: each epoch takes 40 images of the 35 that decode, so the three
    # epochs pass over the folder four times.
    status = cli.main(_train_argv(root, tmp_path / "run", "--epochs", "3",
                                  "--batch-size", "5"))
    _, err = capfd.readouterr()
    assert status == 0, err
    assert _reported_skips(err) == [5], err
    assert not any(text in err for text in LIBJPEG_LINES), err
    hidden = [line for line in err.splitlines() if "hidden" in line]
    assert len(hidden) == 1, err

    dataset = data.load_dataset(f"folder:{root}")
    for _ in range(3):
        assert sum(1 for _ in dataset.train) == 35
    assert dataset.skipped_images == 5
    assert dataset.skipped_report().startswith(
        f"5 of 40 train images of folder:{root} could not be read or decoded")


def test_decoder_lines_are_counted_and_other_stderr_passes(capfd):
    from resnet_keras.data import decoder_messages

    good = tf.io.encode_jpeg(tf.fill([8, 8, 3], tf.constant(90, tf.uint8))).numpy()
    truncated = good[:len(good) // 3]
    before = decoder_messages.count()
    with decoder_messages.hidden():
        for _ in range(3):
            with pytest.raises(tf.errors.InvalidArgumentError):
                data.decode_image(truncated)
        os.write(2, b"a line of our own\n")
        print("and one from Python", file=sys.stderr)
    _, err = capfd.readouterr()
    # Both lines pass (Python's sys.stderr and fd 2 may interleave in either order).
    assert "a line of our own\n" in err and "and one from Python" in err, err
    assert not any(text in err for text in ("JPEG", "Input file read error")), err
    assert decoder_messages.count() - before >= 3
    with pytest.raises(tf.errors.InvalidArgumentError):
        data.decode_image(truncated)
    _, err = capfd.readouterr()
    assert err.strip(), "outside the block the decoder's line is shown"
