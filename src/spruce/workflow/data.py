"""Datasets for `spruce run`: Fashion-MNIST (Debian package) and CIFAR-10 (python batches).

Every dataset comes out the same way: float32 images in [0, 1] shaped (N, S, S, 3),
int64 labels, split into train / validation (90/10, as in the guide) and the held-out
test set. Fashion-MNIST's 28x28 grey images are zero-padded to 32x32 and repeated to 3
channels, so the guide's architecture (a 3x3 stride-2 entry conv on 3 channels, which
XNNPACK's sparse path needs) applies unchanged. S is 32 unless asked otherwise: a network
that halves its input five times (the keras.applications MobileNets) needs 64 for its last
feature maps to stay 2x2, which XNNPACK's sparse path needs (see `image_size`).
"""

import dataclasses
import gzip
import os
import pickle

import numpy as np

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
DATASETS = ("fashion_mnist", "cifar10")
# Image sides `image_size` takes. Both data sets come at 32x32; the whole training set is held
# as float32 in memory, 3 channels: 128x128 is 11 GB for Fashion-MNIST's 60,000 images.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 128

_FASHION_HINT = (
    "Install the Debian package with `sudo apt-get install dataset-fashion-mnist` "
    f"(it puts the four IDX files in {FASHION_MNIST_DIR}), or pass --data-dir to a folder "
    "holding train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz."
)
_CIFAR_HINT = (
    "Pass --data-dir to the folder of the CIFAR-10 python version (the extracted "
    "cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, usually named "
    "cifar-10-batches-py), holding the pickles data_batch_1 ... data_batch_5 and test_batch, "
    "each a dict with b'data' (uint8, N x 3072, channel-major rows) and b'labels'. "
    "With a network, --data-dir keras downloads it through keras.datasets.cifar10."
)


class DataError(ValueError):
    """The data is missing or malformed; the message says how to fix it."""


@dataclasses.dataclass
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self):
        return len(self.class_names)

    def sizes(self):
        return {"train": len(self.x_train), "val": len(self.x_val), "test": len(self.x_test)}


# ---------------------------------------------------------------- IDX (Fashion-MNIST)

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """Read an IDX file (optionally gzipped) into a NumPy array, validating its header."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read it as {'gzip' if opener is gzip.open else 'IDX'} ({e}).") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(
            f"{path} is not an IDX file: expected the magic bytes 00 00 <type> <ndim>. "
            f"Received: {raw[:4].hex(' ') or 'an empty file'}."
        )
    dtype, ndim = raw[2], raw[3]
    if dtype not in _IDX_TYPES:
        raise DataError(f"{path}: unknown IDX element type 0x{dtype:02x}; expected one of "
                        f"{', '.join(f'0x{t:02x}' for t in _IDX_TYPES)}.")
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: IDX header truncated (ndim={ndim}, file has {len(raw)} bytes).")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    item = np.dtype(_IDX_TYPES[dtype])
    expected = int(np.prod(shape)) * item.itemsize
    body = raw[4 + 4 * ndim:]
    if len(body) != expected:
        raise DataError(
            f"{path}: the IDX header announces shape {shape} ({expected} bytes of data), "
            f"but the file holds {len(body)} bytes. The file is truncated or corrupted; "
            "reinstall it (sudo apt-get install --reinstall dataset-fashion-mnist)."
        )
    return np.frombuffer(body, dtype=item).reshape(shape)


def _fashion_file(data_dir, stem):
    for name in (f"{stem}.gz", stem):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            return path
    raise DataError(f"Fashion-MNIST file {stem}.gz not found in {data_dir}. {_FASHION_HINT}")


def load_fashion_mnist_raw(data_dir=None):
    """(x_train, y_train, x_test, y_test) as uint8 28x28 images and uint8 labels."""
    data_dir = data_dir or FASHION_MNIST_DIR
    if not os.path.isdir(data_dir):
        raise DataError(f"Fashion-MNIST folder {data_dir} does not exist. {_FASHION_HINT}")
    out = []
    for split in ("train", "t10k"):
        images = read_idx(_fashion_file(data_dir, f"{split}-images-idx3-ubyte"))
        labels = read_idx(_fashion_file(data_dir, f"{split}-labels-idx1-ubyte"))
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DataError(f"Fashion-MNIST {split} images: expected uint8 [N, 28, 28]. "
                            f"Received: {images.dtype} {list(images.shape)}.")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(f"Fashion-MNIST {split}: {len(images)} images but labels of shape "
                            f"{list(labels.shape)}; expected [{len(images)}].")
        if labels.size and labels.max() >= 10:
            raise DataError(f"Fashion-MNIST {split} labels must be in [0, 10). "
                            f"Received: max label {int(labels.max())}.")
        out += [images, labels]
    return tuple(out)


def to_rgb32(images):
    """uint8 [N, 28, 28] grey -> float32 [N, 32, 32, 3] in [0, 1] (zero-padded, repeated)."""
    return to_rgb(images, 32)


def to_rgb(images, size=32):
    """uint8 [N, h, w] grey (h, w <= 32) -> float32 [N, size, size, 3] in [0, 1].

    Framed as at 32x32 (the image zero-padded to 32x32), scaled by size / 32: at 64 a 28x28
    image becomes 56x56 (bilinear) inside a 4-pixel border, so the object keeps its share of
    the frame at every size.
    """
    n, h, w = images.shape
    if h > 32 or w > 32:
        raise DataError(f"images must be at most 32x32 to pad. Received: {h}x{w}.")
    inner_h, inner_w = round(h * size / 32), round(w * size / 32)
    grey = resize_images(images.astype(np.float32) / 255.0, (inner_h, inner_w))
    top, left = (size - inner_h) // 2, (size - inner_w) // 2
    out = np.zeros((n, size, size, 3), np.float32)
    out[:, top:top + inner_h, left:left + inner_w, :] = grey[..., None]
    return out


def resize_images(images, size, chunk=4096):
    """float32 [N, h, w] or [N, h, w, C] -> [N, size[0], size[1](, C)], bilinear.

    The sampling of `tf.image.resize(..., "bilinear")` (half-pixel centres, edges clamped),
    written as two small interpolation matrices; the images are returned unchanged when
    the size is theirs. Done in chunks, so that only the output is held at full size.
    """
    h, w = images.shape[1:3]
    if (h, w) == tuple(size):
        return images
    rows, cols = _bilinear_matrix(h, size[0]), _bilinear_matrix(w, size[1])
    spec = "ph,nhwc,qw->npqc" if images.ndim == 4 else "ph,nhw,qw->npq"
    out = np.empty((len(images), size[0], size[1], *images.shape[3:]), np.float32)
    for start in range(0, len(images), chunk):
        out[start:start + chunk] = np.einsum(spec, rows, images[start:start + chunk], cols,
                                             optimize=True)
    return out


def _bilinear_matrix(n_in, n_out):
    """[n_out, n_in]: each output pixel as a blend of its two nearest input pixels."""
    centre = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    centre = np.clip(centre, 0.0, n_in - 1)
    low = np.floor(centre).astype(np.int64)
    high = np.minimum(low + 1, n_in - 1)
    frac = (centre - low).astype(np.float32)
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), low] += 1.0 - frac
    m[np.arange(n_out), high] += frac
    return m


# ---------------------------------------------------------------- CIFAR-10 (python batches)

def _read_cifar_batch(path):
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except FileNotFoundError:
        raise DataError(f"CIFAR-10 batch {os.path.basename(path)} not found in "
                        f"{os.path.dirname(path)}. {_CIFAR_HINT}") from None
    except Exception as e:  # pickle raises many types on garbage
        raise DataError(f"{path} is not a CIFAR-10 python batch (unpickling failed: {e}). "
                        f"{_CIFAR_HINT}") from e
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a pickled dict. Received: {type(batch).__name__}. {_CIFAR_HINT}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        keys = sorted(str(k) for k in batch)
        raise DataError(f"{path}: expected keys b'data' and b'labels'. Received keys: {keys}.")
    data = np.asarray(data)
    labels = np.asarray(labels, dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: b'data' must be uint8 of shape [N, 3072]. "
                        f"Received: {data.dtype} {list(data.shape)}.")
    if labels.shape != (len(data),):
        raise DataError(f"{path}: {len(data)} images but {labels.size} labels.")
    if labels.size and (labels.min() < 0 or labels.max() >= 10):
        raise DataError(f"{path}: labels must be in [0, 10). Received: "
                        f"[{int(labels.min())}, {int(labels.max())}].")
    # rows are 1024 red, 1024 green, 1024 blue values of a 32x32 image
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def load_cifar10_raw(data_dir):
    """(x_train, y_train, x_test, y_test) as uint8 [N, 32, 32, 3] images and int labels."""
    if data_dir in (None, ""):
        raise DataError(f"--dataset cifar10 needs --data-dir. {_CIFAR_HINT}")
    if data_dir == "keras":
        keras = __import__("keras")
        try:
            (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
        except Exception as e:
            raise DataError(f"keras.datasets.cifar10 could not download CIFAR-10 ({e}). {_CIFAR_HINT}") from e
        return x_train, y_train.reshape(-1), x_test, y_test.reshape(-1)
    if os.path.isdir(os.path.join(data_dir, "cifar-10-batches-py")):
        data_dir = os.path.join(data_dir, "cifar-10-batches-py")
    if not os.path.isdir(data_dir):
        raise DataError(f"CIFAR-10 folder {data_dir} does not exist. {_CIFAR_HINT}")
    parts = [_read_cifar_batch(os.path.join(data_dir, f"data_batch_{i}")) for i in range(1, 6)]
    x_test, y_test = _read_cifar_batch(os.path.join(data_dir, "test_batch"))
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    return x_train, y_train, x_test, y_test


# ---------------------------------------------------------------- splitting

def split_train_val(x, y, val_fraction=0.1, seed=0):
    """Shuffle once with `seed`, keep the last `val_fraction` for validation."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1). Received: val_fraction={val_fraction}")
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(round(len(x) * val_fraction)))
    train, val = order[:-n_val], order[-n_val:]
    return x[train], y[train], x[val], y[val]


def _subset(x, y, n, seed):
    if n is None or n >= len(x):
        return x, y
    pick = np.sort(np.random.default_rng(seed).choice(len(x), n, replace=False))
    return x[pick], y[pick]


def load_dataset(name="fashion_mnist", data_dir=None, val_fraction=0.1, seed=0,
                 train_limit=None, test_limit=None, image_size=32):
    """Load `name` as a :class:`Dataset`; `*_limit` take a seeded random subset (for --quick).

    `image_size`: the side of the square images, from 32 (as the data set comes, padded for
    Fashion-MNIST) to MAX_IMAGE_SIZE, resized bilinearly.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) \
            or not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise DataError(f"image_size must be an integer in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}]. "
                        f"Received: image_size={image_size!r}")
    key = name.replace("-", "_").lower()
    if key == "fashion_mnist":
        x_train, y_train, x_test, y_test = load_fashion_mnist_raw(data_dir)
        classes = FASHION_MNIST_CLASSES
        def convert(images):
            return to_rgb(images, image_size)
    elif key == "cifar10":
        x_train, y_train, x_test, y_test = load_cifar10_raw(data_dir)
        classes = CIFAR10_CLASSES
        def convert(images):
            return resize_images(images.astype(np.float32) / 255.0, (image_size, image_size))
    else:
        raise DataError(f"dataset must be one of {', '.join(DATASETS)}. Received: dataset={name!r}")
    # subset before converting, so --quick never materialises the full float arrays
    x_train, y_train = _subset(x_train, y_train, train_limit, seed)
    x_test, y_test = _subset(x_test, y_test, test_limit, seed + 1)
    x_tr, y_tr, x_val, y_val = split_train_val(x_train, y_train, val_fraction, seed)
    as_int = lambda a: np.asarray(a, np.int64)  # noqa: E731
    return Dataset(key, convert(x_tr), as_int(y_tr), convert(x_val), as_int(y_val),
                   convert(x_test), as_int(y_test), classes)
