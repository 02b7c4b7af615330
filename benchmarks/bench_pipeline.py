"""Input pipeline throughput: decoded, augmented CIFAR-10 training batches per second.

    python benchmarks/bench_pipeline.py                 # all 50,000 training JPEGs
    python benchmarks/bench_pipeline.py --image-size 224 --batches 50

Reads the offline CIFAR-10 copy (extracted once into ~/.cache/resnet_keras)
through the same pipeline as training (decode, shuffle, pad-and-crop or
random-resized-crop, flip, normalise, batch) and reports images/second for
a first epoch (JPEG decoding and shuffle-buffer filling included) and for a
second epoch served from the in-memory cache (``--cache``).
"""
import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from resnet_keras import data  # noqa: E402


def images_per_second(iterator, batches, batch_size):
    """Images per second over the next BATCHES batches of ITERATOR."""
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="image folder (default: offline CIFAR-10)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--subset", type=int, default=None, help="use the first N images")
    args = parser.parse_args(argv)

    dataset = data.load_dataset(f"folder:{args.data}" if args.data else data.local_cifar10())
    count = min(args.subset or dataset.num_train, dataset.num_train)
    train = dataset.train.take(count)
    epoch = max(1, count // args.batch_size)
    print(f"{dataset.spec}: {count} training images, {os.cpu_count()} CPUs, "
          f"image size {args.image_size}, batch {args.batch_size}")
    for cache in (False, True):
        pipeline = data.train_pipeline(train, args.image_size, args.batch_size, seed=0,
                                       cache=cache, num_examples=count)
        iterator = iter(pipeline)
        speed = images_per_second(iterator, epoch, args.batch_size)
        label = "epoch 1 (decode JPEG)"
        if cache:
            speed = images_per_second(iterator, epoch, args.batch_size)
            label = "epoch 2 (cached)"
        print(f"{label:24s} {speed:10,.0f} images/s")


if __name__ == "__main__":
    main()
