"""Test set-up shared by the whole suite.

Two logical CPU devices are configured before TensorFlow runs any op, so
MirroredStrategy tests get two replicas on a machine without a GPU.
"""
import os
import shutil
import tarfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("RESNET_KERAS_SHARED", os.path.join(os.path.dirname(REPO), "shared"))
CIFAR_TARBALL = os.path.join(SHARED, "datasets", "cifar10_jpeg.tar.gz")
REFERENCE = os.path.join(SHARED, "reference")
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck")


def extract_cifar_subset(dest, per_class_train, per_class_test):
    """Copy the first N images per class of the real CIFAR-10 into DEST.

    Layout: DEST/{train,test}/<class>/*.jpg (what ImageFolder reads). Only
    the wanted members are read from the tarball, so this takes seconds.
    """
    wanted = {"train": per_class_train, "test": per_class_test}
    counts = {}
    with tarfile.open(CIFAR_TARBALL, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 4:
                continue
            _, split, label, filename = parts
            if split not in wanted or counts.get((split, label), 0) >= wanted[split]:
                continue
            counts[(split, label)] = counts.get((split, label), 0) + 1
            out_dir = os.path.join(dest, split, label)
            os.makedirs(out_dir, exist_ok=True)
            with tar.extractfile(member) as src, open(os.path.join(out_dir, filename), "wb") as dst:
                shutil.copyfileobj(src, dst)
            if len(counts) == 20 and all(
                    counts[k] >= wanted[k[0]] for k in counts):
                break
    return dest


@pytest.fixture(scope="session")
def cifar_subset(tmp_path_factory):
    """Real CIFAR-10 JPEGs: 10 train and 4 test images per class."""
    if not os.path.isfile(CIFAR_TARBALL):
        pytest.skip(f"shared CIFAR-10 not found at {CIFAR_TARBALL}")
    return extract_cifar_subset(str(tmp_path_factory.mktemp("cifar10")), 10, 4)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long tests (still run in CI)")
