"""tf.distribute strategies: one device, mirrored (GPUs or logical CPU
devices), multi-worker from ``TF_CONFIG``; which worker writes files.

Create the strategy before TensorFlow runs any op: multi-worker and split
CPUs can only be configured in a fresh runtime.
"""
import json
import os
import sys

import tensorflow as tf

from resnet_keras import errors
from resnet_keras.training.config import STRATEGIES


def make_strategy(kind="auto", num_cpu_replicas=None):
    """A tf.distribute strategy: auto, one-device, mirrored or multi-worker.

    ``auto`` is mirrored with more than one GPU (or with ``num_cpu_replicas``
    > 1 and no GPU), else one-device. ``mirrored`` without GPUs splits the
    CPU into ``num_cpu_replicas`` logical devices. ``multi-worker`` reads the
    cluster from ``TF_CONFIG``. Create it before TensorFlow runs any op.
    """
    if kind not in STRATEGIES:
        raise ValueError(f"unknown strategy {kind!r}; choices: {', '.join(STRATEGIES)}")
    if kind == "multi-worker":
        return _multi_worker_strategy()
    gpus = tf.config.list_physical_devices("GPU")
    if kind == "auto":
        many = len(gpus) > 1 or (not gpus and (num_cpu_replicas or 1) > 1)
        kind = "mirrored" if many else "one-device"
    if kind == "one-device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    if gpus:
        if num_cpu_replicas:
            print(f"note: --num-cpu-replicas ignored, using the {len(gpus)} GPU(s)",
                  file=sys.stderr)
        return tf.distribute.MirroredStrategy()
    devices = _cpu_devices(num_cpu_replicas or 1)
    return tf.distribute.MirroredStrategy(
        devices, cross_device_ops=tf.distribute.ReductionToOneDevice())


def _cpu_devices(count):
    """Names of ``count`` logical CPU devices, configuring them if TF is not started."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu) or [None]
    if len(current) != count:
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * count)
        except RuntimeError:
            have = len(tf.config.list_logical_devices("CPU"))
            if have != count and count > 1:
                raise ValueError(
                    f"--num-cpu-replicas {count}: TensorFlow already runs with {have} CPU "
                    "device(s) in this process; start a fresh process") from None
            count = min(count, have)
    return [f"/cpu:{i}" for i in range(count)]


def parse_tf_config(raw):
    """The TF_CONFIG JSON -> (cluster dict, task type, task index); ValueError if invalid."""
    if not raw:
        raise ValueError(
            "--strategy multi-worker needs TF_CONFIG, e.g. "
            '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": 0}}; it is not set')
    try:
        config = json.loads(raw)
        cluster, task = config["cluster"], config["task"]
        task_type, index = task["type"], int(task["index"])
        members = cluster[task_type]
        assert isinstance(members, list) and all(isinstance(m, str) for m in members)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise ValueError(
            f"TF_CONFIG is not valid: {raw!r}; expected JSON with cluster.<type> "
            "(a list of host:port) and task.type / task.index") from None
    if task_type not in ("chief", "worker") or not 0 <= index < len(members):
        raise ValueError(
            f"TF_CONFIG task {task!r} is not in the cluster "
            f"({', '.join(f'{k}: {len(v)}' for k, v in cluster.items())})")
    return cluster, task_type, index


def _multi_worker_strategy():
    parse_tf_config(os.environ.get("TF_CONFIG"))
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as err:
        raise ValueError(
            "--strategy multi-worker must start before TensorFlow runs any op "
            f"({errors.first_line(err)}); run it in a fresh process") from None


def is_chief(strategy):
    """True on the worker that writes files (always true off multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief" or task_type is None:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief
