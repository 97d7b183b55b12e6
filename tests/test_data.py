import gzip
import struct

import numpy as np
import pytest

from pipeline.data import IMAGES_MAGIC, LABELS_MAGIC, MNIST_ENV, load_mnist, read_idx
from pipeline.errors import DataError


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape) + array.tobytes()


def write_mnist(folder, n_train=12, n_test=5, compress=False, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": (rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), IMAGES_MAGIC),
        "train-labels-idx1-ubyte": (rng.integers(0, 10, n_train, dtype=np.uint8), LABELS_MAGIC),
        "t10k-images-idx3-ubyte": (rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), IMAGES_MAGIC),
        "t10k-labels-idx1-ubyte": (rng.integers(0, 10, n_test, dtype=np.uint8), LABELS_MAGIC),
    }
    for name, (array, magic) in arrays.items():
        data = idx_bytes(array, magic)
        if compress:
            (folder / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return {name: array for name, (array, _) in arrays.items()}


@pytest.mark.parametrize("compress", [False, True])
def test_reads_idx_folder_plain_and_gzip(tmp_path, compress):
    written = write_mnist(tmp_path, compress=compress)
    mnist = load_mnist(tmp_path)
    np.testing.assert_array_equal(mnist.train_images, written["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(mnist.test_labels, written["t10k-labels-idx1-ubyte"])
    assert len(mnist.checksums) == 4 and all(len(v) == 64 for v in mnist.checksums.values())


def test_reads_keras_npz_file(tmp_path):
    rng = np.random.default_rng(1)
    arrays = dict(x_train=rng.integers(0, 256, (6, 28, 28), dtype=np.uint8), y_train=np.arange(6, dtype=np.uint8),
                  x_test=rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), y_test=np.arange(3, dtype=np.uint8))
    np.savez(tmp_path / "mnist.npz", **arrays)
    mnist = load_mnist(tmp_path / "mnist.npz")
    np.testing.assert_array_equal(mnist.train_images, arrays["x_train"])
    np.testing.assert_array_equal(load_mnist(tmp_path).test_labels, arrays["y_test"])


def test_environment_variable_names_the_source(tmp_path, monkeypatch):
    written = write_mnist(tmp_path, n_train=7)
    monkeypatch.setenv(MNIST_ENV, str(tmp_path))
    assert load_mnist().train_images.shape == written["train-images-idx3-ubyte"].shape


def test_truncated_file_names_file_and_sizes(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.*truncated"):
        load_mnist(tmp_path)


def test_wrong_magic_number_is_named(tmp_path):
    write_mnist(tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    labels.write_bytes(struct.pack(">I", IMAGES_MAGIC) + labels.read_bytes()[4:])
    with pytest.raises(DataError, match=r"t10k-labels.*magic number 0x00000803, expected 0x00000801"):
        load_mnist(tmp_path)


def test_missing_file_and_missing_source(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        load_mnist(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_mnist(tmp_path / "nowhere")


def test_damaged_gzip_and_tiny_file(tmp_path):
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8b" + b"\x00" * 20)
    with pytest.raises(DataError, match="damaged gzip"):
        read_idx(tmp_path / "bad.gz", IMAGES_MAGIC)
    (tmp_path / "tiny").write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="too short"):
        read_idx(tmp_path / "tiny", LABELS_MAGIC)


def test_label_count_must_match_images(tmp_path):
    write_mnist(tmp_path)
    labels = np.zeros(3, np.uint8)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels, LABELS_MAGIC))
    with pytest.raises(DataError, match="12 images but labels of shape"):
        load_mnist(tmp_path)
