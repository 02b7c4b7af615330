"""Export a classifier for TF Serving, then classify images with the export.

    python examples/export_and_serve.py                      # tiny CIFAR-10 model
    python examples/export_and_serve.py --model-dir runs/r20 # a trained run
    python examples/export_and_serve.py cat.jpg dog.png      # your own images

Without --model-dir a small CIFAR ResNet is built and fitted for a moment on
real CIFAR-10 images (from the shared tarball), so the run takes seconds.
The export is then loaded as TF Serving loads it (tag "serve", signature
"serving_bytes" looked up by name) and sent the images' file bytes.

To serve it for real:
    docker run -p 8501:8501 -v "$EXPORT_DIR:/models/resnet" -e MODEL_NAME=resnet \
        tensorflow/serving
"""
import argparse
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from resnet_keras import build_model, data, export, preprocessing, rundir

CIFAR_TARBALL = data.default_cifar10_archive()
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck"]


def cifar_samples(tarball, split, per_class):
    """[(jpeg bytes, class index)]: the first PER_CLASS images of each class."""
    with tempfile.TemporaryDirectory() as folder:
        per_split = {"train": 0, "test": 0}
        per_split[split] = per_class
        data.extract_subset(tarball, folder, per_split["train"], per_split["test"])
        samples = []
        for label, name in enumerate(CIFAR_CLASSES):
            class_dir = os.path.join(folder, split, name)
            for filename in sorted(os.listdir(class_dir)):
                with open(os.path.join(class_dir, filename), "rb") as f:
                    samples.append((f.read(), label))
    return samples


def fit_briefly(model, samples, epochs, image_size):
    """A few SGD steps on SAMPLES, so the demo's predictions mean something."""
    images = tf.stack([
        preprocessing.eval_transform(tf.io.decode_jpeg(data, channels=3), image_size)
        for data, _ in samples])
    labels = np.array([label for _, label in samples])
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(images, labels, batch_size=32, epochs=epochs, shuffle=True, verbose=2)


def get_model(args):
    """(model, image size, class names) from --model-dir, or a small fresh model."""
    if args.model_dir:
        model, config = rundir.load_trained_model(args.model_dir)
        return model, config["image_size"], config["class_names"]
    keras.utils.set_random_seed(0)
    overrides = {"depths": args.depths} if args.depths else {}
    model = build_model(args.model, classes=10, input_shape=(32, 32, 3), **overrides)
    if args.train_images:
        per_class = max(1, args.train_images // 10)
        fit_briefly(model, cifar_samples(args.cifar_tarball, "train", per_class),
                    args.epochs, 32)
    return model, 32, CIFAR_CLASSES


def images_to_classify(args):
    """(display names, encoded images): the given files, else 5 CIFAR-10 test images."""
    if args.images:
        return args.images, [tf.io.read_file(path).numpy() for path in args.images]
    samples = cifar_samples(args.cifar_tarball, "test", 1)[::2]
    names = [f"cifar test image, true: {CIFAR_CLASSES[label]}" for _, label in samples]
    return names, [data for data, _ in samples]


def classify(version_dir, blobs, top):
    """Send image bytes to the export's serving_bytes signature; top-K per image."""
    loaded = export.load_serving(version_dir)
    serve = export.get_signature(loaded, export.SERVING_BYTES)
    outputs = serve(image_bytes=tf.constant(blobs))
    labels = export.read_labels(version_dir)
    return [export.top_k(p, top, labels) for p in outputs["probabilities"].numpy()]


def depths_arg(text):
    """'1,1,1' -> (1, 1, 1)."""
    return tuple(int(part) for part in text.split(","))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="*", help="JPEG/PNG files (default: CIFAR-10 test images)")
    parser.add_argument("--model-dir", help="a training run's --model-dir to export")
    parser.add_argument("--model", default="resnet20", help="model to build without --model-dir")
    parser.add_argument("--depths", type=depths_arg,
                        help="stage depths override, e.g. 1,1,1 (smaller = faster)")
    parser.add_argument("--train-images", type=int, default=500, help="images to fit on (0: none)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--export-dir", default=None, help="export base (default: a temp folder)")
    parser.add_argument("--cifar-tarball", default=CIFAR_TARBALL)
    parser.add_argument("--top", type=int, default=3)
    args = parser.parse_args()
    needs_cifar = not args.images or (not args.model_dir and args.train_images)
    if needs_cifar and not os.path.isfile(args.cifar_tarball):
        parser.error(f"CIFAR-10 not found at {args.cifar_tarball!r}: pass --cifar-tarball, "
                     "or image files and --train-images 0")

    model, image_size, class_names = get_model(args)
    export_base = args.export_dir or tempfile.mkdtemp(prefix="resnet_keras_export_")
    version_dir = export.export_saved_model(
        model, export_base, image_size=image_size, class_names=class_names)
    print(f"exported to {version_dir}")

    names, blobs = images_to_classify(args)
    for name, ranked in zip(names, classify(version_dir, blobs, args.top)):
        guesses = ", ".join(f"{label} {p:.2f}" for label, p in ranked)
        print(f"{name:40s} -> {guesses}")


if __name__ == "__main__":
    main()
