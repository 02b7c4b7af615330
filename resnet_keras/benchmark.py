"""Speed benchmarks: training, serving and the input pipeline, against peers and peak.

    resnet-keras benchmark train --model resnet50 --image-size 224 --batch-size 32
    resnet-keras benchmark train --model resnet20 --image-size 32 --batch-size 128
    resnet-keras benchmark serve --model resnet50 --image-size 224
    resnet-keras benchmark pipeline
    resnet-keras benchmark forward --model drn_c_26 --batch-size 8
    resnet-keras benchmark all --output bench.json
    KERAS_BACKEND=jax resnet-keras benchmark jax --batch-size 256   # on a GPU

Every contender runs in a fresh process, back to back in one run, so each
one's peak resident memory is its own and no contender inherits another's
compiled functions or thread pools. Each reports the median of several timed
repetitions after warm-up; ratios to the baseline measured in the same run
are printed, because absolute times drift on shared machines.

Training contenders feed the same real CIFAR-10 images held in memory:
keras.applications.ResNet50 with a default ``compile``/``fit`` in float32
(the baseline), the resnet_keras model through the same ``fit``, and
``resnet_keras.train.train`` (the ``resnet-keras train`` loop, with its
per-device precision default and with float32). Hardware efficiency is the
training FLOP rate (3 x 2 x multiply-adds per image) over the peak of a
large matrix product at the same precision, measured in the same process.

The ``jax`` suite is the GPU benchmark: keras.applications.ResNet50 and the
resnet_keras model through Keras ``fit`` on the JAX backend, in float32 and
mixed bfloat16, printed beside published ResNet-50 figures for the GPU class.
It needs jax, not TensorFlow.
"""
import json
import importlib.metadata
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

RESULT_TAG = "BENCHMARK-RESULT "
MATMUL_SIZE = 2048


# --------------------------------------------------------------------------
# Measurements (run inside a contender's process)


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


def _keras_callback(timer):
    import keras

    class Callback(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            timer.on_train_batch_end(batch, logs)

    return Callback()


def _in_memory_batches(folder, image_size, batch_size, count):
    """COUNT real images decoded, resized and normalised once, repeated in batches."""
    from resnet_keras import data, preprocessing

    dataset = data.load_dataset(f"folder:{folder}")
    images = dataset.train.take(count).map(
        lambda image, label: (preprocessing.eval_transform(image, image_size), label))
    return images.cache().repeat().batch(batch_size, drop_remainder=True).prefetch(2)


def _train_job(job):
    """One training contender: its per-step times, precision and FLOPs per image."""
    import keras
    import tensorflow as tf

    from resnet_keras import train

    size, batch, steps = job["image_size"], job["batch_size"], job["steps"]
    shape = (size, size, 3)
    timer = StepTimer()
    keras.utils.set_random_seed(0)
    if job["kind"] == "trainer":
        with tempfile.TemporaryDirectory() as model_dir:
            # A cached subset that the warm-up steps read once: the timed steps
            # take decoded images from memory, as the fit contenders do.
            result = train.train(
                job["model"], f"folder:{job['folder']}", epochs=1, batch_size=batch,
                model_dir=model_dir, image_size=size, strategy="one-device",
                steps_per_epoch=steps, train_subset=batch * job["warmup"], cache=True,
                mixed_precision=job["mixed_precision"], seed=0, learning_rate=0.01,
                callbacks=[timer], verbose=0, checkpoint_every=10**9)
            model, policy = result.model, result.config["recipe"]["mixed_precision"]
            precision = train.precision_policy(policy)
    else:
        model = _compiled_for_fit(job["kind"], job["model"], shape, classes=10)
        batches = _in_memory_batches(job["folder"], size, batch, batch * job["warmup"])
        model.fit(batches, epochs=1, steps_per_epoch=steps, verbose=0,
                  callbacks=[_keras_callback(timer)])
        precision = "float32"
    return _train_result(timer, job["warmup"], model, precision,
                         on_gpu=bool(tf.config.list_physical_devices("GPU")))


def _compiled_for_fit(kind, name, shape, classes):
    """keras.applications.ResNet50 or the resnet_keras model NAME, compiled for ``fit``."""
    import keras

    import resnet_keras

    if kind == "keras-applications":
        model = keras.applications.ResNet50(weights=None, input_shape=shape, classes=classes)
    else:
        model = resnet_keras.build_model(name, classes=classes, input_shape=shape)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _train_result(timer, warmup, model, precision, on_gpu):
    """A training contender's result: step times, MACs and the matmul peak at its precision."""
    import keras

    import resnet_keras

    compute = keras.DTypePolicy(precision).compute_dtype
    return {"step_seconds": timer.step_seconds(warmup), "precision": precision,
            "macs": resnet_keras.count_macs(model),
            "matmul_peak": matmul_peak(compute, MATMUL_SIZE * (4 if on_gpu else 1)),
            "matmul_dtype": compute}


def _jax_train_job(job):
    """One training contender on Keras' JAX backend: Keras ``fit``, data on the device."""
    import jax
    import keras
    import numpy as np

    if keras.backend.backend() != "jax":
        raise RuntimeError(f"the jax contenders need KERAS_BACKEND=jax, not "
                           f"{keras.backend.backend()!r}")
    size, batch, classes = job["image_size"], job["batch_size"], job["classes"]
    shape = (size, size, 3)
    # No keras.utils.set_random_seed: it would also import TensorFlow to seed it.
    keras.mixed_precision.set_dtype_policy(job["precision"])
    model = _compiled_for_fit(job["kind"], job["model"], shape, classes)
    # One batch held on the device: the step time is the model's alone.
    rng = np.random.default_rng(0)
    images = jax.device_put(rng.normal(size=(batch, *shape)).astype(np.float32))
    labels = jax.device_put(rng.integers(0, classes, batch).astype(np.int32))

    def batches():
        while True:
            yield images, labels

    timer = StepTimer()
    model.fit(batches(), epochs=1, steps_per_epoch=job["steps"], verbose=0, shuffle=False,
              callbacks=[_keras_callback(timer)])
    result = _train_result(timer, job["warmup"], model, job["precision"],
                           on_gpu=jax.devices()[0].platform == "gpu")
    return dict(result, device=_jax_device_line())


def _jax_device_line():
    import jax

    device = jax.devices()[0]
    return f"{jax.device_count()} x {device.device_kind} ({device.platform}), jax {jax.__version__}"


def _serve_job(job):
    """Latency (batch 1) and throughput (batch N) of one serving path."""
    import numpy as np
    import tensorflow as tf

    from resnet_keras import export, preprocessing

    size, timings = job["image_size"], {}
    rng = np.random.RandomState(0)
    for batch in (1, job["batch_size"]):
        pixels = rng.randint(0, 256, (batch, size, size, 3)).astype(np.uint8)
        if job["kind"] == "savedmodel":
            loaded = export.load_serving(job["export_dir"])  # tag "serve", by signature name
            signature = export.get_signature(loaded, export.SERVING_DEFAULT)
            images = tf.constant(pixels)
            fn = lambda: signature(images=images)["probabilities"].numpy()  # noqa: E731
        else:
            import keras

            model = keras.saving.load_model(job["keras_file"], compile=False)
            floats = preprocessing.eval_transform(tf.constant(pixels), size).numpy()
            fn = lambda: model.predict(floats, batch_size=batch, verbose=0)  # noqa: E731
        calls = max(1, job["calls"] // batch)
        timings[batch] = median_seconds(fn, job["warmup"], job["repeats"], calls)
    return {"batch_seconds": {str(k): v for k, v in timings.items()}}


def _export_job(job):
    """Build the seeded model once; write it as .keras and as a SavedModel."""
    import keras

    import resnet_keras
    from resnet_keras import export

    keras.utils.set_random_seed(0)
    size, classes = job["image_size"], job["classes"]
    model = resnet_keras.build_model(job["model"], classes=classes,
                                     input_shape=(size, size, 3))
    model.save(job["keras_file"])
    version_dir = export.export_saved_model(
        model, job["export_base"], image_size=size,
        class_names=[f"class_{i}" for i in range(classes)])
    return {"export_dir": version_dir, "params": model.count_params()}


def _pipeline_job(job):
    """Images/second of the training pipeline alone: decode, shuffle, augment, batch."""
    from resnet_keras import data

    dataset = data.load_dataset(f"folder:{job['folder']}")
    count = min(job["images"], dataset.num_train)
    batch = job["batch_size"]
    pipeline = data.train_pipeline(dataset.train.take(count), job["image_size"], batch,
                                   seed=0, num_examples=count)
    iterator = iter(pipeline)
    for _ in range(job["warmup"]):
        next(iterator)
    batches = max(1, count // batch)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return {"images_per_second": batches * batch / (time.perf_counter() - start),
            "images": batches * batch}


def _forward_job(job):
    """Inference time of one model as a traced function, batch N."""
    import keras
    import numpy as np
    import tensorflow as tf

    import resnet_keras

    size, batch = job["image_size"], job["batch_size"]
    shape = (size, size, 3)
    if job["model"] == "keras.applications.ResNet50":
        model = keras.applications.ResNet50(weights=None, input_shape=shape)
    else:
        model = resnet_keras.build_model(job["model"], input_shape=shape)
    images = tf.constant(np.random.default_rng(0).normal(size=(batch, *shape)), tf.float32)
    forward = tf.function(lambda x: model(x, training=False))
    seconds = median_seconds(lambda: forward(images).numpy(), job["warmup"], job["repeats"])
    return {"seconds": seconds, "macs": resnet_keras.count_macs(model)}


JOBS = {"train": _train_job, "jax-train": _jax_train_job, "serve": _serve_job,
        "export": _export_job, "pipeline": _pipeline_job, "forward": _forward_job}


def run_job(job):
    """Run one contender in this process; its result dict with peak memory."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    result = JOBS[job["job"]](job)
    result["peak_memory_mib"] = peak_memory_mib()
    return result


def run_in_child(job, env=None):
    """Run one contender in a fresh Python process (ENV added to its environment)."""
    process = subprocess.run([sys.executable, "-m", "resnet_keras.benchmark", json.dumps(job)],
                             stdout=subprocess.PIPE, text=True,
                             env=dict(os.environ, **(env or {})))
    lines = [line for line in process.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if process.returncode or not lines:
        raise RuntimeError(f"benchmark contender {job.get('label', job['job'])!r} failed "
                           f"(exit status {process.returncode}); its error is above")
    return json.loads(lines[-1][len(RESULT_TAG):])


# --------------------------------------------------------------------------
# Suites (run in the parent process; each contender in a child)


def _say(message):
    print(message, file=sys.stderr, flush=True)


def _cifar_folder(folder):
    if folder:
        return folder
    from resnet_keras import data

    return data.local_cifar10()[len(data.FOLDER_PREFIX):]


def train_suite(model="resnet50", image_size=224, batch_size=32, steps=12, warmup=4,
                folder=None):
    """Training images/second of each contender, efficiency and memory (a list of rows)."""
    if steps <= warmup + 1:
        raise ValueError(f"steps ({steps}) must exceed warmup + 1 ({warmup + 1})")
    with tempfile.TemporaryDirectory() as workdir:
        if not folder:
            # The images the contenders cycle through, and one test image per
            # class for the trainer's end-of-epoch evaluation.
            from resnet_keras import data

            folder = data.extract_subset(data.default_cifar10_archive(), workdir,
                                         -(-batch_size * warmup // 10), 1)
        return _train_contenders(model, image_size, batch_size, steps, warmup, folder)


def _train_contenders(model, image_size, batch_size, steps, warmup, folder):
    common = {"job": "train", "model": model, "image_size": image_size,
              "batch_size": batch_size, "steps": steps, "warmup": warmup, "folder": folder}
    return _train_rows(common, [
        ("keras.applications.ResNet50 fit (float32)", {"kind": "keras-applications"}),
        (f"{model} fit (float32)", {"kind": "fit"}),
        (f"{model} resnet-keras train (float32)", {"kind": "trainer", "mixed_precision": False}),
        (f"{model} resnet-keras train (default)", {"kind": "trainer", "mixed_precision": None}),
    ])


def _train_rows(common, contenders, env=None):
    """Run each (label, job fields) contender in a child; rows with ratios to the first."""
    size, batch = common["image_size"], common["batch_size"]
    rows = []
    for label, fields in contenders:
        _say(f"train: {label} at {size}x{size}, batch {batch}, {common['steps']} steps ...")
        result = run_in_child(dict(common, label=label, **fields), env=env)
        step = statistics.median(result["step_seconds"])
        speed = batch / step
        flops = 6 * result["macs"] * speed
        rows.append({"suite": "train", "label": label, "images_per_second": speed,
                     "step_seconds": step, "precision": result["precision"],
                     "train_flops_per_second": flops, "matmul_peak": result["matmul_peak"],
                     "matmul_dtype": result["matmul_dtype"],
                     "efficiency": flops / result["matmul_peak"],
                     "peak_memory_mib": result["peak_memory_mib"],
                     "model": common["model"], "image_size": size, "batch_size": batch,
                     "device": result.get("device")})
    base = rows[0]["images_per_second"]
    for row in rows:
        row["ratio"] = row["images_per_second"] / base
    return rows


# Published single-GPU training throughput of ResNet-50 v1.5 at 224, batch 256,
# images/second: NVIDIA DeepLearningExamples, PyTorch, NGC container 21.03.
PUBLISHED_GPU = {"A100": {"TF32": 938, "mixed precision": 2470},
                 "V100": {"FP32": 367, "mixed precision": 1200}}
PUBLISHED_SOURCE = ("NVIDIA DeepLearningExamples, PyTorch ResNet-50 v1.5, 1 GPU, "
                    "batch 256 (NGC 21.03)")


def jax_suite(model="resnet50", image_size=224, batch_size=32, steps=12, warmup=4,
              classes=1000):
    """Training images/second on Keras' JAX backend (the GPU benchmark): a list of rows.

    keras.applications.ResNet50 and MODEL through Keras ``fit``, in float32 and
    mixed bfloat16, one batch held on the device. Needs ``jax`` (``pip install
    "resnet-keras[jax]"``, or jax[cuda12] for GPUs), not TensorFlow.
    """
    import importlib.util

    if importlib.util.find_spec("jax") is None:
        raise ValueError("the jax suite needs jax: pip install 'resnet-keras[jax]' "
                         "(on NVIDIA GPUs: pip install 'jax[cuda12]')")
    if steps <= warmup + 1:
        raise ValueError(f"steps ({steps}) must exceed warmup + 1 ({warmup + 1})")
    common = {"job": "jax-train", "model": model, "image_size": image_size,
              "batch_size": batch_size, "steps": steps, "warmup": warmup, "classes": classes}
    contenders = [(f"{name} jax fit ({precision.replace('mixed_', '')})",
                   {"kind": kind, "precision": precision})
                  for precision in ("float32", "mixed_bfloat16")
                  for name, kind in (("keras.applications.ResNet50", "keras-applications"),
                                     (model, "fit"))]
    return _train_rows(common, contenders, env={"KERAS_BACKEND": "jax"})


def published_gpu_lines(device):
    """The published ResNet-50 figures for the GPU class named in DEVICE, as lines."""
    def shown(gpu):
        return f"{gpu}: " + ", ".join(f"{precision} {speed} img/s"
                                      for precision, speed in PUBLISHED_GPU[gpu].items())

    same = [gpu for gpu in PUBLISHED_GPU if gpu.lower() in device.lower()]
    if same:
        return [f"published for {shown(gpu)} ({PUBLISHED_SOURCE})" for gpu in same]
    if "(gpu)" in device:
        others = "; ".join(shown(gpu) for gpu in PUBLISHED_GPU)
        return [f"published, other GPU classes: {others} ({PUBLISHED_SOURCE})"]
    return []


def serve_suite(model="resnet50", image_size=224, classes=1000, batch_size=32, warmup=2,
                repeats=5, calls=32):
    """SavedModel (loaded as TF Serving loads it) against Keras predict, batch 1 and N."""
    with tempfile.TemporaryDirectory() as workdir:
        keras_file = os.path.join(workdir, "model.keras")
        _say(f"serve: exporting {model} at {image_size}x{image_size} ...")
        exported = run_in_child({"job": "export", "model": model, "image_size": image_size,
                                 "classes": classes, "keras_file": keras_file,
                                 "export_base": os.path.join(workdir, "export")})
        common = {"job": "serve", "image_size": image_size, "batch_size": batch_size,
                  "warmup": warmup, "repeats": repeats, "calls": calls,
                  "keras_file": keras_file, "export_dir": exported["export_dir"]}
        rows = []
        for label, kind in (("keras model.predict", "predict"),
                            ("SavedModel serving_default", "savedmodel")):
            _say(f"serve: {label} ...")
            result = run_in_child(dict(common, kind=kind, label=label))
            rows.append({"suite": "serve", "label": label, "model": model,
                         "image_size": image_size,
                         "latency_ms": 1e3 * result["batch_seconds"]["1"],
                         "throughput": batch_size / result["batch_seconds"][str(batch_size)],
                         "batch_size": batch_size,
                         "peak_memory_mib": result["peak_memory_mib"]})
    base = rows[0]
    for row in rows:
        row["latency_ratio"] = base["latency_ms"] / row["latency_ms"]
        row["throughput_ratio"] = row["throughput"] / base["throughput"]
    return rows


def pipeline_suite(image_size=32, batch_size=128, images=20000, folder=None, warmup=5):
    """The training input pipeline alone on real CIFAR-10 JPEGs (one row)."""
    _say(f"pipeline: decoding and augmenting {images} images at {image_size}x{image_size} ...")
    result = run_in_child({"job": "pipeline", "folder": _cifar_folder(folder),
                           "image_size": image_size, "batch_size": batch_size,
                           "images": images, "warmup": warmup, "label": "pipeline"})
    return [{"suite": "pipeline", "label": f"training pipeline at {image_size}x{image_size}",
             "images_per_second": result["images_per_second"], "image_size": image_size,
             "batch_size": batch_size, "peak_memory_mib": result["peak_memory_mib"]}]


def forward_suite(models=("resnet50", "drn_c_26"), image_size=224, batch_size=8, warmup=2,
                  repeats=7):
    """Inference time per batch against keras.applications.ResNet50 (a list of rows)."""
    rows = []
    for model in ("keras.applications.ResNet50", *models):
        _say(f"forward: {model} at {image_size}x{image_size}, batch {batch_size} ...")
        result = run_in_child({"job": "forward", "model": model, "image_size": image_size,
                               "batch_size": batch_size, "warmup": warmup,
                               "repeats": repeats, "label": model})
        rows.append({"suite": "forward", "label": model, "image_size": image_size,
                     "batch_size": batch_size, "ms_per_batch": 1e3 * result["seconds"],
                     "images_per_second": batch_size / result["seconds"],
                     "flops_per_second": 2 * result["macs"] * batch_size / result["seconds"],
                     "peak_memory_mib": result["peak_memory_mib"]})
    for row in rows:
        row["ratio"] = rows[0]["ms_per_batch"] / row["ms_per_batch"]
    return rows


# --------------------------------------------------------------------------
# Report


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
    for name in ("tensorflow", "keras"):
        try:
            versions.append(f"{'TF' if name == 'tensorflow' else 'Keras'} "
                            f"{importlib.metadata.version(name if name == 'keras' else _tf_dist())}")
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


def format_rows(rows, consumption=None):
    """Printable lines for the rows of one or more suites.

    ``consumption`` maps an image size to the images/second training consumes
    there; pipeline rows at that size are compared with it.
    """
    consumption = consumption or {}
    lines = []
    for row in rows:
        if row["suite"] == "train":
            lines.append(
                f"{row['label']:48s} {row['images_per_second']:8.1f} img/s  "
                f"x{row['ratio']:.2f}  {row['precision']:>14s}  "
                f"{row['train_flops_per_second'] / 1e9:6.1f} GFLOP/s = "
                f"{row['efficiency']:.2f} of {row['matmul_dtype']} matmul peak "
                f"{row['matmul_peak'] / 1e9:.0f}  {row['peak_memory_mib']:6.0f} MiB")
        elif row["suite"] == "serve":
            lines.append(
                f"{row['label']:46s} batch 1: {row['latency_ms']:8.1f} ms "
                f"(x{row['latency_ratio']:.2f})  batch {row['batch_size']}: "
                f"{row['throughput']:7.1f} img/s (x{row['throughput_ratio']:.2f})  "
                f"{row['peak_memory_mib']:6.0f} MiB")
        elif row["suite"] == "forward":
            lines.append(
                f"{row['label'] + ' forward':46s} {row['ms_per_batch']:8.1f} ms/batch "
                f"{row['images_per_second']:7.1f} img/s  x{row['ratio']:.2f}  "
                f"{row['flops_per_second'] / 1e9:6.1f} GFLOP/s  "
                f"{row['peak_memory_mib']:6.0f} MiB")
        else:
            extra, used = "", consumption.get(row["image_size"])
            if used:
                row["headroom"] = row["images_per_second"] / used
                extra = (f"  = {row['headroom']:.1f}x what training consumes "
                         f"({used:.0f} img/s)")
            lines.append(f"{row['label']:46s} {row['images_per_second']:8.0f} img/s{extra}  "
                         f"{row['peak_memory_mib']:6.0f} MiB")
    return lines


# The suites of ``benchmark all``: (model, image size, batch size).
ALL_TRAINING = (("resnet50", 224, 32), ("resnet20", 32, 128))
ALL_PIPELINE = ((32, 128, 20000), (224, 32, 1000))  # (image size, batch, images)


def run_suites(args):
    """The rows of the suite(s) ARGS asks for."""
    everything = args.suite == "all"
    rows = []
    if args.suite in ("train", "all"):
        configs = ALL_TRAINING if everything else [(args.model, args.image_size,
                                                    args.batch_size)]
        for model, size, batch in configs:
            rows += train_suite(model, size, batch, args.steps, args.warmup, args.data)
    if args.suite == "jax":
        rows += jax_suite(args.model, args.image_size, args.batch_size, args.steps,
                          args.warmup, args.classes)
    if args.suite in ("forward", "all"):
        models = ("resnet50", "drn_c_26") if everything else (args.model,)
        rows += forward_suite(models, 224 if everything else args.image_size,
                              8 if everything else args.batch_size, repeats=args.repeats)
    if args.suite in ("serve", "all"):
        model, size, classes = (("resnet50", 224, 1000) if everything
                                else (args.model, args.image_size, args.classes))
        rows += serve_suite(model, size, classes, repeats=args.repeats)
    if args.suite in ("pipeline", "all"):
        configs = ALL_PIPELINE if everything else [(args.image_size, args.batch_size, 20000)]
        for size, batch, images in configs:
            rows += pipeline_suite(size, batch, images, folder=args.data)
    return rows


def benchmark_main(args):
    """``resnet-keras benchmark``: run a suite, print the table, optionally save JSON."""
    started = time.time()
    rows = run_suites(args)
    # What training consumes at each image size: its fastest contender.
    consumption = {}
    for row in rows:
        if row["suite"] == "train":
            size = row["image_size"]
            consumption[size] = max(consumption.get(size, 0.0), row["images_per_second"])
    print(f"machine: {machine_line()}")
    devices = sorted({row["device"] for row in rows if row.get("device")})
    for device in devices:
        print(f"device: {device}")
    for line in format_rows(rows, consumption):
        print(line)
    for device in devices:
        for line in published_gpu_lines(device):
            print(line)
    print(f"({time.time() - started:.0f} s)")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"machine": machine_line(), "rows": rows}, f, indent=2)
        print(f"results: {args.output}")
    return 0


def _child_main(argv):
    job = json.loads(argv[0])
    result = run_job(job)
    print(RESULT_TAG + json.dumps(result), flush=True)


if __name__ == "__main__":
    _child_main(sys.argv[1:])
