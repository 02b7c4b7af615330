"""What a benchmark measures in its own process: times, peak memory, the machine.

:func:`matmul_peak` is the hardware's reference rate (a large matrix
product at a given precision); :func:`machine_line` names the CPU, the
flags that decide its kernels, the GPUs and the TensorFlow and Keras
versions, in one line.
"""
import importlib.metadata
import os
import resource
import statistics
import sys
import time

MATMUL_SIZE = 2048


def peak_memory_mib():
    """Peak resident memory of this process so far, in MiB (Linux: ru_maxrss in KiB)."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def median_seconds(fn, warmup, repeats, calls=1):
    """Median over REPEATS of the mean time of CALLS calls of FN, after WARMUP calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def matmul_peak(dtype="float32", size=MATMUL_SIZE, repeats=7):
    """FLOP/s of a SIZE x SIZE matrix product in DTYPE (median of REPEATS).

    Ten chained products run per timed call, so the call overhead is amortised.
    It runs on Keras' backend: TensorFlow, or JAX (``benchmark jax``).
    """
    import keras

    chain = (_jax_matmul_chain if keras.backend.backend() == "jax"
             else _tf_matmul_chain)(dtype, size)
    seconds = median_seconds(chain, 2, repeats)
    return 10 * 2 * size**3 / seconds


def _tf_matmul_chain(dtype, size):
    import tensorflow as tf

    a = tf.random.stateless_normal((size, size), seed=(1, 2), dtype=tf.float32)
    a = tf.Variable(tf.cast(a / size**0.5, dtype))

    @tf.function
    def chain():
        x = a
        for _ in range(10):
            x = tf.matmul(x, a)
        return tf.reduce_sum(tf.cast(x[:1, :1], tf.float32))

    return lambda: chain().numpy()


def _jax_matmul_chain(dtype, size):
    import jax

    a = jax.random.normal(jax.random.PRNGKey(1), (size, size)) / size**0.5
    a = a.astype(dtype)

    @jax.jit
    def chain(a):
        x = a
        for _ in range(10):
            x = x @ a
        return x[0, 0]

    return lambda: chain(a).block_until_ready()


class StepTimer:
    """Wall-clock time at the end of each training step (Keras and trainer callbacks)."""

    def __init__(self):
        self.times = []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())

    def step_seconds(self, warmup):
        gaps = [b - a for a, b in zip(self.times, self.times[1:])]
        return gaps[warmup:]


KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8")


def machine_line(cpuinfo="/proc/cpuinfo"):
    """The CPU model, the flags that decide its kernels, its cores, any NVIDIA
    GPUs and the TensorFlow and Keras versions, in one line."""
    cpu, flags = "unknown CPU", set()
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and cpu == "unknown CPU":
                    cpu = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    try:
        gpus = len(os.listdir("/proc/driver/nvidia/gpus"))
    except OSError:
        gpus = 0
    has = [flag for flag in KERNEL_FLAGS if flag in flags] or ["none of " + "/".join(KERNEL_FLAGS)]
    versions = []
    for shown, dist in (("TF", _tf_dist()), ("Keras", "keras")):
        try:
            versions.append(f"{shown} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return (f"{os.cpu_count()} CPU cores ({cpu}; {' '.join(has)})"
            + (f", {gpus} GPU(s)" if gpus else "") + "".join(f", {v}" for v in versions))


def _tf_dist():
    """The installed TensorFlow distribution's name (tensorflow or tensorflow-cpu)."""
    for name in ("tensorflow", "tensorflow-cpu"):
        try:
            importlib.metadata.version(name)
            return name
        except importlib.metadata.PackageNotFoundError:
            continue
    return "tensorflow"
