"""Exported SavedModel vs Keras: latency at batch 1, throughput at batch 32.

    python benchmarks/bench_serving.py                       # resnet20 at 32x32
    python benchmarks/bench_serving.py --model resnet50 --image-size 224 --classes 1000

One randomly initialised model is exported with export_saved_model and loaded
as TF Serving loads it (tag "serve", signatures by name). Each path is warmed
up, then timed over several repetitions of a few calls; the median time per
call is reported. The SavedModel paths take uint8 pixels (or JPEG bytes) and
preprocess inside the graph; the Keras paths take already preprocessed float
images, so they do slightly less work.
"""
import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from resnet_keras import build_model, export, preprocessing  # noqa: E402


def median_seconds(fn, warmup, repeats, calls):
    """Median over REPEATS of the mean time of CALLS calls, after WARMUP calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def paths_for(model, loaded, batch_size, image_size, seed=0):
    """{name: zero-argument callable} classifying one batch each way."""
    rng = np.random.RandomState(seed)
    pixels = rng.randint(0, 256, (batch_size, image_size, image_size, 3)).astype(np.uint8)
    images = tf.constant(pixels)
    blobs = tf.constant([tf.io.encode_jpeg(image).numpy() for image in pixels])
    floats = preprocessing.eval_transform(images, image_size)
    serve_images = export.get_signature(loaded, export.SERVING_DEFAULT)
    serve_bytes = export.get_signature(loaded, export.SERVING_BYTES)
    return {
        "keras direct call": lambda: model(floats, training=False).numpy(),
        "keras model.predict": lambda: model.predict(floats, batch_size=batch_size, verbose=0),
        "savedmodel serving_default": lambda: serve_images(images=images)["probabilities"].numpy(),
        "savedmodel serving_bytes": lambda: serve_bytes(image_bytes=blobs)["probabilities"].numpy(),
    }


def report(title, batch_size, timings, baseline="keras direct call"):
    print(f"\n{title} (batch {batch_size}):")
    base = timings[baseline]
    for name, seconds in timings.items():
        per_second = batch_size / seconds
        print(f"  {name:28s} {seconds * 1e3:9.2f} ms/batch {per_second:10.1f} images/s"
              f"   x{base / seconds:5.2f} vs {baseline}")


def depths_arg(text):
    """'1,1,1' -> (1, 1, 1)."""
    return tuple(int(part) for part in text.split(","))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--depths", type=depths_arg, help="stage depths override, e.g. 1,1,1")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=10, help="calls per repetition")
    parser.add_argument("--throughput-batch", type=int, default=32)
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    overrides = {"depths": args.depths} if args.depths else {}
    size = args.image_size
    model = build_model(args.model, classes=args.classes, input_shape=(size, size, 3), **overrides)
    with tempfile.TemporaryDirectory() as base:
        version_dir = export.export_saved_model(
            model, base, image_size=size, class_names=[str(i) for i in range(args.classes)])
        loaded = export.load_serving(version_dir)
        print(f"{args.model} at {size}x{size}, {args.classes} classes, "
              f"{model.count_params():,} parameters; median of {args.repeats} x "
              f"{args.calls} calls after {args.warmup} warm-up calls")
        for title, batch_size in (("latency", 1), ("throughput", args.throughput_batch)):
            paths = paths_for(model, loaded, batch_size, size)
            timings = {name: median_seconds(fn, args.warmup, args.repeats, args.calls)
                       for name, fn in paths.items()}
            report(title, batch_size, timings)


if __name__ == "__main__":
    main()
