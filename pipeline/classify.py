"""Classify 28×28 digit crops in batches with the shipped Keras model.

TensorFlow is imported inside ``DigitClassifier`` only, so modules that merely name the
classifier (the CLI, the batch loop) stay fast to import.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pipeline.errors import ModelError
from pipeline.normalize import CROP_SIZE

DIGIT_CLASSES = tuple("0123456789")
REJECT_CLASS = 10
CLASS_NAMES = DIGIT_CLASSES + ("not_a_digit",)
# The input contract every crop meets; checked against the model card at load.
INPUT_CONTRACT = {"shape": [CROP_SIZE, CROP_SIZE], "polarity": "ink_high", "range": [0.0, 1.0]}
REBUILD_HINT = "run `make train` to rebuild it"
# Batches classified at once: the second keeps the cores busy while the first waits between
# its layers (about +20% crops/s on 2 cores; a third added nothing).
BATCHES_IN_FLIGHT = 2


def card_path(model_path: Path) -> Path:
    """``models/digits.keras`` -> ``models/digits.card.json``."""
    return Path(model_path).with_suffix(".card.json")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_card(model_path: Path) -> dict:
    """The model card, checked against the model file and the input contract."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise ModelError(f"model file {model_path} not found; {REBUILD_HINT}")
    path = card_path(model_path)
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(f"model card {path} cannot be read ({exc.strerror or exc}); {REBUILD_HINT}") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"model card {path} is not valid JSON ({exc}); {REBUILD_HINT}") from None
    try:
        expected_sha = card["file"]["sha256"]
        temperature = float(card["calibration"]["temperature"])
        contract = card["input"]
        classes = tuple(card["classes"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"model card {path} lacks {exc}; {REBUILD_HINT}") from None
    actual_sha = file_sha256(model_path)
    if actual_sha != expected_sha:
        raise ModelError(f"model file {model_path} does not match its card (sha256 {actual_sha[:12]}… "
                         f"expected {expected_sha[:12]}…): damaged or replaced; {REBUILD_HINT}")
    if contract != INPUT_CONTRACT or classes != CLASS_NAMES:
        raise ModelError(f"model {model_path} expects input {contract} and classes {classes}; this "
                         f"version feeds {INPUT_CONTRACT} with classes {CLASS_NAMES}; {REBUILD_HINT}")
    if not temperature > 0:
        raise ModelError(f"model card {path}: calibration temperature {temperature} must be positive")
    return card


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``, computed stably."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


@contextlib.contextmanager
def _native_stderr_silenced():
    """Send file descriptor 2 to /dev/null while TensorFlow's C++ side starts.

    TensorFlow 2.21 logs "oneDNN custom operations are on" from C++ before its log level
    applies, so TF_CPP_MIN_LOG_LEVEL cannot hide it; under cron it would mail every night.
    Python exceptions are unaffected: they are raised after the descriptor is restored.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class DigitClassifier:
    """The model, loaded once per run, with its calibration temperature."""

    def __init__(self, model_path: Path, batch_size: int = 2048):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self.path = Path(model_path)
        self.card = read_card(self.path)
        self.sha256 = self.card["file"]["sha256"]
        self.temperature = float(self.card["calibration"]["temperature"])
        self.batch_size = batch_size
        with _native_stderr_silenced():
            import keras
            import tensorflow as tf

        try:
            # safe_mode refuses Lambda layers and other arbitrary code in the file.
            self._model = keras.saving.load_model(self.path, compile=False, safe_mode=True)
        except Exception as exc:  # keras raises many types for damaged archives
            raise ModelError(f"model file {self.path} cannot be loaded ({type(exc).__name__}: {exc}); "
                             f"{REBUILD_HINT}") from None
        signature = tf.TensorSpec((None, CROP_SIZE, CROP_SIZE, 1), tf.float32)
        self._logits = tf.function(lambda x: self._model(x, training=False), input_signature=[signature])

    def logits(self, crops: np.ndarray) -> np.ndarray:
        """(K, 28, 28) crops -> (K, 11) raw logits, in fixed-size batches, two at a time."""
        crops = np.asarray(crops, dtype=np.float32)
        if crops.ndim != 3 or crops.shape[1:] != (CROP_SIZE, CROP_SIZE):
            raise ValueError(f"crops must have shape (K, {CROP_SIZE}, {CROP_SIZE}), got {crops.shape}")
        if len(crops) == 0:
            return np.zeros((0, len(CLASS_NAMES)), np.float32)

        def batch(start: int) -> np.ndarray:
            return self._logits(crops[start:start + self.batch_size, :, :, None]).numpy()

        with ThreadPoolExecutor(BATCHES_IN_FLIGHT) as pool:  # TensorFlow releases the GIL while it runs
            return np.concatenate(list(pool.map(batch, range(0, len(crops), self.batch_size))))

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """(K, 28, 28) float32 crops in [0, 1], ink high -> (K, 11) calibrated probabilities."""
        return softmax(self.logits(crops), self.temperature)


def load_classifier(model_path: Path, batch_size: int = 2048) -> DigitClassifier:
    """Load the model and check it against its card; ModelError says how to rebuild it."""
    return DigitClassifier(model_path, batch_size)
