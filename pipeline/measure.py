"""Digit-level measurements of a model: MNIST test, real writers (CVL), real cheque digits.

The real sets are for measuring only (see ../shared/data/README.md): nothing here trains.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import cv2
import numpy as np

from pipeline.augment import make_non_digits
from pipeline.classify import REJECT_CLASS
from pipeline.config import SegmentConfig
from pipeline.data import Mnist
from pipeline.errors import DataError
from pipeline.normalize import normalize_digit
from pipeline.preprocess import darkness, ink_threshold

log = logging.getLogger(__name__)
CVL_VALID = "cvl-digits-valid.npz"
ORAND_DIR = "orand-car-a-train"
# Non-digits measured for the reject rate; made from test digits with a fixed seed.
JUNK_SAMPLES = 3000
JUNK_SEED = 20261124
# Candidate review thresholds printed by `make eval`, to choose flags.min_digit_confidence.
SWEEP_THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995)


def cheque_ink(gray: np.ndarray, config: SegmentConfig = SegmentConfig()) -> np.ndarray:
    """(M, N) uint8 cheque image -> ink darkness, security print and paper at 0.

    The same background flattening and ink threshold that ``segment_page`` applies, so the
    digit figures measure the classifier on the ink the pipeline would hand it.
    """
    dark = darkness(gray, config.background_window)
    return np.where(dark > ink_threshold(dark, config.min_ink_darkness), dark, 0).astype(np.float32)


def _scores(probs: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy (a 'not a digit' answer counts as wrong), reject rate and per-class errors."""
    predicted = probs.argmax(axis=1)
    digits_only = probs[:, :REJECT_CLASS].argmax(axis=1)
    errors = {str(d): int(((labels == d) & (predicted != d)).sum()) for d in range(10)}
    return {
        "samples": int(len(labels)),
        "accuracy": round(float((predicted == labels).mean()), 4),
        "accuracy_digits_only": round(float((digits_only == labels).mean()), 4),
        "rejected": round(float((predicted == REJECT_CLASS).mean()), 4),
        "errors_per_class": errors,
    }


def measure_mnist_test(classifier, mnist: Mnist) -> dict:
    """MNIST test digits, each passed through ``normalize_digit`` as the pipeline does."""
    crops = np.stack([normalize_digit(image) for image in mnist.test_images])
    return _scores(classifier.predict(crops), mnist.test_labels.astype(np.int64))


def measure_junk(classifier, mnist: Mnist) -> dict:
    """Share of synthetic non-digits (made from test digits) that the model rejects."""
    junk = make_non_digits(JUNK_SAMPLES, mnist.test_images, np.random.default_rng(JUNK_SEED))
    predicted = classifier.predict(junk).argmax(axis=1)
    return {"samples": JUNK_SAMPLES, "rejected": round(float((predicted == REJECT_CLASS).mean()), 4)}


def _paper_removed(image: np.ndarray) -> np.ndarray:
    """Dark-on-light (M, N) uint8 -> ink darkness above the paper (the border's median).

    CVL's paper is not white (median 246, down to 232): left in, it would count as ink.
    """
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).astype(np.float32)
    return np.clip(float(np.median(border)) - image.astype(np.float32), 0.0, None)


def read_cvl_ink(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """CVL digits (dark ink on light) -> (N, 28, 28) float32 ink above the paper, as
    written (not normalized), and the labels."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            images, labels = npz["images"], npz["labels"]
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{path}: not a CVL digits file with 'images' and 'labels' ({exc})") from None
    return np.stack([_paper_removed(image) for image in images]), labels.astype(np.int64)


def load_cvl(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """CVL digits (dark ink on light) -> MNIST-polarity crops and labels."""
    ink, labels = read_cvl_ink(path)
    return np.stack([normalize_digit(image) for image in ink]), labels


def measure_cvl(classifier, path: Path) -> dict:
    crops, labels = load_cvl(path)
    return _scores(classifier.predict(crops), labels)


def _ink_in_box(ink: np.ndarray, components: np.ndarray, box) -> np.ndarray:
    """The ink of one truth box, without the pieces of neighbours that reach into it.

    Truth boxes of handwriting overlap; a component counts for the box when at least a
    tenth of its pixels lie inside it (measured: a half drops the shared strokes of
    touching digits from both boxes, 65% accuracy; a tenth 85.5%; no filter 84.8%).
    """
    x, y, w, h = box
    inside = components[y:y + h, x:x + w]
    labels, counts = np.unique(inside[inside > 0], return_counts=True)
    totals = np.bincount(components.ravel())[labels] if labels.size else labels
    keep = labels[counts >= 0.1 * totals]
    return np.where(np.isin(inside, keep), ink[y:y + h, x:x + w], 0.0)


def load_cheque_digits(orand_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Digits cut from ORAND-CAR amounts by the boxes in ``labels.csv``, background suppressed."""
    crops, labels = [], []
    with open(orand_dir / "labels.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            gray = cv2.imread(str(orand_dir / row["file"]), cv2.IMREAD_GRAYSCALE)
            boxes = json.loads(row["digit_boxes_xywh"])
            if gray is None or len(boxes) != len(row["text"]):
                log.warning("skipping %s: unreadable or boxes do not match its text", row["file"])
                continue
            ink = cheque_ink(gray)
            _, components = cv2.connectedComponents((ink > 0).astype(np.uint8), connectivity=8)
            for (x, y, w, h), label in zip(boxes, row["text"]):
                crops.append(normalize_digit(_ink_in_box(ink, components, (x, y, w, h))))
                labels.append(int(label))
    return np.stack(crops), np.asarray(labels, np.int64)


def measure_cheque_digits(classifier, orand_dir: Path) -> dict:
    crops, labels = load_cheque_digits(orand_dir)
    return _scores(classifier.predict(crops), labels)


def measure_model(classifier, mnist: Mnist, real_dir: Path | None) -> dict:
    """Every digit-level measurement available; real sets only when ``real_dir`` has them."""
    results = {"mnist_test": measure_mnist_test(classifier, mnist), "synthetic_junk": measure_junk(classifier, mnist)}
    if real_dir is not None and (Path(real_dir) / CVL_VALID).is_file():
        results["cvl_valid"] = measure_cvl(classifier, Path(real_dir) / CVL_VALID)
    if real_dir is not None and (Path(real_dir) / ORAND_DIR / "labels.csv").is_file():
        results["cheque_digits"] = measure_cheque_digits(classifier, Path(real_dir) / ORAND_DIR)
    return results


def _digit_table(results: dict) -> str:
    names = {"mnist_test": "MNIST test", "cvl_valid": "CVL valid, real writers",
             "cheque_digits": "ORAND-CAR cheque digits (cut by truth boxes)"}
    lines = ["| Digit set | Accuracy | Rejected as non-digit |", "|---|---|---|"]
    for key, name in names.items():
        if key in results:
            row = results[key]
            lines.append(f"| {name} ({row['samples']:,}) | {row['accuracy']:.2%} | {row['rejected']:.2%} |")
    junk = results["synthetic_junk"]
    lines.append(f"| Synthetic non-digits ({junk['samples']:,}) | rejected {junk['rejected']:.2%} | |")
    return "\n".join(lines) + "\n"


def run_evaluation(config, mnist_source, real_dir: Path | None, pages_dir: Path | None) -> str:
    """Every measurement `make eval` prints, as markdown: digits, amounts, pages with truth."""
    import tempfile

    from pipeline.batch import RunOptions, run_batch
    from pipeline.classify import load_classifier
    from pipeline.data import load_mnist
    from pipeline.evaluate import evaluate_amounts, evaluate_report, format_markdown, format_sweep, threshold_sweep

    classifier = load_classifier(config.classify.model, config.classify.batch_size)
    real_dir = Path(real_dir) if real_dir is not None and Path(real_dir).is_dir() else None
    sections = ["## Digits\n", _digit_table(measure_model(classifier, load_mnist(mnist_source), real_dir))]
    if real_dir is not None and (real_dir / ORAND_DIR / "labels.csv").is_file():
        amounts = evaluate_amounts(real_dir / ORAND_DIR, classifier, config)
        sections += [f"\n## Cheque amounts ({ORAND_DIR}, whole amounts)\n", format_markdown(amounts)]
    if pages_dir is not None and any(Path(pages_dir).glob("*.json")):
        with tempfile.TemporaryDirectory() as scratch:
            run_batch(Path(pages_dir), Path(scratch), config, RunOptions(force=True),
                      load_model=lambda path: classifier)
            report = json.loads((Path(scratch) / "report.json").read_text(encoding="utf-8"))
        sections += [f"\n## Pages ({pages_dir})\n", format_markdown(evaluate_report(report, Path(pages_dir))),
                     "\n### Review flags by threshold (same pages)\n",
                     format_sweep(threshold_sweep(report, Path(pages_dir), SWEEP_THRESHOLDS))]
    return "".join(sections)
