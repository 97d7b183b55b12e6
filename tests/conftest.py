"""Shared fixtures: a fake classifier (fixed probabilities, or one that raises), a fake
segmenter and reader that stand in for ``segment``/``group`` while those are unfinished,
small synthetic pages, and a config that points at a throwaway model file.

No TensorFlow here: the fakes have the real interfaces' shapes and types.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.config import Config, ClassifyConfig, RunConfig
from pipeline.group import DigitReading, FieldReading
from pipeline.segment import Blob, Candidate, FieldLayout, PageLayout

# The real MNIST folder, as CI and `make test` point at it.
REAL_MNIST = Path(os.environ.get("DIGITS_MNIST", Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "mnist"))
# Pixels darker than this are ink for the fake segmenter.
FAKE_INK_THRESHOLD = 128
# The fake segmenter cuts every field into this many digits.
FAKE_DIGITS_PER_FIELD = 4


class FakeClassifier:
    """``predict`` gives crop i the label ``labels[i % len(labels)]`` with ``confidence``.

    Records the size of every call in ``calls``; ``fail_on_call`` (1-based) raises
    RuntimeError on that call, to simulate a crash mid-run.
    """

    def __init__(self, labels=(0, 4, 5, 1), confidence: float = 0.97, fail_on_call: int | None = None):
        self.labels = tuple(labels)
        self.confidence = confidence
        self.fail_on_call = fail_on_call
        self.calls: list[int] = []
        self.sha256 = "0" * 64
        self.card = {"fake": True}

    def predict(self, crops: np.ndarray) -> np.ndarray:
        assert crops.dtype == np.float32 and crops.ndim == 3 and crops.shape[1:] == (28, 28)
        self.calls.append(int(crops.shape[0]))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise RuntimeError("simulated crash in predict")
        count = crops.shape[0]
        rest = (1.0 - self.confidence) / 10.0
        probs = np.full((count, 11), rest, np.float32)
        for index in range(count):
            probs[index, self.labels[index % len(self.labels)]] = self.confidence
        return probs


def fake_segment_page(gray: np.ndarray, config, dpi=None, bilevel=False) -> PageLayout:
    """One field: the bounding box of all dark pixels, cut into FAKE_DIGITS_PER_FIELD equal digits."""
    rows, cols = gray.shape
    ink = gray < FAKE_INK_THRESHOLD
    if not ink.any():
        return PageLayout(cols, rows, 0.0, ())
    r = np.flatnonzero(ink.any(axis=1))
    c = np.flatnonzero(ink.any(axis=0))
    x, y, w, h = int(c[0]), int(r[0]), int(c[-1] - c[0] + 1), int(r[-1] - r[0] + 1)
    step = max(1, w // FAKE_DIGITS_PER_FIELD)
    blobs = []
    for index in range(FAKE_DIGITS_PER_FIELD):
        box = (x + index * step, y, step, h)
        crop = np.zeros((28, 28), np.float32)
        crop[4:24, 8:20] = 1.0
        blobs.append(Blob(box, ((Candidate(box, crop),),)))
    return PageLayout(cols, rows, 0.0, (FieldLayout((x, y, w, h), tuple(blobs), ()),))


def fake_layout_crops(layout: PageLayout) -> np.ndarray:
    crops = [c.crop for f in layout.fields for b in f.blobs for c in b.readings[0]]
    return np.stack(crops).astype(np.float32) if crops else np.zeros((0, 28, 28), np.float32)


def fake_read_fields(layout: PageLayout, probs: np.ndarray, config) -> tuple[FieldReading, ...]:
    """Uncut readings only: label = argmax, field confidence = weakest digit."""
    fields, row = [], 0
    for number, field_layout in enumerate(layout.fields, start=1):
        digits = []
        for blob in field_layout.blobs:
            p = probs[row]
            row += 1
            label = int(np.argmax(p))
            digits.append(DigitReading("?" if label == 10 else str(label), float(p[label]), blob.bbox))
        confidence = min((d.confidence for d in digits), default=0.0)
        flagged = confidence < config.min_digit_confidence
        fields.append(FieldReading(
            id=number, text="".join(d.label for d in digits), bbox=field_layout.bbox,
            confidence=confidence, flagged=flagged, reasons=("low_confidence",) if flagged else (),
            digits=tuple(digits),
        ))
    return tuple(fields)


@pytest.fixture
def fake_stages(monkeypatch):
    """Replace segment and group inside ``batch`` with the fakes (workers=1 runs in-process)."""
    import pipeline.batch as batch

    monkeypatch.setattr(batch, "segment_page", fake_segment_page)
    monkeypatch.setattr(batch, "layout_crops", fake_layout_crops)
    monkeypatch.setattr(batch, "read_fields", fake_read_fields)


def form_page(seed: int, height: int = 240, width: int = 320) -> np.ndarray:
    """A white (M, N) uint8 page with a rule line and a handwritten-looking number on it."""
    rng = np.random.default_rng(seed)
    page = np.full((height, width), 255, np.uint8)
    text = "".join(str(d) for d in rng.integers(0, 10, size=4))
    org = (int(rng.integers(20, 60)), int(rng.integers(100, 160)))
    cv2.putText(page, text, org, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, 1.6, 0, 3, cv2.LINE_AA)
    return page


def write_png(path: Path, gray: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".png", gray)
    assert ok
    path.write_bytes(data.tobytes())
    return path


@pytest.fixture
def make_config(tmp_path):
    """``make_config(**run)`` -> Config with a throwaway model file and in-process workers."""

    def build(workers: int = 1, chunk_documents: int = 2, **sections) -> Config:
        model = tmp_path / "models" / "fake.keras"
        model.parent.mkdir(parents=True, exist_ok=True)
        if not model.exists():
            model.write_bytes(b"fake model bytes")
        config = Config(classify=ClassifyConfig(model=model),
                        run=RunConfig(workers=workers, chunk_documents=chunk_documents))
        return dataclasses.replace(config, **sections)

    return build


@pytest.fixture
def tiny_mnist(tmp_path):
    """An mnist.npz of drawn digits: 20 per split, labels known."""
    rng = np.random.default_rng(0)

    def digits(count):
        labels = rng.integers(0, 10, count).astype(np.uint8)
        images = np.zeros((count, 28, 28), np.uint8)
        for image, label in zip(images, labels):
            cv2.putText(image, str(label), (5, 23), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 255, 2)
        return images, labels

    x_train, y_train = digits(20)
    x_test, y_test = digits(20)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


@pytest.fixture
def real_mnist() -> Path:
    """The real MNIST folder ($DIGITS_MNIST, else ../shared/data/mnist); skips the test without it."""
    if not REAL_MNIST.is_dir():
        pytest.skip(f"MNIST not found at {REAL_MNIST} (set DIGITS_MNIST)")
    return REAL_MNIST
