"""Datasets and input pipelines on real CIFAR-10 JPEGs and mocked TFDS data."""
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from conftest import CIFAR_CLASSES
from resnet_keras import data, preprocessing
from resnet_keras.data import tfds_source

BATCH = 8


@pytest.fixture(scope="module")
def cifar(cifar_subset):
    return data.load_dataset(f"folder:{cifar_subset}")


def _first(ds):
    images, labels = next(iter(ds))
    return images.numpy(), labels.numpy()


def test_folder_dataset_metadata(cifar):
    assert cifar.class_names == list(CIFAR_CLASSES)
    assert cifar.num_classes == 10
    assert (cifar.num_train, cifar.num_eval) == (100, 40)
    assert cifar.eval_split == "test"
    assert cifar.native_size == 32
    assert cifar.default_image_size() == 32


def test_decoded_images_and_labels(cifar):
    images = [(image.numpy(), int(label)) for image, label in cifar.eval]
    assert len(images) == 40
    assert all(image.shape == (32, 32, 3) and image.dtype == np.uint8 for image, _ in images)
    assert sorted({label for _, label in images}) == list(range(10))
    assert cifar.train.element_spec[1].dtype == tf.int64


def test_train_pipeline_shapes_and_range(cifar):
    images, labels = _first(data.train_pipeline(cifar.train, 32, BATCH, seed=0))
    assert images.shape == (BATCH, 32, 32, 3) and images.dtype == np.float32
    assert labels.shape == (BATCH,) and labels.dtype == np.int64
    low = (0 - max(preprocessing.IMAGENET_MEAN)) / min(preprocessing.IMAGENET_STD)
    high = (1 - min(preprocessing.IMAGENET_MEAN)) / min(preprocessing.IMAGENET_STD)
    assert low - 1e-5 <= images.min() and images.max() <= high + 1e-5
    assert images.std() > 0.3


def test_eval_pipeline_matches_eval_transform(cifar):
    images, labels = _first(data.eval_pipeline(cifar.eval, 32, BATCH))
    raw = np.stack([image.numpy() for image, _ in cifar.eval.take(BATCH)])
    np.testing.assert_allclose(images, preprocessing.eval_transform(raw, 32).numpy(), atol=1e-6)
    bigger, _ = _first(data.eval_pipeline(cifar.eval, 40, 2))
    assert bigger.shape == (2, 40, 40, 3)


def test_same_seed_same_batches(cifar):
    def batches(seed):
        stream = iter(data.train_pipeline(cifar.train, 32, BATCH, seed=seed))
        return [next(stream) for _ in range(3)]

    first, other = batches(7), batches(8)
    tf.random.set_seed(0)  # the global seed has no say in the order
    again = batches(7)
    for (a, la), (b, lb) in zip(first, again):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(first[0][0], other[0][0])


def test_start_step_continues_the_stream(cifar):
    """A resumed pipeline (start_step=k) yields batch k of the full stream, across epochs."""
    full = iter(data.train_pipeline(cifar.train, 32, BATCH, seed=3, num_examples=100))
    batches = [next(full) for _ in range(15)]  # 120 images: crosses the epoch boundary
    for start in (5, 13):
        resumed = data.train_pipeline(cifar.train, 32, BATCH, seed=3, num_examples=100,
                                      start_step=start)
        images, labels = _first(resumed)
        np.testing.assert_array_equal(images, batches[start][0])
        np.testing.assert_array_equal(labels, batches[start][1])


def test_epochs_are_reshuffled(cifar):
    stream = data.train_pipeline(cifar.train, 32, 100, seed=1).take(2)
    first, second = [labels.numpy() for _, labels in stream]
    assert sorted(first) == sorted(second) and not np.array_equal(first, second)


# torchvision's ImageNet statistics, written out here as the reference.
TORCH_MEAN = np.array([0.485, 0.456, 0.406])
TORCH_STD = np.array([0.229, 0.224, 0.225])


def _pixels(normalised):
    """Normalised images back to pixel values (with the statistics above)."""
    return (np.asarray(normalised, np.float64) * TORCH_STD + TORCH_MEAN) * 255.0


def test_normalize_against_written_numbers_and_keras():
    pixels = np.array([[[0, 128, 255], [255, 0, 64]]], np.uint8)
    expected = [[[-2.1179039, 0.2051821, 2.6400000], [2.2489083, -2.0357143, -0.6889760]]]
    np.testing.assert_allclose(preprocessing.normalize(pixels).numpy(), expected, atol=1e-6)
    import keras

    images = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3)).astype(np.float32)
    reference = keras.applications.imagenet_utils.preprocess_input(
        images.copy(), mode="torch", data_format="channels_last")
    np.testing.assert_allclose(preprocessing.normalize(images).numpy(), reference, atol=1e-6)


def _pil_resize(image, height, width):
    """Bilinear (antialiased) resize of each channel by PIL in float mode."""
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(image[..., c].astype(np.float32), mode="F")
                                .resize((width, height), Image.BILINEAR))
                     for c in range(3)], axis=-1)


@pytest.mark.parametrize("shape, size, resized, crop", [
    ((20, 30), 32, (32, 32), (0, 0)),  # small: straight to the size, no crop
    ((64, 48), 32, (32, 32), (0, 0)),
    ((40, 60), 96, (110, 165), (7, 34)),  # shorter side to round(96 / 0.875) = 110
    ((300, 200), 96, (165, 110), (34, 7)),
    ((131, 130), 224, (258, 256), (17, 16)),
])
def test_eval_transform_against_pil(shape, size, resized, crop):
    image = np.random.default_rng(1).integers(0, 256, shape + (3,), dtype=np.uint8)
    top, left = crop
    expected = _pil_resize(image, *resized)[top:top + size, left:left + size].clip(0, 255)
    expected = (expected / 255.0 - TORCH_MEAN) / TORCH_STD
    np.testing.assert_allclose(preprocessing.eval_transform(image, size).numpy(), expected,
                               atol=2e-4)
    batch = preprocessing.eval_transform(np.stack([image, image]), size).numpy()
    np.testing.assert_allclose(batch[1], expected, atol=2e-4)


def _coordinate_images(height, width, count, scale=1, base=0):
    """COUNT copies of an image whose red value is BASE + SCALE * row and green
    BASE + SCALE * column (blue 200), labelled 0..COUNT-1."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    image = np.stack([base + scale * rows, base + scale * cols, np.full_like(rows, 200)], -1)
    images = np.repeat(image[None].astype(np.uint8), count, axis=0)
    return image, tf.data.Dataset.from_tensor_slices((images, np.arange(count, dtype=np.int64)))


def test_pad_crop_and_flip_are_exact():
    """Every augmented CIFAR-size image is one padded crop at (dy, dx) in [0, 8], maybe
    mirrored; across the stream many offsets and both mirrorings occur."""
    image, ds = _coordinate_images(32, 32, 16, base=100)  # padding (0) is never a pixel
    padded = np.pad(image, [(4, 4), (4, 4), (0, 0)])
    candidates = {}
    for dy in range(9):
        for dx in range(9):
            crop = padded[dy:dy + 32, dx:dx + 32]
            candidates[(dy, dx, False)] = crop
            candidates[(dy, dx, True)] = crop[:, ::-1]
    seen = []
    for images, _ in data.train_pipeline(ds, 32, 8, seed=4).take(6):
        for out in np.rint(_pixels(images)).astype(np.int64):
            matches = [key for key, crop in candidates.items() if np.array_equal(out, crop)]
            assert len(matches) == 1, "not a padded crop of the image"
            seen.append(matches[0])
    offsets = {(dy, dx) for dy, dx, _ in seen}
    assert len(offsets) >= 15
    assert len({dy for dy, _ in offsets}) >= 6 and len({dx for _, dx in offsets}) >= 6
    assert {flip for _, _, flip in seen} == {False, True}


def test_random_resized_crop_is_a_mirrored_sub_rectangle():
    """Large sizes: each image is an axis-aligned crop of the source (inside it, area
    8-100 %, aspect 3/4-4/3), resized, maybe mirrored left-right."""
    height, width, size = 60, 90, 80
    _, ds = _coordinate_images(height, width, 12, scale=2)
    boxes, flips = [], set()
    for images, _ in data.train_pipeline(ds, size, 4, seed=2).take(3):
        for out in _pixels(images):
            red, green = out[..., 0], out[..., 1]
            np.testing.assert_allclose(out[..., 2], 200, atol=0.05)
            # Red depends on the row only, green on the column only: no rotation or shear.
            assert red.std(axis=1).max() < 0.05 and green.std(axis=0).max() < 0.05
            rows, cols = red[:, 0], green[0]
            flipped = cols[-1] < cols[0]
            flips.add(bool(flipped))
            cols = cols[::-1] if flipped else cols
            box = []
            for values, extent in ((rows, height), (cols, width)):
                inner = np.arange(4, size - 4)  # away from the clamped edges
                slope, intercept = np.polyfit(inner, values[inner] / 2, 1)
                assert np.abs(values[inner] / 2 - (slope * inner + intercept)).max() < 0.05
                length = slope * size
                start = intercept + 0.5 - 0.5 * slope
                assert -0.05 < start and start + length < extent + 0.05
                box += [start, length]
            _, crop_h, _, crop_w = box
            assert 0.08 - 0.01 <= crop_h * crop_w / (height * width) <= 1.0 + 0.01
            assert 3 / 4 - 0.05 <= crop_w / crop_h <= 4 / 3 + 0.05
            boxes.append(tuple(np.round(box, 1)))
    assert flips == {False, True}
    assert len(set(boxes)) >= 10
    assert len({(round(top), round(left)) for top, _, left, _ in boxes}) >= 5


def test_augmentation_changes_images(cifar):
    image = next(iter(cifar.train))[0]
    plain = preprocessing.normalize(image).numpy()
    outs = [data.augment(image, 32, tf.constant([0, i], tf.int64)).numpy() for i in range(8)]
    assert sum(not np.allclose(out, plain) for out in outs) >= 6
    assert len({out.tobytes() for out in outs}) >= 5
    large = data.augment(image, 96, tf.constant([0, 1], tf.int64))
    assert large.shape == (96, 96, 3)


def test_input_pipelines_split_each_global_batch(cifar):
    """Two pipelines (workers) together yield exactly the one-pipeline batches."""
    def pipeline(pipelines, index):
        context = tf.distribute.InputContext(pipelines, index, 2)
        return iter(data.train_pipeline(cifar.train, 32, BATCH, seed=5, input_context=context))

    single = pipeline(1, 0)
    workers = [pipeline(2, 0), pipeline(2, 1)]
    for _ in range(3):
        first, second = next(single), next(single)
        for expected, worker in zip((first, second), workers):
            images, labels = next(worker)
            assert images.shape == (BATCH // 2, 32, 32, 3)
            np.testing.assert_array_equal(images, expected[0])
            np.testing.assert_array_equal(labels, expected[1])


def test_distribute_per_replica_batches(cifar):
    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())
    dist = data.distribute(strategy, lambda ctx: data.train_pipeline(
        cifar.train, 32, BATCH, seed=0, input_context=ctx), BATCH)
    images, labels = next(iter(dist))
    shapes = [tuple(t.shape) for t in strategy.experimental_local_results(images)]
    assert shapes == [(BATCH // 2, 32, 32, 3)] * 2
    with pytest.raises(ValueError, match="batch size 9 .* 2 replicas"):
        data.distribute(strategy, lambda ctx: None, 9)


def test_corrupt_images_are_skipped_and_counted(cifar_subset, tmp_path):
    root = tmp_path / "cifar"
    shutil.copytree(cifar_subset, root)
    (root / "train" / "cat" / "zz_garbage.jpg").write_bytes(b"this is not a jpeg")
    good = sorted((root / "train" / "dog").iterdir())[0].read_bytes()
    (root / "train" / "dog" / "zz_truncated.jpg").write_bytes(good[:200])
    ds = data.load_dataset(f"folder:{root}")
    assert ds.num_train == 102
    assert sum(1 for _ in ds.train) == 100
    assert ds.skipped_images == 2
    images, _ = _first(data.train_pipeline(ds.train, 32, BATCH, seed=0))
    assert np.isfinite(images).all()


def test_train_slices_are_cut_before_decoding(cifar_subset, tmp_path):
    root = tmp_path / "cifar"
    shutil.copytree(cifar_subset, root)
    (root / "train" / "cat" / "zz_garbage.jpg").write_bytes(b"this is not a jpeg")
    (root / "train" / "dog" / "zz_garbage.jpg").write_bytes(b"nor is this")
    splits, class_names = data.read_image_folder(str(root))
    paths, names = splits["train"].paths, splits["train"].labels
    bad = [i for i, p in enumerate(paths) if p.endswith("zz_garbage.jpg")]
    cut = max(bad) + 1  # both broken images lie before the cut
    ds = data.load_dataset(f"folder:{root}")
    held = [int(label) for _, label in ds.train_slice(cut)]
    # The held-out slice is the files after the cut, and none before it was read.
    assert held == [class_names.index(n) for n in names[cut:]]
    assert ds.skipped_images == 0
    # The part before the cut loses its two broken images and no more, and never
    # reaches past the cut to make up for them.
    head = [int(label) for _, label in ds.train_slice(0, cut)]
    assert head == [class_names.index(n) for i, n in enumerate(names[:cut]) if i not in bad]
    assert ds.skipped_images == 2 and len(head) + len(held) == 100


def test_gray_and_rgba_images_become_rgb(tmp_path):
    for split in ("train", "test"):
        for label, channels in (("gray", 1), ("rgba", 4)):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            pixels = np.full((20, 20, channels), 200, np.uint8)
            (folder / "a.png").write_bytes(tf.io.encode_png(pixels).numpy())
    ds = data.load_dataset(f"folder:{tmp_path}")
    assert ds.class_names == ["gray", "rgba"]
    shapes = {tuple(image.shape) for image, _ in ds.train}
    assert shapes == {(20, 20, 3)}
    assert ds.native_size == 20


def test_val_split_is_used_without_test(cifar_subset, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(os.path.join(cifar_subset, "train"), root / "train")
    shutil.copytree(os.path.join(cifar_subset, "test"), root / "val")
    ds = data.load_dataset(f"folder:{root}")
    assert (ds.eval_split, ds.num_eval) == ("val", 40)


@pytest.mark.parametrize("spec, message", [
    ("folder:/no/such/folder", "does not exist"),
    ("", "TFDS name"),
    ("no_such_dataset_xyz", "unknown dataset 'no_such_dataset_xyz'"),
    ("cifar1O", "did you mean: cifar10"),
    ("imagenette/999px", "unknown config '999px'.*choices: .*160px"),
])
def test_bad_dataset_specs(spec, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        data.load_dataset(spec, data_dir=str(tmp_path))


def test_bad_folders(cifar_subset, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no train/ split folder"):
        data.load_dataset(f"folder:{tmp_path / 'empty'}")
    (tmp_path / "flat" / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match="no class folders"):
        data.load_dataset(f"folder:{tmp_path / 'flat'}")
    with pytest.raises(ValueError, match=r"no split 'val' \(splits: test, train\)"):
        data.load_dataset(f"folder:{cifar_subset}", eval_split="val")


def test_not_image_classification(tmp_path):
    with pytest.raises(ValueError, match="'glue/cola' is not an image classification"):
        data.load_dataset("glue/cola", data_dir=str(tmp_path))


def _fake_prepared(name, data_dir, examples):
    """Write TFDS metadata (split sizes) so mock_data serves NAME from DATA_DIR."""
    tfds = data.tfds()
    builder = tfds.builder(name, data_dir=data_dir)
    builder.info.set_splits(tfds.core.SplitDict([
        tfds.core.SplitInfo(name=split, shard_lengths=[examples], num_bytes=0)
        for split in ("train", "test")]))
    os.makedirs(builder.data_dir, exist_ok=True)
    builder.info.write_to_directory(builder.data_dir)


def test_tfds_names_with_mock_data(tmp_path):
    tfds = data.tfds()
    for name in ("cifar10", "mnist"):
        _fake_prepared(name, str(tmp_path), 6)
    with tfds.testing.mock_data(num_examples=6, data_dir=str(tmp_path)):
        cifar = data.load_dataset("cifar10", data_dir=str(tmp_path))
        assert (cifar.num_classes, cifar.num_train, cifar.native_size) == (10, 6, 32)
        images, labels = _first(data.train_pipeline(cifar.train, 32, 4, seed=0))
        assert images.shape == (4, 32, 32, 3) and labels.dtype == np.int64
        mnist = data.load_dataset("mnist", data_dir=str(tmp_path))
        image, _ = next(iter(mnist.train))
        assert image.shape == (28, 28, 3) and mnist.default_image_size() == 28


def test_tfds_not_prepared_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(tfds_source, "_online", lambda: False)
    with pytest.raises(ValueError, match="not prepared .* pass --data-dir"):
        data.load_dataset("cifar10", data_dir=str(tmp_path))


def test_extract_subset_writes_an_image_folder(tmp_path):
    from conftest import CIFAR_TARBALL

    if not os.path.isfile(CIFAR_TARBALL):
        pytest.skip(f"shared CIFAR-10 not found at {CIFAR_TARBALL}")
    dest = data.extract_subset(CIFAR_TARBALL, str(tmp_path), 3, 2)
    assert sorted(os.listdir(os.path.join(dest, "train"))) == sorted(CIFAR_CLASSES)
    for split, count in (("train", 3), ("test", 2)):
        for label in CIFAR_CLASSES:
            assert len(os.listdir(os.path.join(dest, split, label))) == count
    dataset = data.load_dataset(f"folder:{dest}")
    assert (dataset.num_train, dataset.num_eval) == (30, 20)


def test_sized_uint8_keeps_images_of_the_size_and_rounds_resized_ones():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    kept = data.sized_uint8(tf.constant(image), 32)
    assert kept.dtype == tf.uint8
    np.testing.assert_array_equal(kept, image)
    # A 2x2 checkerboard of 10 / 250 blocks, upsampled 2x: flat blocks stay exact.
    small = np.kron(np.array([[10, 250], [250, 10]], np.uint8), np.ones((8, 8), np.uint8))
    grown = data.sized_uint8(tf.constant(np.repeat(small[..., None], 3, axis=2)), 32).numpy()
    assert grown.shape == (32, 32, 3) and grown.dtype == np.uint8
    assert (grown[:14, :14] == 10).all() and (grown[18:, :14] == 250).all()
    assert (grown[:14, 18:] == 250).all() and (grown[18:, 18:] == 10).all()
    # Alternating columns of 11 and 12, halved: each output pixel is their mean,
    # 11.5, which rounds (to even) to 12 rather than truncating to 11.
    stripes = np.tile(np.array([11, 12], np.uint8), 32)[None, :, None].repeat(64, 0)
    halved = data.sized_uint8(tf.constant(stripes.repeat(3, axis=2)), 32).numpy()
    assert (halved[2:-2, 2:-2] == 12).all()
