"""What a benchmark measures in its own process: times, peak memory, the machine.

:func:`serving_times` times every serving runtime the same way (p50 and p99
latency at batch 1, throughput at batch N); :func:`matmul_peak` is the
hardware's reference rate (a large matrix product at a given precision);
:func:`machine_line` names the CPU, the flags that decide its kernels, the
GPUs and the TensorFlow and Keras versions, in one line.

Only the standard library is imported at the top (Keras and JAX inside the
functions that use them): the LiteRT and onnxruntime contenders use this
module in processes that hold no TensorFlow.
"""
import importlib.metadata
import os
import resource
import statistics
import sys
import time

from resnet_keras import cpuinfo as cpuinfo_lib

MATMUL_SIZE = 2048


def peak_memory_mib(status="/proc/self/status"):
    """Peak resident memory of this process so far, in MiB.

    Linux: ``VmHWM`` of /proc/self/status, this program's own. (``ru_maxrss``
    also counts the parent's resident memory at the fork: a child of a
    process holding TensorFlow would report TensorFlow's memory too.)
    Elsewhere: ``ru_maxrss`` (bytes on macOS).
    """
    try:
        with open(status) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
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


def call_seconds(fn, warmup, count):
    """The time of each of COUNT calls of FN, timed one by one, after WARMUP calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(count):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def percentile(samples, q):
    """The Q-th percentile of SAMPLES, interpolated linearly between ranks (as numpy)."""
    ordered = sorted(samples)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def serving_times(call_for_batch, batch_size, warmup, repeats, calls):
    """Latency and throughput of one serving path, measured alike for every runtime.

    ``call_for_batch(n)`` returns a function that serves one batch of n
    images; the batch-1 function is done with before the batch-N one is
    asked for. Batch 1: REPEATS x CALLS single-image calls, each timed alone,
    give the p50 and p99 latency in ms. Batch BATCH_SIZE: the median over
    REPEATS of the mean of CALLS // BATCH_SIZE calls gives images/second.
    """
    single = call_seconds(call_for_batch(1), warmup, repeats * calls)
    seconds = median_seconds(call_for_batch(batch_size), warmup, repeats,
                             max(1, calls // batch_size))
    return {"latency_p50_ms": 1e3 * percentile(single, 50),
            "latency_p99_ms": 1e3 * percentile(single, 99),
            "throughput": batch_size / seconds}


def size_mb(path):
    """The size of the file PATH, or of all files below the folder PATH, in MB (10^6 bytes)."""
    if not os.path.isdir(path):
        return os.path.getsize(path) / 1e6
    return sum(os.path.getsize(os.path.join(folder, name))
               for folder, _, names in os.walk(path) for name in names) / 1e6


def cpu_threads():
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


PEAK_REPEAT_SECONDS = 0.25  # the aim for one timed repeat of the matrix products
MAX_CHAIN = 10


def chain_length(product_seconds):
    """How many matrix products of PRODUCT_SECONDS each one timed call chains:
    about PEAK_REPEAT_SECONDS of them, at least 1 and at most MAX_CHAIN."""
    return max(1, min(MAX_CHAIN, round(PEAK_REPEAT_SECONDS / product_seconds)))


def matmul_peak(dtype="float32", size=MATMUL_SIZE, repeats=7):
    """FLOP/s of a SIZE x SIZE matrix product in DTYPE (median of REPEATS).

    Each timed call chains :func:`chain_length` products: up to ten where one
    is short (a GPU, a fast CPU), which amortises the call overhead, and one
    where a product alone takes a quarter of a second (2 cores without
    AVX-512), so that the measurement lasts seconds there, not half a minute.
    It runs on Keras' backend: TensorFlow, or JAX (``benchmark jax``).
    """
    import keras

    make = _jax_matmul_chain if keras.backend.backend() == "jax" else _tf_matmul_chain
    single = make(dtype, size, 1)
    links = chain_length(median_seconds(single, 1, 1))
    chain = single if links == 1 else make(dtype, size, links)
    seconds = median_seconds(chain, 0 if links == 1 else 1, repeats)
    return links * 2 * size**3 / seconds


def _tf_matmul_chain(dtype, size, links):
    import tensorflow as tf

    a = tf.random.stateless_normal((size, size), seed=(1, 2), dtype=tf.float32)
    a = tf.Variable(tf.cast(a / size**0.5, dtype))

    @tf.function
    def chain():
        x = a
        for _ in range(links):
            x = tf.matmul(x, a)
        return tf.reduce_sum(tf.cast(x[:1, :1], tf.float32))

    return lambda: chain().numpy()


def _jax_matmul_chain(dtype, size, links):
    import jax

    a = jax.random.normal(jax.random.PRNGKey(1), (size, size)) / size**0.5
    a = a.astype(dtype)

    @jax.jit
    def chain(a):
        x = a
        for _ in range(links):
            x = x @ a
        return x[0, 0]

    return lambda: chain(a).block_until_ready()


class StepTimer:
    """Wall-clock times of training's progress ticks.

    ``on_train_batch_end(step)`` takes STEP, the number of steps done so far,
    as the trainer's callbacks do (it ticks every few steps, as in real
    training); ``contenders`` adapts Keras callbacks, whose batch index starts
    at 0.
    """

    def __init__(self):
        self.ticks = []

    def on_train_batch_end(self, step, logs=None):
        self.ticks.append((step, time.perf_counter()))

    def step_seconds(self, warmup):
        """Seconds per step after the first WARMUP + 1 steps: each gap between
        two ticks divided by the steps it spans, once for each of them."""
        seconds = []
        for (done, start), (later, end) in zip(self.ticks, self.ticks[1:]):
            if done > warmup:
                seconds += [(end - start) / (later - done)] * (later - done)
        return seconds


KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def machine_line(cpuinfo=cpuinfo_lib.CPUINFO):
    """The CPU model, the flags that decide its kernels, a cap on oneDNN's
    kernels (``ONEDNN_MAX_CPU_ISA``) where one is set, its cores, any NVIDIA
    GPUs and the TensorFlow and Keras versions, in one line."""
    cpu, flags = cpuinfo_lib.read(cpuinfo)
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
    cap = cpuinfo_lib.onednn_isa_cap()
    if cap:
        has.append(f"oneDNN capped at {cap}")
    return (f"{os.cpu_count()} CPU cores ({cpu or 'unknown CPU'}; {' '.join(has)})"
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
