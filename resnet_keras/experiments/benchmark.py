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
are printed, because absolute times drift on shared machines. With
``--rounds N`` the training and forward contenders run N times, each round in
the reverse order of the one before (so no contender always runs first or
last), and every row reports the median over all rounds' steps beside each
round's own figure.

Training contenders feed the same real CIFAR-10 images held in memory:
keras.applications.ResNet50 with a default ``compile``/``fit`` in float32
(the baseline), the resnet_keras model through the same ``fit``, and
``resnet_keras.train.train`` (the ``resnet-keras train`` loop, with its
per-device precision default and with float32). Hardware efficiency is the
training FLOP rate (3 x 2 x multiply-adds per image) over the peak of a
large matrix product at the same precision, measured in the same process.

The forward suite times one batch through each model as built and with its
BatchNorm layers folded into the convolutions before them
(:func:`resnet_keras.folding.fold_batch_norms`, exact in float32),
keras.applications.ResNet50 included, so the comparison is like for like.

The serving suite times Keras ``predict`` (the baseline), the SavedModel as
TF Serving loads it, and the LiteRT float32, LiteRT full-integer int8
(calibrated on real training images) and ONNX files of ``resnet-keras
export``, each in its own runtime (ai-edge-litert, onnxruntime) with one
thread per CPU: p50 and p99 latency at batch 1, images/second at batch N and
the size of the model file (of the folder, for the SavedModel). A format
whose packages are missing is skipped with one line naming them.

The ``jax`` suite is the GPU benchmark: keras.applications.ResNet50 and the
resnet_keras model through Keras ``fit`` on the JAX backend, in float32 and
mixed bfloat16, printed beside published ResNet-50 figures for the GPU class.
It needs jax, not TensorFlow.

The measurements are in :mod:`~resnet_keras.experiments.measure`, the
contenders' jobs in :mod:`~resnet_keras.experiments.contenders`; this module
runs the suites and prints the report.
"""
import json
import os
import shlex
import statistics
import sys
import tempfile
import time

from resnet_keras.experiments.contenders import run_in_child
from resnet_keras.experiments.measure import cpu_threads, machine_line, size_mb


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
                folder=None, rounds=1):
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
        return _train_contenders(model, image_size, batch_size, steps, warmup, folder, rounds)


def _train_contenders(model, image_size, batch_size, steps, warmup, folder, rounds=1):
    common = {"job": "train", "model": model, "image_size": image_size,
              "batch_size": batch_size, "steps": steps, "warmup": warmup, "folder": folder}
    contenders = [
        ("keras.applications.ResNet50 fit (float32)", {"kind": "keras-applications"}),
        (f"{model} fit (float32)", {"kind": "fit"}),
        (f"{model} resnet-keras train (float32)", {"kind": "trainer", "mixed_precision": False}),
        (f"{model} resnet-keras train (default)", {"kind": "trainer", "mixed_precision": None}),
    ]
    results = _run_round(common, contenders)
    default = results[contenders[-1][0]][0]["precision"]
    if default != "float32":
        # Keras fit at the precision the trainer chose for this device, so
        # that the trainer's default meets fit at the same precision too.
        contenders.append((f"{model} fit ({default})", {"kind": "fit", "precision": default}))
        results.update(_run_round(common, contenders[-1:]))
    return _train_rows(common, contenders, _more_rounds(common, contenders, results, rounds))


def _run_round(common, contenders, env=None):
    """Each (label, job fields) contender run once, in a child: {label: [result]}."""
    size, batch = common["image_size"], common["batch_size"]
    results = {}
    for label, fields in contenders:
        _say(f"{common['job']}: {label} at {size}x{size}, batch {batch}"
             + (f", {common['steps']} steps" if "steps" in common else "") + " ...")
        results[label] = [run_in_child(dict(common, label=label, **fields), env=env)]
    return results


def _more_rounds(common, contenders, results, rounds, env=None):
    """RESULTS (one round) with ROUNDS - 1 more, each in the reverse order of the
    one before, so that no contender always runs first or after the same one."""
    for number in range(1, rounds):
        _say(f"round {number + 1} of {rounds}")
        order = contenders[::-1] if number % 2 else contenders
        for label, more in _run_round(common, order, env).items():
            results[label] += more
    return results


def _train_rows(common, contenders, results):
    """A row per contender from its RESULTS (one per round): the median step
    time of all rounds' steps, with ratios to the first row's images/second."""
    size, batch = common["image_size"], common["batch_size"]
    rows = []
    for label, _ in contenders:
        runs = results[label]
        result = runs[0]
        step = statistics.median([s for run in runs for s in run["step_seconds"]])
        speed = batch / step
        flops = 6 * result["macs"] * speed
        rows.append({"suite": "train", "label": label, "images_per_second": speed,
                     "step_seconds": step, "precision": result["precision"],
                     "rounds": [batch / statistics.median(run["step_seconds"]) for run in runs],
                     "train_flops_per_second": flops, "matmul_peak": result["matmul_peak"],
                     "matmul_dtype": result["matmul_dtype"],
                     "efficiency": flops / result["matmul_peak"],
                     "peak_memory_mib": max(run["peak_memory_mib"] for run in runs),
                     "model": common["model"], "image_size": size, "batch_size": batch,
                     "device": result.get("device")})
    for row in rows:
        row["ratio"] = row["images_per_second"] / rows[0]["images_per_second"]
    return rows


def jax_suite(model="resnet50", image_size=224, batch_size=32, steps=12, warmup=4,
              classes=1000, rounds=1):
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
    env = {"KERAS_BACKEND": "jax"}
    results = _more_rounds(common, contenders, _run_round(common, contenders, env), rounds, env)
    return _train_rows(common, contenders, results)


# Published single-GPU training throughput of ResNet-50 v1.5 at 224, batch 256,
# images/second: NVIDIA DeepLearningExamples, PyTorch, NGC container 21.03.
PUBLISHED_GPU = {"A100": {"TF32": 938, "mixed precision": 2470},
                 "V100": {"FP32": 367, "mixed precision": 1200}}
PUBLISHED_SOURCE = ("NVIDIA DeepLearningExamples, PyTorch ResNet-50 v1.5, 1 GPU, "
                    "batch 256 (NGC 21.03)")


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


# The serving rows after Keras predict (the baseline) and the SavedModel: files
# written by resnet_keras.formats, each run by its own runtime. (label, format,
# quantize); a format's rows need the packages of FORMAT_PACKAGES.
FILE_CONTENDERS = (("LiteRT float32", "litert", "none"),
                   ("LiteRT int8 (full-integer)", "litert", "int8"),
                   ("ONNX onnxruntime", "onnx", "none"))
FORMAT_PACKAGES = {"litert": ("LiteRT", ("ai_edge_litert", "ai-edge-litert")),
                   "onnx": ("ONNX", ("tf2onnx", "tf2onnx"), ("onnxruntime", "onnxruntime"))}


def file_contenders():
    """The FILE_CONTENDERS whose packages are installed, and one line per format skipped."""
    import importlib.util

    kept, skipped = [], []
    for fmt, (shown, *packages) in FORMAT_PACKAGES.items():
        missing = [dist for module, dist in packages if importlib.util.find_spec(module) is None]
        if missing:
            skipped.append(f"serve: {shown} rows skipped: {' and '.join(missing)} not "
                           f"installed (pip install 'resnet-keras[{fmt}]')")
        else:
            kept += [row for row in FILE_CONTENDERS if row[1] == fmt]
    return kept, skipped


def serve_suite(model="resnet50", image_size=224, classes=1000, batch_size=32, warmup=2,
                repeats=5, calls=32, folder=None, calibration_images=None):
    """Keras predict, the SavedModel (loaded as TF Serving loads it), LiteRT float32
    and int8 and onnxruntime: p50 and p99 latency at batch 1, images/second at
    batch N and the model's size. int8 calibrates on CALIBRATION_IMAGES training
    images of FOLDER (default: the offline CIFAR-10; 200 images)."""
    files, skipped = file_contenders()
    for line in skipped:
        _say(line)
    with tempfile.TemporaryDirectory() as workdir:
        keras_file = os.path.join(workdir, "model.keras")
        if any(quantize == "int8" for _, _, quantize in files):
            folder = _calibration_folder(folder, workdir, calibration_images)
        _say(f"serve: exporting {model} at {image_size}x{image_size} ...")
        exported = run_in_child({
            "job": "export", "model": model, "image_size": image_size, "classes": classes,
            "keras_file": keras_file, "export_base": os.path.join(workdir, "export"),
            "files": [[fmt, quantize] for _, fmt, quantize in files],
            "files_dir": os.path.join(workdir, "files"), "calibration_folder": folder,
            "calibration_images": calibration_images})
        contenders = [("keras model.predict", "predict", keras_file),
                      ("SavedModel serving_default", "savedmodel", exported["export_dir"])]
        contenders += [(label, fmt, path)
                       for (label, fmt, _), path in zip(files, exported["files"])]
        common = {"job": "serve", "model": model, "image_size": image_size,
                  "batch_size": batch_size, "warmup": warmup, "repeats": repeats,
                  "calls": calls, "threads": cpu_threads()}
        rows = [_serve_row(common, label, kind, path) for label, kind, path in contenders]
    base = rows[0]
    for row in rows:
        row["latency_ratio"] = base["latency_ms"] / row["latency_ms"]
        row["throughput_ratio"] = row["throughput"] / base["throughput"]
    return rows


def _calibration_folder(folder, workdir, count):
    """FOLDER, else a subset of the offline CIFAR-10 in WORKDIR, else None (random pixels)."""
    if folder:
        return folder
    from resnet_keras import data, formats

    archive = data.default_cifar10_archive()
    if not os.path.isfile(archive):
        _say(f"serve: int8 calibrates on random pixels (no --data, no {archive})")
        return None
    per_class = -(-(count or formats.REPRESENTATIVE_IMAGES) // 10)
    return data.extract_subset(archive, os.path.join(workdir, "calibration"), per_class, 1)


def _serve_row(common, label, kind, path):
    """One serving path timed in a child: a serve row (latency_ms is the p50)."""
    _say(f"serve: {label} ...")
    result = run_in_child(dict(common, kind=kind, path=path, label=label))
    return {"suite": "serve", "label": label, "model": common["model"],
            "image_size": common["image_size"], "latency_ms": result["latency_p50_ms"],
            "latency_p99_ms": result["latency_p99_ms"], "throughput": result["throughput"],
            "batch_size": common["batch_size"], "size_mb": size_mb(path),
            "peak_memory_mib": result["peak_memory_mib"]}


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
                  repeats=7, rounds=1):
    """Inference time per batch against keras.applications.ResNet50 (a list of rows).

    Each model runs as built and with its BatchNormalizations folded into the
    convolutions (as the exports serve it); keras.applications.ResNet50 too,
    so that the fold's gain is seen on both sides.
    """
    common = {"job": "forward", "image_size": image_size, "batch_size": batch_size,
              "warmup": warmup, "repeats": repeats}
    contenders = [(label, {"model": model, "fold": fold})
                  for model in ("keras.applications.ResNet50", *models)
                  for label, fold in ((model, False), (f"{model} (BatchNorm folded)", True))]
    results = _more_rounds(common, contenders, _run_round(common, contenders), rounds)
    rows = []
    for label, _ in contenders:
        runs = results[label]
        seconds = statistics.median(run["seconds"] for run in runs)
        rows.append({"suite": "forward", "label": label, "image_size": image_size,
                     "batch_size": batch_size, "ms_per_batch": 1e3 * seconds,
                     "batch_norms": runs[0].get("batch_norms"),
                     "rounds_ms": [1e3 * run["seconds"] for run in runs],
                     "images_per_second": batch_size / seconds,
                     "flops_per_second": 2 * runs[0]["macs"] * batch_size / seconds,
                     "peak_memory_mib": max(run["peak_memory_mib"] for run in runs)})
    for row in rows:
        row["ratio"] = rows[0]["ms_per_batch"] / row["ms_per_batch"]
    return rows


# --------------------------------------------------------------------------
# Report


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
                f"{row['label']:28s} batch 1: p50 {row['latency_ms']:7.2f} ms "
                f"p99 {row['latency_p99_ms']:7.2f} ms (x{row['latency_ratio']:.2f})  "
                f"batch {row['batch_size']}: {row['throughput']:7.1f} img/s "
                f"(x{row['throughput_ratio']:.2f})  {row['size_mb']:6.1f} MB  "
                f"{row['peak_memory_mib']:6.0f} MiB")
        elif row["suite"] == "forward":
            lines.append(
                f"{row['label'] + ' forward':56s} {row['ms_per_batch']:8.1f} ms/batch "
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
            rows += train_suite(model, size, batch, args.steps, args.warmup, args.data,
                                args.rounds)
    if args.suite == "jax":
        rows += jax_suite(args.model, args.image_size, args.batch_size, args.steps,
                          args.warmup, args.classes, args.rounds)
    if args.suite in ("forward", "all"):
        models = ("resnet50", "drn_c_26") if everything else (args.model,)
        rows += forward_suite(models, 224 if everything else args.image_size,
                              8 if everything else args.batch_size, repeats=args.repeats,
                              rounds=args.rounds)
    if args.suite in ("serve", "all"):
        model, size, classes = (("resnet50", 224, 1000) if everything
                                else (args.model, args.image_size, args.classes))
        rows += serve_suite(model, size, classes, repeats=args.repeats, folder=args.data)
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
    command = shlex.join(["resnet-keras"] + getattr(args, "argv", ["benchmark", args.suite]))
    print(f"machine: {machine_line()}")
    print(f"command: {command}")
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
            json.dump({"machine": machine_line(), "command": command, "rows": rows}, f,
                      indent=2)
        print(f"results: {args.output}")
    return 0
