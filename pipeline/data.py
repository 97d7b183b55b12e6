"""MNIST loading: the original IDX files (plain or gzip) or Keras' ``mnist.npz``.

Where the data comes from, first match wins: an explicit path (CLI option or config),
the ``DIGITS_MNIST`` environment variable, then Keras' own download. A path may be a
folder holding the four IDX files (``train-images-idx3-ubyte[.gz]`` ...) or an
``mnist.npz`` file, or a folder holding ``mnist.npz``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import DataError

MNIST_ENV = "DIGITS_MNIST"
IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class Mnist:
    """The two official splits: images (N, 28, 28) uint8, ink high; labels (N,) uint8."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str
    checksums: dict


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{path}: damaged gzip stream ({exc})") from None
    return raw


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Read one IDX file, checking its magic number and that its size matches its header."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 8:
        raise DataError(f"{path}: {len(data)} bytes is too short for an IDX header")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise DataError(f"{path}: magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
                        f"({'images' if expected_magic == IMAGES_MAGIC else 'labels'} file)")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated header ({len(data)} bytes, expected {header})")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape)) + header
    if len(data) != expected:
        raise DataError(f"{path}: {len(data)} bytes, but its header {shape} needs {expected} "
                        f"({'truncated' if len(data) < expected else 'trailing data'})")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder}: no {stem} or {stem}.gz (the original MNIST IDX files are expected)")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_pair(images: np.ndarray, labels: np.ndarray, where: str) -> None:
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{where}: images have shape {images.shape}, expected (N, 28, 28)")
    if labels.shape != (images.shape[0],):
        raise DataError(f"{where}: {images.shape[0]} images but labels of shape {labels.shape}")
    if labels.size and labels.max() > 9:
        raise DataError(f"{where}: label {int(labels.max())} is not a digit")


def _load_folder(folder: Path) -> Mnist:
    if (folder / "mnist.npz").is_file():
        return _load_npz(folder / "mnist.npz")
    paths = {key: _find_idx(folder, stem) for key, stem in IDX_FILES.items()}
    arrays = {key: read_idx(path, IMAGES_MAGIC if key.endswith("images") else LABELS_MAGIC)
              for key, path in paths.items()}
    _check_pair(arrays["train_images"], arrays["train_labels"], str(paths["train_images"]))
    _check_pair(arrays["test_images"], arrays["test_labels"], str(paths["test_images"]))
    checksums = {path.name: _sha256(path) for path in paths.values()}
    return Mnist(**arrays, source=str(folder), checksums=checksums)


def _load_npz(path: Path) -> Mnist:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in ("x_train", "y_train", "x_test", "y_test")}
    except KeyError as exc:
        raise DataError(f"{path}: missing array {exc} (expected x_train, y_train, x_test, y_test)") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    _check_pair(arrays["x_train"], arrays["y_train"], str(path))
    _check_pair(arrays["x_test"], arrays["y_test"], str(path))
    return Mnist(arrays["x_train"].astype(np.uint8), arrays["y_train"].astype(np.uint8),
                 arrays["x_test"].astype(np.uint8), arrays["y_test"].astype(np.uint8),
                 source=str(path), checksums={path.name: _sha256(path)})


def _download_with_keras() -> Mnist:
    import keras

    path = Path(keras.utils.get_file(
        "mnist.npz", "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"))
    return _load_npz(path)


def load_mnist(source: str | os.PathLike | None = None) -> Mnist:
    """Load MNIST from ``source``, else ``$DIGITS_MNIST``, else Keras' download."""
    chosen = source if source is not None else os.environ.get(MNIST_ENV)
    if not chosen:
        return _download_with_keras()
    path = Path(chosen)
    if path.is_dir():
        return _load_folder(path)
    if path.is_file():
        return _load_npz(path)
    raise DataError(f"MNIST source {path} does not exist (give a folder of IDX files or an mnist.npz)")
