"""spruce run's data readers, on real files: the Debian Fashion-MNIST package and CIFAR-10 batches."""

import gzip
import os
import pickle

import numpy as np
import pytest

from spruce.workflow import data as wdata
from spruce.workflow.data import DataError, load_dataset, read_idx

FASHION = wdata.FASHION_MNIST_DIR
needs_fashion = pytest.mark.skipif(
    not os.path.exists(os.path.join(FASHION, "t10k-labels-idx1-ubyte.gz")),
    reason="needs the Debian package dataset-fashion-mnist")


def _write_idx(path, array, type_code=0x08):
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def _write_fashion(folder, n_train=40, n_test=20, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        _write_idx(os.path.join(folder, f"{split}-images-idx3-ubyte.gz"), images)
        _write_idx(os.path.join(folder, f"{split}-labels-idx1-ubyte.gz"), labels)
        arrays[split] = (images, labels)
    return arrays


def _write_cifar(folder, per_batch=12, seed=0):
    """CIFAR-10's python-batches layout: pickled dicts, b'data' uint8 [N, 3072] channel-major rows."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        d = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, per_batch).tolist(),
             b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
             b"filenames": [f"img{i}.png".encode() for i in range(per_batch)]}
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(d, f, protocol=2)
        batches[name] = d
    return batches


@needs_fashion
def test_real_fashion_mnist_test_labels_parse_with_known_counts():
    labels = read_idx(os.path.join(FASHION, "t10k-labels-idx1-ubyte.gz"))
    assert labels.shape == (10000,)
    assert np.bincount(labels).tolist() == [1000] * 10  # the test set is balanced


def test_fashion_images_are_padded_to_32x32_rgb_in_unit_range(tmp_path):
    arrays = _write_fashion(tmp_path)
    ds = load_dataset("fashion_mnist", str(tmp_path), val_fraction=0.25, seed=3)
    assert ds.x_train.shape[1:] == (32, 32, 3) and ds.x_train.dtype == np.float32
    assert ds.sizes() == {"train": 30, "val": 10, "test": 20}
    # the test split keeps the file's order: image 0 sits in the middle, all channels equal
    first = ds.x_test[0]
    np.testing.assert_allclose(first[2:30, 2:30, 1], arrays["t10k"][0][0] / 255.0, rtol=1e-6)
    assert np.all(first[:2] == 0) and np.all(first[:, 30:] == 0)
    assert np.array_equal(first[..., 0], first[..., 2])
    assert ds.y_test.tolist() == arrays["t10k"][1].tolist()


def test_bilinear_resize_samples_as_tensorflow_does():
    import tensorflow as tf

    images = np.random.default_rng(0).random((5, 28, 28, 3), np.float32)
    for size in ((56, 56), (64, 48), (14, 14)):
        want = tf.image.resize(images, size, method="bilinear", antialias=False).numpy()
        np.testing.assert_allclose(wdata.resize_images(images, size, chunk=2), want, atol=2e-6)
    grey = images[..., 0]
    np.testing.assert_allclose(wdata.resize_images(grey, (56, 56)),
                               tf.image.resize(grey[..., None], (56, 56)).numpy()[..., 0], atol=2e-6)
    assert wdata.resize_images(images, (28, 28)) is images


def test_fashion_images_at_64_keep_the_32x32_framing(tmp_path):
    arrays = _write_fashion(tmp_path)
    small = load_dataset("fashion_mnist", str(tmp_path), seed=3)
    large = load_dataset("fashion_mnist", str(tmp_path), seed=3, image_size=64)
    assert large.input_shape == (64, 64, 3) and large.x_train.dtype == np.float32
    # the 28x28 image, scaled to 56x56, inside a 4-pixel border (2 pixels at 32x32)
    first = large.x_test[0]
    assert np.all(first[:4] == 0) and np.all(first[:, 60:] == 0) and first[4:60, 4:60].any()
    np.testing.assert_allclose(first[4:60, 4:60, 0],
                               wdata.resize_images(arrays["t10k"][0][:1] / np.float32(255), (56, 56))[0],
                               atol=1e-6)
    assert np.array_equal(first[..., 0], first[..., 2])
    assert large.y_train.tolist() == small.y_train.tolist()


def test_cifar_images_are_resized_to_the_image_size(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", str(tmp_path), image_size=96)
    assert ds.input_shape == (96, 96, 3) and 0.0 <= ds.x_test.min() and ds.x_test.max() <= 1.0


@pytest.mark.parametrize("size", [16, 31, 129, 64.0, True])
def test_an_image_size_out_of_range_is_refused_with_the_range(tmp_path, size):
    _write_fashion(tmp_path)
    with pytest.raises(DataError, match=r"image_size must be an integer in \[32, 128\]"):
        load_dataset("fashion_mnist", str(tmp_path), image_size=size)


def test_train_validation_split_is_disjoint_and_seeded(tmp_path):
    _write_fashion(tmp_path, n_train=50)
    a = load_dataset("fashion_mnist", str(tmp_path), seed=7)
    b = load_dataset("fashion_mnist", str(tmp_path), seed=7)
    c = load_dataset("fashion_mnist", str(tmp_path), seed=8)
    assert a.sizes()["val"] == 5 and a.sizes()["train"] == 45
    np.testing.assert_array_equal(a.x_val, b.x_val)
    assert not np.array_equal(a.y_train, c.y_train) or not np.array_equal(a.x_val, c.x_val)
    flat = lambda x: {row.tobytes() for row in x.reshape(len(x), -1)}  # noqa: E731
    assert not flat(a.x_train) & flat(a.x_val)


def test_truncated_idx_file_is_refused_with_sizes(tmp_path):
    _write_fashion(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(DataError, match=r"announces shape \(20, 28, 28\).*truncated"):
        load_dataset("fashion_mnist", str(tmp_path))


def test_wrong_magic_is_refused(tmp_path):
    p = tmp_path / "x.idx"
    p.write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(DataError, match="not an IDX file.*89 50 4e 47"):
        read_idx(str(p))


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion_mnist", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz not found.*apt-get install"):
        load_dataset("fashion_mnist", str(tmp_path))


def test_cifar10_python_batches_are_read_channel_major(tmp_path):
    batches = _write_cifar(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", str(tmp_path), val_fraction=0.1, seed=0)  # the parent folder works too
    assert ds.sizes() == {"train": 54, "val": 6, "test": 12}
    assert ds.x_test.shape == (12, 32, 32, 3)
    row = batches["test_batch"][b"data"][0]
    # pixel (y=3, x=5): red at 3*32+5, green 1024 later, blue 2048 later
    expected = np.array([row[101], row[1024 + 101], row[2048 + 101]]) / 255.0
    np.testing.assert_allclose(ds.x_test[0, 3, 5], expected, rtol=1e-6)
    assert ds.y_test.tolist() == batches["test_batch"][b"labels"]
    assert ds.class_names[0] == "airplane"


def test_cifar10_missing_batch_names_the_layout(tmp_path):
    _write_cifar(tmp_path)
    os.unlink(tmp_path / "data_batch_3")
    with pytest.raises(DataError, match="data_batch_3 not found.*data_batch_1 ... data_batch_5 and test_batch"):
        load_dataset("cifar10", str(tmp_path))


def test_cifar10_batch_with_wrong_shape_is_refused(tmp_path):
    _write_cifar(tmp_path)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((4, 1024), np.uint8), b"labels": [0] * 4}, f)
    with pytest.raises(DataError, match=r"uint8 of shape \[N, 3072\]. Received: uint8 \[4, 1024\]"):
        load_dataset("cifar10", str(tmp_path))


def test_cifar10_without_data_dir_explains_the_layout():
    with pytest.raises(DataError, match="needs --data-dir.*cifar-10-batches-py"):
        load_dataset("cifar10", None)


def test_unknown_dataset_is_refused():
    with pytest.raises(DataError, match="dataset must be one of fashion_mnist, cifar10. Received: dataset='mnist'"):
        load_dataset("mnist")


@needs_fashion
def test_quick_subset_is_seeded_and_small():
    ds = load_dataset(train_limit=300, test_limit=100, seed=1)
    assert ds.sizes() == {"train": 270, "val": 30, "test": 100}
    assert set(np.unique(ds.y_test)) <= set(range(10)) and 0.0 <= ds.x_train.min() <= ds.x_train.max() <= 1.0
