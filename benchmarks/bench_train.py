"""Training throughput: the resnet_keras trainer vs plain Keras compile/fit.

    python benchmarks/bench_train.py --model resnet50 --image-size 224 --batch-size 32
    python benchmarks/bench_train.py --model resnet20 --image-size 32 --batch-size 128

Contenders, in one process on the same real CIFAR-10 images:
  1. keras.applications.ResNet50 + default ``compile``/``fit`` (float32),
  2. the resnet_keras model + the same plain ``compile``/``fit``,
  3. the resnet_keras model through ``resnet_keras.train.train`` (the
     ``resnet-keras train`` path: tf.data pipeline with JPEG decoding and
     augmentation, distribution strategy, checkpoints, TensorBoard).
Step times come from per-step callbacks; the median after ``--warmup`` steps
is reported, with ratios to contender 1 (absolute numbers drift on shared
machines). ``--mixed-precision`` adds a bfloat16 (CPU) / float16 (GPU) run of
contender 3.
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

import resnet_keras  # noqa: E402
from resnet_keras import data, preprocessing, train  # noqa: E402


class StepTimer(keras.callbacks.Callback):
    """Wall-clock time between consecutive training steps."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())

    def median_step(self, warmup):
        gaps = np.diff(self.times)[warmup:]
        return statistics.median(gaps) if len(gaps) else float("nan")


def small_folder(source, per_class_train, per_class_test, dest):
    """Symlink the first N images per class of an image folder into DEST."""
    for split, count in (("train", per_class_train), ("test", per_class_test)):
        for label in sorted(os.listdir(os.path.join(source, split))):
            os.makedirs(os.path.join(dest, split, label))
            names = sorted(os.listdir(os.path.join(source, split, label)))[:count]
            for name in names:
                os.symlink(os.path.join(source, split, label, name),
                           os.path.join(dest, split, label, name))
    return dest


def in_memory_batches(folder, image_size, batch_size):
    """Decoded, resized, normalised training images, cached, repeated, batched."""
    dataset = data.load_dataset(f"folder:{folder}")
    return (dataset.train.map(lambda image, label: (
        preprocessing.eval_transform(image, image_size), label))
        .cache().repeat().batch(batch_size, drop_remainder=True).prefetch(4))


def time_fit(model, batches, steps):
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    timer = StepTimer()
    model.fit(batches, epochs=1, steps_per_epoch=steps, callbacks=[timer], verbose=0)
    return timer


def time_trainer(args, folder, model_dir, mixed_precision=False):
    timer = StepTimer()
    train.train(args.model, f"folder:{folder}", epochs=1, batch_size=args.batch_size,
                model_dir=model_dir, image_size=args.image_size, strategy="one-device",
                steps_per_epoch=args.steps, mixed_precision=mixed_precision, seed=0,
                learning_rate=0.01, callbacks=[timer], verbose=0, checkpoint_every=10**9)
    return timer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--mixed-precision", action="store_true")
    parser.add_argument("--skip-keras-applications", action="store_true")
    args = parser.parse_args()

    source = data.local_cifar10()[len(data.FOLDER_PREFIX):]
    per_class = -(-args.batch_size * args.steps // 10)
    workdir = tempfile.mkdtemp(prefix="bench-train-")
    folder = small_folder(source, per_class, 2, os.path.join(workdir, "data"))
    batches = in_memory_batches(folder, args.image_size, args.batch_size)
    shape = (args.image_size, args.image_size, 3)
    ours = resnet_keras.build_model(args.model, classes=10, input_shape=shape)
    flops = 3 * 2 * resnet_keras.count_macs(ours)
    print(f"training {args.model} at {args.image_size}x{args.image_size}, batch "
          f"{args.batch_size}, median of {args.steps - args.warmup - 1} steps after "
          f"{args.warmup} warm-up; {os.cpu_count()} CPUs, TF {tf.__version__}, "
          f"Keras {keras.__version__}")

    # The trainer runs first: traced after keras.applications.ResNet50's fit()
    # at 224x224 in the same process (TF 2.21), its replica step function was
    # once called without its bound `self`; not reproduced at small sizes.
    results = [(f"{args.model} resnet-keras train",
                time_trainer(args, folder, os.path.join(workdir, "run")), flops)]
    if args.mixed_precision:
        results.append((f"{args.model} resnet-keras train, mixed",
                        time_trainer(args, folder, os.path.join(workdir, "run_mixed"), True),
                        flops))
    results.append((f"{args.model} plain fit", time_fit(ours, batches, args.steps), flops))
    if not args.skip_keras_applications:
        baseline = keras.applications.ResNet50(weights=None, input_shape=shape, classes=10)
        results.append(("keras.applications.ResNet50 fit",
                        time_fit(baseline, batches, args.steps),
                        3 * 2 * resnet_keras.count_macs(baseline)))
    results.reverse()  # the baseline first: ratios are relative to it
    reference = None
    for label, timer, model_flops in results:
        step = timer.median_step(args.warmup)
        speed = args.batch_size / step
        reference = reference or speed
        print(f"{label:42s} {speed:8.1f} images/s  {model_flops * speed / 1e9:7.1f} "
              f"GFLOP/s  x{speed / reference:.2f}")


if __name__ == "__main__":
    main()
