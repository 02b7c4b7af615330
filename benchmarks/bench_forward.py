"""Inference forward-pass time: resnet_keras vs keras.applications, same process.

    python benchmarks/bench_forward.py [--batch 8] [--size 224] [--repeats 10]

Each model runs as a traced ``tf.function`` (inference mode); the median of
``--repeats`` timed calls after warm-up is reported, with the ratio to
keras.applications.ResNet50 measured in the same run (machines drift; ratios
are what to compare).
"""
import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import resnet_keras  # noqa: E402


def time_model(model, images, warmup, repeats):
    forward = tf.function(lambda x: model(x, training=False))
    for _ in range(warmup):
        forward(images).numpy()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward(images).numpy()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["resnet50", "drn_c_26"])
    args = parser.parse_args()

    shape = (args.size, args.size, 3)
    images = tf.constant(np.random.default_rng(0).normal(
        size=(args.batch, *shape)).astype("float32"))
    contenders = [("keras.applications.ResNet50",
                   keras.applications.ResNet50(weights=None, input_shape=shape))]
    contenders += [(name, resnet_keras.build_model(name, input_shape=shape))
                   for name in args.models]
    print(f"forward pass, batch {args.batch}, {args.size}x{args.size}, float32, "
          f"median of {args.repeats} after {args.warmup} warm-up; "
          f"TF {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs")
    baseline = None
    for label, model in contenders:
        seconds = time_model(model, images, args.warmup, args.repeats)
        baseline = baseline or seconds
        macs = resnet_keras.count_macs(model) / 1e9
        print(f"{label:30s} {seconds * 1000:8.1f} ms/batch {args.batch / seconds:7.1f} img/s "
              f"{macs:6.2f} GMACs/img  {2 * macs * args.batch / seconds:6.1f} GFLOP/s  "
              f"time ratio vs keras.applications {seconds / baseline:.2f}")


if __name__ == "__main__":
    main()
