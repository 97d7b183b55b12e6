"""Classify 28×28 digit crops in batches with the shipped model.

The model is trained and saved with Keras (``models/digits.keras``); the batch job runs
its ONNX export (``models/digits.onnx``) under ONNX Runtime, which classifies about twice
as many crops a second as TensorFlow on the 2-core CPU (``bench/bench_classify.py``) and
keeps TensorFlow's start-up and memory out of ``digits process``. The card vouches for
both files: each is checked against its sha256 before use.
"""

from __future__ import annotations

import hashlib
import json
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
# ONNX Runtime's own log level for errors only: its warnings would mail under cron.
ORT_ERRORS_ONLY = 3


def card_path(model_path: Path) -> Path:
    """``models/digits.keras`` -> ``models/digits.card.json``."""
    return Path(model_path).with_suffix(".card.json")


def runtime_path(model_path: Path) -> Path:
    """``models/digits.keras`` -> ``models/digits.onnx``, the file the batch job runs."""
    return Path(model_path).with_suffix(".onnx")


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
        runtime_sha = card["runtime"]["sha256"]
        temperature = float(card["calibration"]["temperature"])
        contract = card["input"]
        classes = tuple(card["classes"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"model card {path} lacks {exc}; {REBUILD_HINT}") from None
    check_sha256(model_path, expected_sha)
    check_sha256(runtime_path(model_path), runtime_sha)
    if contract != INPUT_CONTRACT or classes != CLASS_NAMES:
        raise ModelError(f"model {model_path} expects input {contract} and classes {classes}; this "
                         f"version feeds {INPUT_CONTRACT} with classes {CLASS_NAMES}; {REBUILD_HINT}")
    if not temperature > 0:
        raise ModelError(f"model card {path}: calibration temperature {temperature} must be positive")
    return card


def check_sha256(path: Path, expected: str) -> None:
    """ModelError unless ``path`` exists and has the sha256 its card records."""
    if not path.is_file():
        raise ModelError(f"model file {path} not found; {REBUILD_HINT}")
    actual = file_sha256(path)
    if actual != expected:
        raise ModelError(f"model file {path} does not match its card (sha256 {actual[:12]}… "
                         f"expected {expected[:12]}…): damaged or replaced; {REBUILD_HINT}")


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``, computed stably."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


class DigitClassifier:
    """The model's ONNX export, loaded once per run, with its calibration temperature."""

    def __init__(self, model_path: Path, batch_size: int = 2048):
        import onnxruntime

        self.path = Path(model_path)
        self.card = read_card(self.path)
        self.sha256 = self.card["file"]["sha256"]
        self.temperature = float(self.card["calibration"]["temperature"])
        self.batch_size = batch_size
        options = onnxruntime.SessionOptions()
        options.log_severity_level = ORT_ERRORS_ONLY
        runtime = runtime_path(self.path)
        try:
            self._session = onnxruntime.InferenceSession(str(runtime), options,
                                                         providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for damaged graphs
            raise ModelError(f"model file {runtime} cannot be loaded ({type(exc).__name__}: {exc}); "
                             f"{REBUILD_HINT}") from None
        (crop,) = self._session.get_inputs()
        (logits,) = self._session.get_outputs()
        if crop.shape[1:] != [CROP_SIZE, CROP_SIZE, 1] or logits.shape[1:] != [len(CLASS_NAMES)]:
            raise ModelError(f"model file {runtime} maps {crop.shape} to {logits.shape}; this version "
                             f"feeds (K, {CROP_SIZE}, {CROP_SIZE}, 1) and reads (K, {len(CLASS_NAMES)}); "
                             f"{REBUILD_HINT}")
        self._input_name = crop.name

    def logits(self, crops: np.ndarray) -> np.ndarray:
        """(K, 28, 28) crops -> (K, 11) raw logits, in fixed-size batches."""
        crops = np.asarray(crops, dtype=np.float32)
        if crops.ndim != 3 or crops.shape[1:] != (CROP_SIZE, CROP_SIZE):
            raise ValueError(f"crops must have shape (K, {CROP_SIZE}, {CROP_SIZE}), got {crops.shape}")
        if len(crops) == 0:
            return np.zeros((0, len(CLASS_NAMES)), np.float32)
        return np.concatenate([
            self._session.run(None, {self._input_name: crops[start:start + self.batch_size, :, :, None]})[0]
            for start in range(0, len(crops), self.batch_size)])

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """(K, 28, 28) float32 crops in [0, 1], ink high -> (K, 11) calibrated probabilities."""
        return softmax(self.logits(crops), self.temperature)


def load_classifier(model_path: Path, batch_size: int = 2048) -> DigitClassifier:
    """Load the model and check it against its card; ModelError says how to rebuild it."""
    return DigitClassifier(model_path, batch_size)
