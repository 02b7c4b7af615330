"""Test set-up shared by the whole suite.

Two logical CPU devices are configured before TensorFlow runs any op, so
MirroredStrategy tests get two replicas on a machine without a GPU.

Tests that need the shared data (``../shared`` or ``$RESNET_KERAS_SHARED``:
``datasets/cifar10_jpeg.tar.gz`` and ``reference/``) or torch skip without
them on a developer's machine; under ``CI`` (set and not ``0``/``false``) a
missing shared folder stops the run at its start, and a missing torch fails
the tests that need it.
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


def in_ci():
    """Whether the suite runs under CI (the ``CI`` environment variable)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing_shared():
    """The shared paths the suite needs that are absent."""
    return [path for path, present in ((CIFAR_TARBALL, os.path.isfile(CIFAR_TARBALL)),
                                       (REFERENCE, os.path.isdir(REFERENCE))) if not present]


def require_torch():
    """The torch module; skip without it, except under CI, where that fails."""
    try:
        import torch
    except ImportError:
        if in_ci():
            pytest.fail("torch is not installed; CI installs it with the [torch] extra "
                        "(make test)", pytrace=False)
        pytest.skip("torch not installed (pip install 'resnet-keras[torch]')")
    return torch


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long tests (still run in CI)")


def pytest_sessionstart(session):
    missing = missing_shared()
    if in_ci() and missing:
        pytest.exit(f"CI needs the shared test data, missing: {', '.join(missing)} "
                    f"(set RESNET_KERAS_SHARED to the shared folder)",
                    returncode=pytest.ExitCode.USAGE_ERROR)
