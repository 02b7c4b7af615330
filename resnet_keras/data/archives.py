"""Image-folder tarballs: the offline CIFAR-10 copy, extracted once, and subsets of it.

The archive ``cifar10_jpeg.tar.gz`` holds ``cifar10_jpeg/{train,test}/<class>/*.jpg``;
:func:`local_cifar10` extracts it into the cache on first use and returns
its ``folder:`` dataset spec.
"""
import os
import tarfile
import tempfile

from resnet_keras.data.datasets import FOLDER_PREFIX

CACHE_DIR = "~/.cache/resnet_keras"


def extract_image_folder(archive, cache_dir=CACHE_DIR):
    """Extract an image-folder tarball into CACHE_DIR once; return the folder.

    The archive's single top folder (e.g. ``cifar10_jpeg/``) is returned as
    an absolute path; later calls reuse it. Extraction goes to a temporary
    folder first, so an interrupted one is never mistaken for a complete copy.
    """
    cache_dir = os.path.expanduser(cache_dir)
    with tarfile.open(archive, "r:*") as tar:
        top = tar.next().name.split("/")[0]
        target = os.path.join(cache_dir, top)
        if os.path.isdir(target):
            return target
        os.makedirs(cache_dir, exist_ok=True)
        scratch = tempfile.mkdtemp(prefix=".extract-", dir=cache_dir)
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(scratch, **safe)
    os.replace(os.path.join(scratch, top), target)
    os.rmdir(scratch)
    return target


def extract_subset(archive, dest, per_class_train, per_class_test):
    """Copy the first N images per class of an image-folder tarball into DEST.

    The archive holds ``TOP/{train,test}/<class>/<file>``; DEST gets
    ``DEST/{train,test}/<class>/<file>`` (a ``folder:`` dataset). Only the
    wanted members are written, so small subsets of CIFAR-10 take seconds.
    Returns DEST.
    """
    wanted = {"train": per_class_train, "test": per_class_test}
    counts = {}
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 4 or parts[1] not in wanted:
                continue
            _, split, label, filename = parts
            if counts.get((split, label), 0) >= wanted[split]:
                continue
            counts[(split, label)] = counts.get((split, label), 0) + 1
            out_dir = os.path.join(dest, split, label)
            os.makedirs(out_dir, exist_ok=True)
            with tar.extractfile(member) as src, \
                    open(os.path.join(out_dir, filename), "wb") as out:
                out.write(src.read())
    return dest


def default_cifar10_archive():
    """``$RESNET_KERAS_SHARED/datasets/cifar10_jpeg.tar.gz`` (default: ``../shared``
    beside the repository)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    repo = os.path.dirname(package)
    shared = os.environ.get("RESNET_KERAS_SHARED", os.path.join(os.path.dirname(repo), "shared"))
    return os.path.join(shared, "datasets", "cifar10_jpeg.tar.gz")


def local_cifar10(archive=None, cache_dir=CACHE_DIR):
    """``folder:`` spec of the offline CIFAR-10 JPEG copy, extracted on first use.

    ``archive`` defaults to ``$RESNET_KERAS_SHARED/datasets/cifar10_jpeg.tar.gz``
    (``RESNET_KERAS_SHARED`` defaults to ``../shared`` beside the repository).
    """
    archive = archive or default_cifar10_archive()
    if not os.path.isfile(archive):
        raise ValueError(f"CIFAR-10 archive {archive!r} not found; pass its path, or use "
                         "the TFDS dataset cifar10")
    return FOLDER_PREFIX + extract_image_folder(archive, cache_dir)
