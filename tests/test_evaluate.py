"""Metrics against hand-written truth, and the amount evaluation with a fake classifier."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from pipeline.config import Config
from pipeline.evaluate import (
    evaluate_amounts,
    evaluate_report,
    format_markdown,
    format_sweep,
    match_fields,
    reflag,
    threshold_sweep,
)


def field(text, bbox, flagged=False):
    return {"id": 1, "text": text, "bbox": bbox, "confidence": 0.9, "flagged": flagged, "reasons": [], "digits": []}


@pytest.fixture
def truth_dir(tmp_path):
    pages = {
        "a": [{"text": "0451", "bbox": [10, 10, 100, 30]}, {"text": "77", "bbox": [10, 100, 50, 30]}],
        "b": [{"text": "123", "bbox": [200, 50, 80, 30]}],
    }
    for stem, fields in pages.items():
        (tmp_path / f"{stem}.json").write_text(json.dumps(
            {"image": f"{stem}.png", "width": 400, "height": 300, "fields": fields}))
    return tmp_path


def report(*documents):
    return {"run": {}, "documents": list(documents)}


def document(path, fields, status="ok"):
    pages = [{"page": 1, "width": 400, "height": 300, "fields": fields}] if status == "ok" else []
    return {"path": path, "status": status, "error": None, "pages": pages}


def test_perfect_report_scores_perfectly(truth_dir):
    metrics = evaluate_report(report(
        document("a.png", [field("0451", [12, 11, 98, 29]), field("77", [10, 100, 50, 30])]),
        document("sub/b.png", [field("123", [200, 50, 80, 30])]),
    ), truth_dir)
    assert metrics["exact_match"] == 1.0
    assert metrics["character_error_rate"] == 0.0
    assert metrics["digit_recall"] == 1.0
    assert metrics["missed_fields"] == 0
    assert metrics["spurious_per_page"] == 0.0
    assert metrics["unflagged_error_rate"] == 0.0
    assert metrics["wrong_flagged_share"] is None


def test_errors_misses_spurious_and_flags_are_counted(truth_dir):
    metrics = evaluate_report(report(
        document("a.png", [field("0457", [10, 10, 100, 30], flagged=True), field("9", [300, 250, 20, 30])]),
        document("b.png", [], status="error"),
    ), truth_dir)
    assert metrics["truth_fields"] == 3
    assert metrics["exact_match"] == 0.0
    assert metrics["missed_fields"] == 2  # "77" and the failed page's "123"
    assert metrics["spurious_per_page"] == 0.5
    assert metrics["character_error_rate"] == pytest.approx((1 + 2 + 3) / 9)
    assert metrics["digit_recall"] == pytest.approx(3 / 9)
    assert metrics["flagged_share"] == 0.5
    assert metrics["wrong_flagged_share"] == 0.5
    assert metrics["unflagged_error_rate"] == 1.0


def test_fields_match_one_to_one_by_overlap():
    truth = [{"bbox": [0, 0, 10, 10]}, {"bbox": [100, 0, 10, 10]}]
    predicted = [{"bbox": [101, 0, 10, 10]}, {"bbox": [1, 1, 10, 10]}, {"bbox": [2, 0, 10, 10]}]
    assert sorted(match_fields(predicted, truth)) in ([(0, 1), (1, 0)], [(0, 1), (2, 0)])


def test_markdown_table_lists_every_metric(truth_dir):
    metrics = evaluate_report(report(document("a.png", [field("0451", [10, 10, 100, 30])])), truth_dir)
    table = format_markdown(metrics)
    lines = table.strip().splitlines()
    assert lines[0] == "| Metric | Value |"
    assert len(lines) == 2 + len(metrics)
    assert "| Field exact match | 33.3% |" in table


class FakeClassifier:
    """Reads every crop as the digit 7 with high confidence."""

    def __init__(self):
        self.calls = 0

    def predict(self, crops):
        self.calls += 1
        out = np.full((len(crops), 11), 0.001, np.float32)
        out[:, 7] = 0.99
        return out


def test_amounts_are_read_joined_and_scored(tmp_path):
    rng = np.random.default_rng(5)
    rows = []
    for k, text in enumerate(["77", "777", "12"]):
        image = np.full((60, 200), 200, np.uint8)
        x = 10
        for char in text:
            cv2.putText(image, char, (x, 48 + int(rng.integers(-4, 5))), cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
                        1.3 * rng.uniform(0.85, 1.15), 30, 3, cv2.LINE_AA)
            x += 40
        name = f"images/a_{k}.png"
        (tmp_path / "images").mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / name), image)
        rows.append({"file": name, "text": text, "digit_boxes_xywh": "[]"})
    with open(tmp_path / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "text", "digit_boxes_xywh"])
        writer.writeheader()
        writer.writerows(rows)
    fake = FakeClassifier()
    metrics = evaluate_amounts(tmp_path, fake, Config())
    assert fake.calls == 1  # one batched call for all images
    assert metrics["amounts"] == 3
    assert metrics["exact_match"] == pytest.approx(2 / 3)
    assert metrics["unflagged_share"] == 1.0
    assert metrics["unflagged_error_rate"] == pytest.approx(1 / 3)


def test_threshold_sweep_re_derives_low_confidence_flags(truth_dir):
    def with_digits(text, bbox, confidences, reasons=()):
        return {**field(text, bbox), "reasons": list(reasons), "flagged": bool(reasons),
                "digits": [{"label": c, "confidence": p, "bbox": bbox} for c, p in zip(text, confidences)]}

    wrong = with_digits("0457", [10, 10, 100, 30], [0.99, 0.99, 0.99, 0.6], ["low_confidence"])
    right = with_digits("77", [10, 100, 50, 30], [0.97, 0.99])
    split = with_digits("123", [200, 50, 80, 30], [0.999, 0.999, 0.999], ["forced_split"])
    original = report(document("a.png", [wrong, right]), document("b.png", [split]))
    loose, strict = threshold_sweep(original, truth_dir, (0.5, 0.98))
    assert loose["flagged_share"] == pytest.approx(1 / 3) and loose["wrong_flagged_share"] == 0.0
    assert strict["flagged_share"] == 1.0 and strict["wrong_flagged_share"] == 1.0
    assert reflag(original, 0.5)["documents"][1]["pages"][0]["fields"][0]["reasons"] == ["forced_split"]
    assert original["documents"][0]["pages"][0]["fields"][0]["flagged"] is True
    assert "| 0.98 | 100.0% | 100.0% | n/a |" in format_sweep([strict])
