"""Train the digit model on MNIST's training split and write it with its model card.

Recipe (what a measured study of MNIST-only training found, adapted to a 2-core CPU):
a small CNN with global average pooling, AdamW with a warm-up-then-cosine ("one-cycle")
schedule, scan-like augmentation re-normalized MNIST-style, an 11th "not a digit" class
trained on synthetic junk, and temperature scaling on held-out data. Batch norm is left
out: under TensorFlow on this CPU it cuts training speed threefold (measured: 800 vs
2,700 samples/s), and the schedule trains the plain network as well.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np

from pipeline import __version__
from pipeline.augment import augment_digit, make_non_digits
from pipeline.classify import (CLASS_NAMES, INPUT_CONTRACT, REBUILD_HINT, REJECT_CLASS, card_path, check_sha256,
                               file_sha256, runtime_path, softmax)
from pipeline.data import Mnist, load_mnist
from pipeline.errors import ModelError
from pipeline.normalize import CROP_SIZE, normalize_digit

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    seed: int = 1234
    epochs: int = 24
    batch_size: int = 256
    # One-cycle: warm up from peak/25 to the peak over the first share of steps, then cosine to 0.
    peak_learning_rate: float = 3e-3
    warmup_share: float = 0.25
    weight_decay: float = 5e-4
    dropout: float = 0.2
    # Held out of the training split for early measurement and calibration.
    validation_size: int = 6000
    # Each epoch, this share of the digits is replaced by a fresh augmented variant.
    augment_share: float = 0.5
    # Augmented variants made per training digit before training (epochs draw from them).
    augment_copies: int = 2
    # Non-digits added to the training set, as a share of the digits.
    reject_share: float = 0.12

    def replace(self, **changes) -> "TrainSettings":
        return dataclasses.replace(self, **changes)


def build_model(dropout: float):
    """~108k-parameter CNN: 28×28×1 -> 11 logits (10 digits + not-a-digit)."""
    import keras
    from keras import layers

    def conv(x, filters):
        return layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_initializer="he_normal")(x)

    inputs = keras.Input((CROP_SIZE, CROP_SIZE, 1), name="crop")
    x = conv(inputs, 16)
    x = layers.MaxPooling2D()(x)
    x = conv(x, 32)
    x = conv(x, 32)
    x = layers.MaxPooling2D()(x)
    x = conv(x, 64)
    x = conv(x, 128)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(len(CLASS_NAMES), name="logits")(x)
    return keras.Model(inputs, outputs, name="digits")


def _normalize_all(images: np.ndarray) -> np.ndarray:
    return np.stack([normalize_digit(image) for image in images]).astype(np.float32)


def _augment_pool(images: np.ndarray, labels: np.ndarray, copies: int, rng: np.random.Generator) -> np.ndarray:
    return np.stack([np.stack([augment_digit(image, rng, int(label)) for image, label in zip(images, labels)])
                     for _ in range(copies)])


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean -log p(label) under ``softmax(logits / temperature)``."""
    probs = softmax(logits, temperature)
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature minimizing the negative log-likelihood of ``labels`` (grid, then refine)."""
    grid = np.exp(np.linspace(np.log(0.25), np.log(8.0), 61))
    best = float(grid[np.argmin([negative_log_likelihood(logits, labels, t) for t in grid])])
    fine = np.linspace(best * 0.9, best * 1.1, 41)
    return float(fine[np.argmin([negative_log_likelihood(logits, labels, t) for t in fine])])


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Gap between confidence and accuracy, averaged over confidence bins."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    error = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            error += inside.mean() * abs(confidence[inside].mean() - correct[inside].mean())
    return float(error)


def _quiet_keras():
    """Keras, imported with TensorFlow's C++ info logs off (they would mail under cron)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


def train_model(mnist: Mnist, settings: TrainSettings, limit: int | None = None, progress: bool = False):
    """Train on MNIST's training split; returns (model, temperature, history, validation metrics)."""
    keras = _quiet_keras()

    keras.utils.set_random_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    images, labels = mnist.train_images, mnist.train_labels.astype(np.int64)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    order = rng.permutation(len(images))
    n_val = min(settings.validation_size, len(images) // 5)
    val_idx, train_idx = order[:n_val], order[n_val:]

    started = time.time()
    x_train = _normalize_all(images[train_idx])
    y_train = labels[train_idx]
    pool = _augment_pool(images[train_idx], y_train, settings.augment_copies, rng)
    n_reject = int(round(settings.reject_share * len(train_idx)))
    reject_pool = make_non_digits(n_reject * 2, images[train_idx], rng)
    # Validation: half plain, half augmented digits, plus held-out junk made from held-out digits.
    x_val = np.concatenate([
        _normalize_all(images[val_idx[: n_val // 2]]),
        np.stack([augment_digit(image, rng, int(label)) for image, label
                  in zip(images[val_idx[n_val // 2:]], labels[val_idx[n_val // 2:]])]),
        make_non_digits(int(round(settings.reject_share * n_val)), images[val_idx], rng),
    ])
    y_val = np.concatenate([labels[val_idx], np.full(int(round(settings.reject_share * n_val)), REJECT_CLASS)])
    log.info("prepared %d training digits (+%d augmented variants, %d non-digits) in %.0f s",
             len(x_train), pool.shape[0] * pool.shape[1], len(reject_pool), time.time() - started)

    model = build_model(settings.dropout)
    steps_per_epoch = int(np.ceil((len(x_train) + n_reject) / settings.batch_size))
    total_steps = steps_per_epoch * settings.epochs
    warmup = int(settings.warmup_share * total_steps)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=settings.peak_learning_rate / 25, decay_steps=max(total_steps - warmup, 1),
        warmup_target=settings.peak_learning_rate, warmup_steps=warmup, alpha=0.0)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=settings.weight_decay),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    history = []
    for epoch in range(settings.epochs):
        # A fresh mix each epoch: half the digits swapped for one of their augmented variants.
        swap = rng.random(len(x_train)) < settings.augment_share
        copy = rng.integers(settings.augment_copies, size=len(x_train))
        x_epoch = np.where(swap[:, None, None], pool[copy, np.arange(len(x_train))], x_train)
        junk = reject_pool[rng.choice(len(reject_pool), n_reject, replace=False)]
        x_epoch = np.concatenate([x_epoch, junk])[..., None]
        y_epoch = np.concatenate([y_train, np.full(n_reject, REJECT_CLASS)])
        result = model.fit(x_epoch, y_epoch, batch_size=settings.batch_size, epochs=epoch + 1,
                           initial_epoch=epoch, shuffle=True, verbose=2 if progress else 0,
                           validation_data=(x_val[..., None], y_val))
        row = {key: round(float(values[-1]), 5) for key, values in result.history.items()}
        history.append({"epoch": epoch + 1, **row})
        log.info("epoch %d/%d %s (%.0f s)", epoch + 1, settings.epochs, row, time.time() - started)

    val_logits = model.predict(x_val[..., None], batch_size=2048, verbose=0)
    temperature = fit_temperature(val_logits, y_val)
    validation = {
        "samples": int(len(y_val)),
        "accuracy": float((val_logits.argmax(1) == y_val).mean()),
        "nll_before": negative_log_likelihood(val_logits, y_val),
        "nll_after": negative_log_likelihood(val_logits, y_val, temperature),
        "ece_before": expected_calibration_error(softmax(val_logits), y_val),
        "ece_after": expected_calibration_error(softmax(val_logits, temperature), y_val),
    }
    validation["train_seconds"] = round(time.time() - started, 1)
    return model, temperature, history, validation


def export_runtime(model, model_path: Path) -> dict:
    """Write the model's ONNX export beside it (the file the batch job runs); returns its card entry."""
    import keras
    import tf2onnx

    model(np.zeros((1, CROP_SIZE, CROP_SIZE, 1), np.float32))  # Keras exports only a model that has run
    runtime = runtime_path(model_path)
    tmp = runtime.with_name(runtime.stem + ".tmp.onnx")
    with warnings.catch_warnings():
        # Keras' bundled tf2onnx shim probes ``np.object``, which numpy 2 warns about.
        warnings.filterwarnings("ignore", category=FutureWarning, module="keras")
        model.export(tmp, format="onnx", verbose=False)
    os.replace(tmp, runtime)
    return {"name": runtime.name, "sha256": file_sha256(runtime), "bytes": runtime.stat().st_size,
            "format": "ONNX, run by ONNX Runtime",
            "exported_with": f"keras {keras.__version__} Model.export (tf2onnx {tf2onnx.__version__})"}


def export_saved_model(model_path: Path) -> dict:
    """Export a trained model's runtime file and record it in its card; returns the entry.

    For a model trained before the batch job ran ONNX: its weights are kept as they are.
    The Keras file is loaded in safe mode, which refuses code (Lambda layers) inside it.
    """
    keras = _quiet_keras()
    model_path = Path(model_path)
    path = card_path(model_path)
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
        expected_sha = card["file"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"model card {path} cannot be used ({exc}); {REBUILD_HINT}") from None
    check_sha256(model_path, expected_sha)
    try:
        model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
    except Exception as exc:  # keras raises many types for damaged archives
        raise ModelError(f"model file {model_path} cannot be loaded ({type(exc).__name__}: {exc}); "
                         f"{REBUILD_HINT}") from None
    card["runtime"] = export_runtime(model, model_path)
    path.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return card["runtime"]


def write_card(model_path: Path, mnist: Mnist, settings: TrainSettings, temperature: float,
               history: list, validation: dict, model, limit: int | None, runtime: dict) -> dict:
    """Write ``<model>.card.json`` beside the model; measurements are added by ``digits eval``."""
    import keras
    import tensorflow as tf

    card = {
        "name": "digit-reader digits",
        "version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "file": {"name": model_path.name, "sha256": file_sha256(model_path),
                 "bytes": model_path.stat().st_size},
        "runtime": runtime,
        "input": INPUT_CONTRACT,
        "classes": list(CLASS_NAMES),
        "reject_class": REJECT_CLASS,
        "parameters": int(model.count_params()),
        "training": {
            "data": "MNIST training split only (validation carved from it); never the test split",
            "source": mnist.source,
            "checksums_sha256": mnist.checksums,
            "digits_used": int(len(mnist.train_labels) if limit is None else min(limit, len(mnist.train_labels))),
            "settings": dataclasses.asdict(settings),
            "history": history,
            "command": "make train",
        },
        "calibration": {"method": "temperature scaling on the held-out validation split (digits, "
                                  "augmented digits and synthetic non-digits)",
                        "temperature": temperature, **{k: v for k, v in validation.items()
                                                       if k.startswith(("nll", "ece", "samples"))}},
        "validation_accuracy": validation["accuracy"],
        "train_seconds": validation["train_seconds"],
        "frameworks": {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
                       "python": platform.python_version()},
        "measurements": {},
        "intended_use": ("Single handwritten digits cut from scanned forms and cheques, normalized "
                         "MNIST-style by pipeline.normalize.normalize_digit; class 'not_a_digit' "
                         "answers for junk the page segmenter hands over."),
        "limitations": ("Trained on MNIST's American writers only: European flagged 1s, crossed 7s "
                        "and curled 9s are weaker; printed digits are read as digits; confidence is "
                        "calibrated on MNIST-like data and is optimistic on unusual hands."),
    }
    card_path(model_path).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return card


def train_and_save(mnist_source, model_path: Path, settings: TrainSettings, limit: int | None = None,
                   progress: bool = False, real_dir: Path | None = None) -> dict:
    """Load MNIST, train, save the model and its card, measure it; returns the card.

    The measurements load the saved file through ``classify``, so they also prove that
    the shipped artifact loads and matches its card.
    """
    from pipeline.classify import load_classifier
    from pipeline.measure import measure_model

    mnist = load_mnist(mnist_source)
    model, temperature, history, validation = train_model(mnist, settings, limit=limit, progress=progress)
    model_path = Path(model_path)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = model_path.with_name(model_path.stem + ".tmp.keras")
    model.save(tmp)
    os.replace(tmp, model_path)
    runtime = export_runtime(model, model_path)
    card = write_card(model_path, mnist, settings, temperature, history, validation, model, limit, runtime)
    card["measurements"] = measure_model(load_classifier(model_path), mnist, real_dir)
    card["measurements"]["command"] = "make eval"
    card_path(model_path).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    log.info("wrote %s (validation accuracy %.4f, temperature %.3f)", model_path,
             validation["accuracy"], temperature)
    return card
