from pathlib import Path

import numpy as np
import pytest

from pipeline.classify import REJECT_CLASS, card_path, load_classifier, read_card
from pipeline.data import Mnist
from pipeline.normalize import normalize_digit
from pipeline.train import TrainSettings, fit_temperature, train_and_save, train_model

pytest.importorskip("keras")
REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "models" / "digits.keras"


def synthetic_mnist(count=400, seed=0):
    """Tiny stand-in for MNIST: a seeded bar pattern per label, easy to learn."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count).astype(np.uint8)
    images = np.zeros((count, 28, 28), np.uint8)
    for image, label in zip(images, labels):
        image[4:24, 4 + 2 * label: 7 + 2 * label] = 255
        image[4 + 2 * (9 - label): 7 + 2 * (9 - label), 4:24] = 200
    return Mnist(images, labels, images[:50], labels[:50], source="synthetic", checksums={})


def test_fit_temperature_recovers_the_scale_of_overconfident_logits():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 11, 4000)
    clean = rng.normal(0, 1, (4000, 11))
    clean[np.arange(4000), labels] += 2.0
    assert 2.0 < fit_temperature(clean * 3.0, labels) / max(fit_temperature(clean, labels), 1e-6) < 4.0


def test_training_smoke_run_lowers_the_loss_and_the_model_round_trips(tmp_path, monkeypatch):
    monkeypatch.setattr("pipeline.train.load_mnist", lambda source: synthetic_mnist())
    monkeypatch.setattr("pipeline.measure.measure_model", lambda classifier, mnist, real: {})
    settings = TrainSettings(epochs=4, batch_size=32, validation_size=60, augment_copies=1)
    card = train_and_save(None, tmp_path / "m.keras", settings)
    losses = [row["loss"] for row in card["training"]["history"]]
    assert losses[-1] < 0.7 * losses[0]
    assert card["calibration"]["temperature"] > 0
    classifier = load_classifier(tmp_path / "m.keras")
    assert read_card(tmp_path / "m.keras")["file"]["sha256"] == classifier.sha256
    probs = classifier.predict(np.stack([normalize_digit(im) for im in synthetic_mnist(seed=1).train_images[:40]]))
    assert probs.shape == (40, 11)


def test_training_is_seeded(monkeypatch):
    mnist = synthetic_mnist(120)
    settings = TrainSettings(epochs=1, batch_size=32, validation_size=20, augment_copies=1)
    first = train_model(mnist, settings)[2]
    second = train_model(mnist, settings)[2]
    assert first[0]["loss"] == pytest.approx(second[0]["loss"], rel=1e-4)


@pytest.fixture(scope="module")
def shipped():
    if not SHIPPED.is_file():
        pytest.skip(f"no shipped model at {SHIPPED}; run `make train`")
    return load_classifier(SHIPPED)


def test_shipped_card_describes_the_shipped_file(shipped):
    card = read_card(SHIPPED)
    assert card_path(SHIPPED).is_file()
    assert card["training"]["data"].startswith("MNIST training split only")
    assert card["measurements"]["mnist_test"]["accuracy"] >= 0.99


def test_shipped_model_reads_mnist_test_digits(shipped, real_mnist):
    from pipeline.data import load_mnist
    mnist = load_mnist(real_mnist)
    crops = np.stack([normalize_digit(im) for im in mnist.test_images])
    accuracy = (shipped.predict(crops).argmax(axis=1) == mnist.test_labels).mean()
    assert accuracy >= 0.99


def test_shipped_model_rejects_obvious_non_digits(shipped):
    import cv2
    blank = np.zeros((28, 28), np.float32)
    line = np.zeros((40, 200), np.uint8)
    cv2.line(line, (5, 20), (195, 22), 255, 5)
    letters = []
    for glyph in "AKMWX":
        canvas = np.zeros((80, 80), np.uint8)
        cv2.putText(canvas, glyph, (12, 64), cv2.FONT_HERSHEY_DUPLEX, 2.0, 255, 4)
        letters.append(normalize_digit(canvas))
    crops = np.stack([blank, normalize_digit(line), *letters])
    rejected = shipped.predict(crops).argmax(axis=1) == REJECT_CLASS
    assert rejected[0] and rejected[1]
    assert rejected[2:].mean() > 0.5
