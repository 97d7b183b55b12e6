import json

import cv2
import numpy as np
import pytest

from pipeline.errors import DataError
from pipeline.measure import _scores, load_cheque_digits, load_cvl, measure_cvl


class CentreInkClassifier:
    """Fake model: '1' when the crop's centre column holds most ink, else '0'."""

    def predict(self, crops):
        probs = np.full((len(crops), 11), 0.01, np.float32)
        centre = crops[:, :, 12:16].sum(axis=(1, 2)) / np.maximum(crops.sum(axis=(1, 2)), 1e-6)
        probs[np.arange(len(crops)), np.where(centre > 0.5, 1, 0)] = 0.9
        return probs


def test_scores_count_rejects_as_wrong_and_errors_per_class():
    probs = np.eye(11, dtype=np.float32)[[0, 1, 10, 3]]
    scores = _scores(probs, np.array([0, 1, 2, 5]))
    assert scores["accuracy"] == 0.5 and scores["rejected"] == 0.25
    assert scores["errors_per_class"]["2"] == 1 and scores["errors_per_class"]["5"] == 1
    assert scores["errors_per_class"]["0"] == 0


def test_cvl_paper_gray_is_not_ink(tmp_path):
    images = np.full((2, 28, 28), 235, np.uint8)
    cv2.line(images[0], (14, 4), (14, 23), 30, 3)
    cv2.circle(images[1], (14, 14), 8, 30, 3)
    np.savez(tmp_path / "cvl.npz", images=images, labels=np.array([1, 0]), writers=np.array([1, 2]))
    crops, labels = load_cvl(tmp_path / "cvl.npz")
    assert crops[:, 0, :].max() == 0.0, "the gray paper must not reach the crop's border"
    assert measure_cvl(CentreInkClassifier(), tmp_path / "cvl.npz")["accuracy"] == 1.0
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a CVL digits file"):
        load_cvl(tmp_path / "bad.npz")


def test_cheque_digits_are_cut_by_truth_boxes_without_the_texture(tmp_path):
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(215, 8, (60, 100)), 0, 255).astype(np.uint8)
    cv2.line(image, (20, 10), (20, 50), 20, 4)
    cv2.circle(image, (70, 30), 16, 20, 4)
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), image)
    boxes = [[8, 5, 26, 50], [48, 8, 45, 45]]
    (tmp_path / "labels.csv").write_text(
        "file,text,digit_boxes_xywh\n" f'images/a.png,10,"{json.dumps(boxes)}"\n'
        'images/missing.png,7,"[[0, 0, 5, 5]]"\n', encoding="utf-8")
    crops, labels = load_cheque_digits(tmp_path)
    assert labels.tolist() == [1, 0]
    assert crops.shape == (2, 28, 28) and crops[:, 0, :].max() == 0.0
    assert (CentreInkClassifier().predict(crops).argmax(axis=1) == labels).all()
