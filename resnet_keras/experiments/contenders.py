"""Benchmark contenders: each job runs in a fresh Python process of its own.

:func:`run_in_child` starts ``python -m resnet_keras.experiments.contenders
JOB`` with the job as JSON; the child runs it (:func:`run_job`) and prints
its result, with the process's peak resident memory, on a line tagged
``RESULT_TAG``. A contender's memory is then its own, and no contender
inherits another's compiled functions or thread pools.

The LiteRT and onnxruntime jobs import nothing but numpy and their runtime:
their processes hold neither TensorFlow nor Keras, as on a device that serves
the file, so their start-up and memory are the runtime's own.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

from resnet_keras.experiments.measure import (MATMUL_SIZE, StepTimer, matmul_peak,
                                              median_seconds, peak_memory_mib, serving_times)

RESULT_TAG = "BENCHMARK-RESULT "


def _keras_callback(timer):
    import keras

    class Callback(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            timer.on_train_batch_end(batch + 1, logs)

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
        precision = job.get("precision", "float32")
        keras.mixed_precision.set_dtype_policy(precision)
        model = _compiled_for_fit(job["kind"], job["model"], shape, classes=10)
        batches = _in_memory_batches(job["folder"], size, batch, batch * job["warmup"])
        model.fit(batches, epochs=1, steps_per_epoch=steps, verbose=0,
                  callbacks=[_keras_callback(timer)])
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
    """Latency (batch 1: p50, p99) and throughput (batch N) of one serving path.

    Every path takes the same uint8 pixels and is timed by the same
    :func:`~resnet_keras.experiments.measure.serving_times`.
    """
    import numpy as np

    size, rng = job["image_size"], np.random.RandomState(0)
    prepare = SERVING[job["kind"]](job)

    def call_for_batch(batch):
        return prepare(rng.randint(0, 256, (batch, size, size, 3)).astype(np.uint8))

    return serving_times(call_for_batch, job["batch_size"], job["warmup"], job["repeats"],
                         job["calls"])


def _predict_serving(job):
    """Keras ``model.predict`` of the .keras file on images normalised beforehand."""
    import keras
    import tensorflow as tf

    from resnet_keras import preprocessing

    model = keras.saving.load_model(job["path"], compile=False)

    def prepare(pixels):
        floats = preprocessing.eval_transform(tf.constant(pixels), job["image_size"]).numpy()
        return lambda: model.predict(floats, batch_size=len(floats), verbose=0)

    return prepare


def _savedmodel_serving(job):
    """The SavedModel's ``serving_default``, loaded as TF Serving loads it (tag "serve")."""
    import tensorflow as tf

    from resnet_keras import export

    signature = export.get_signature(export.load_serving(job["path"]), export.SERVING_DEFAULT)

    def prepare(pixels):
        images = tf.constant(pixels)
        return lambda: signature(images=images)["probabilities"].numpy()

    return prepare


def _litert_serving(job):
    """The .tflite file in ai-edge-litert's interpreter, one thread per CPU."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=job["path"], num_threads=job["threads"])
    (images,) = interpreter.get_input_details()
    outputs = [detail["index"] for detail in interpreter.get_output_details()]

    def prepare(pixels):
        interpreter.resize_tensor_input(images["index"], pixels.shape)
        interpreter.allocate_tensors()

        def serve():
            interpreter.set_tensor(images["index"], pixels)
            interpreter.invoke()
            return [interpreter.get_tensor(index) for index in outputs]

        return serve

    return prepare


def _onnx_serving(job):
    """The .onnx file in an onnxruntime CPU session, one thread per CPU."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = job["threads"]
    session = onnxruntime.InferenceSession(job["path"], options,
                                           providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda pixels: lambda: session.run(None, {name: pixels})


# The serving paths by job kind: each loads its model once and returns
# ``prepare(uint8 pixels) -> a function serving them``.
SERVING = {"predict": _predict_serving, "savedmodel": _savedmodel_serving,
           "litert": _litert_serving, "onnx": _onnx_serving}


def _export_job(job):
    """Build the seeded model once; write it as .keras, as a SavedModel and as the
    LiteRT / ONNX files of ``job["files"]`` (``[format, quantize]`` pairs)."""
    import keras

    import resnet_keras
    from resnet_keras import export, formats

    keras.utils.set_random_seed(0)
    size, classes = job["image_size"], job["classes"]
    model = resnet_keras.build_model(job["model"], classes=classes,
                                     input_shape=(size, size, 3))
    model.save(job["keras_file"])
    names = [f"class_{i}" for i in range(classes)]
    version_dir = export.export_saved_model(model, job["export_base"], image_size=size,
                                            class_names=names)
    files = []
    for fmt, quantize in job.get("files", ()):
        images = _calibration_images(job) if quantize == "int8" else None
        files.append(formats.export_file(model, job["files_dir"], fmt=fmt, image_size=size,
                                         class_names=names, quantize=quantize,
                                         representative_images=images))
    return {"export_dir": version_dir, "files": files, "params": model.count_params()}


def _calibration_images(job):
    """int8 calibration images: the folder's first training images, else random pixels."""
    import numpy as np

    from resnet_keras import formats

    size, count = job["image_size"], job.get("calibration_images") or formats.REPRESENTATIVE_IMAGES
    if job.get("calibration_folder"):
        return formats.training_images(f"folder:{job['calibration_folder']}", None, size, count)
    return np.random.RandomState(0).randint(0, 256, (count, size, size, 3)).astype(np.uint8)


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
    """Inference time of one model as a traced function, batch N; with
    ``fold``, of its copy with BatchNormalization folded into the convolutions,
    as the exports serve it."""
    import keras
    import numpy as np
    import tensorflow as tf

    import resnet_keras
    from resnet_keras.folding import fold_batch_norms

    size, batch = job["image_size"], job["batch_size"]
    shape = (size, size, 3)
    if job["model"] == "keras.applications.ResNet50":
        model = keras.applications.ResNet50(weights=None, input_shape=shape)
    else:
        model = resnet_keras.build_model(job["model"], input_shape=shape)
    if job.get("fold"):
        model = fold_batch_norms(model)
    images = tf.constant(np.random.default_rng(0).normal(size=(batch, *shape)), tf.float32)
    forward = tf.function(lambda x: model(x, training=False))
    seconds = median_seconds(lambda: forward(images).numpy(), job["warmup"], job["repeats"])
    norms = sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    return {"seconds": seconds, "macs": resnet_keras.count_macs(model), "batch_norms": norms}


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
    process = subprocess.run(
        [sys.executable, "-m", "resnet_keras.experiments.contenders", json.dumps(job)],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, **(env or {})))
    lines = [line for line in process.stdout.splitlines() if line.startswith(RESULT_TAG)]
    if process.returncode or not lines:
        raise RuntimeError(f"benchmark contender {job.get('label', job['job'])!r} failed "
                           f"(exit status {process.returncode}); its error is above")
    return json.loads(lines[-1][len(RESULT_TAG):])


def _child_main(argv):
    job = json.loads(argv[0])
    result = run_job(job)
    print(RESULT_TAG + json.dumps(result), flush=True)


if __name__ == "__main__":
    _child_main(sys.argv[1:])
