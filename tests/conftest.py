"""Test set-up shared by the whole suite.

Two logical CPU devices are configured before TensorFlow runs any op, so
MirroredStrategy tests get two replicas on a machine without a GPU.
"""
import os

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
    """The first N images per class of the real CIFAR-10, as an image folder in DEST."""
    from resnet_keras import data

    return data.extract_subset(CIFAR_TARBALL, dest, per_class_train, per_class_test)


@pytest.fixture(scope="session")
def cifar_subset(tmp_path_factory):
    """Real CIFAR-10 JPEGs: 10 train and 4 test images per class."""
    if not os.path.isfile(CIFAR_TARBALL):
        pytest.skip(f"shared CIFAR-10 not found at {CIFAR_TARBALL}")
    return extract_cifar_subset(str(tmp_path_factory.mktemp("cifar10")), 10, 4)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long tests (still run in CI)")
