"""The sample-page generator, fed a tiny MNIST written by the test."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
import pytest

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.errors import ExitCode
from pipeline.load import iter_pages, read_source
from pipeline.samples import write_samples


def test_pages_and_truth_are_written(tiny_mnist, tmp_path):
    out = tmp_path / "samples"
    images = write_samples(tiny_mnist, out, pages=4, seed=3)
    assert len(images) == 4
    for image_path in images:
        assert image_path.suffix in (".png", ".jpg")
        gray = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED)
        assert gray is not None and gray.ndim == 2 and gray.dtype == np.uint8
        truth = json.loads(image_path.with_suffix(".json").read_text())
        assert truth["image"] == image_path.name
        assert (truth["height"], truth["width"]) == gray.shape
        assert truth["fields"]
        for field in truth["fields"]:
            assert field["text"].isdigit()
            x, y, w, h = field["bbox"]
            assert 0 <= x and 0 <= y and w > 0 and h > 0
            assert x + w <= truth["width"] and y + h <= truth["height"]
            # The box holds ink: the field is really drawn there.
            assert gray[y:y + h, x:x + w].min() < gray.mean() - 60
            # Each digit has its own box, inside the field's (up to a pixel of rounding).
            assert "".join(d["label"] for d in field["digits"]) == field["text"]
            for digit in field["digits"]:
                dx, dy, dw, dh = digit["bbox"]
                assert x - 1 <= dx and y - 1 <= dy and dx + dw <= x + w + 1 and dy + dh <= y + h + 1


def test_same_seed_same_pages(tiny_mnist, tmp_path):
    first = write_samples(tiny_mnist, tmp_path / "a", pages=2, seed=7)
    second = write_samples(tiny_mnist, tmp_path / "b", pages=2, seed=7)
    other = write_samples(tiny_mnist, tmp_path / "c", pages=2, seed=8)
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes()
        assert a.with_suffix(".json").read_text() == b.with_suffix(".json").read_text()
    assert [p.with_suffix(".json").read_text() for p in first] != [p.with_suffix(".json").read_text() for p in other]


def test_a_fixed_dpi_scans_the_same_pages_at_that_size(tiny_mnist, tmp_path):
    coarse = write_samples(tiny_mnist, tmp_path / "150", pages=3, seed=5, dpi=150)
    fine = write_samples(tiny_mnist, tmp_path / "300", pages=3, seed=5, dpi=300)
    for small, large in zip(coarse, fine):
        a = json.loads(small.with_suffix(".json").read_text())
        b = json.loads(large.with_suffix(".json").read_text())
        assert b["width"] == pytest.approx(2 * a["width"], abs=2)
        assert b["height"] == pytest.approx(2 * a["height"], abs=2)
        assert [f["text"] for f in b["fields"]] == [f["text"] for f in a["fields"]]
        for f, g in zip(a["fields"], b["fields"]):
            assert g["bbox"][3] == pytest.approx(2 * f["bbox"][3], rel=0.25)
        # Each file states its resolution, as a scanner's does; so does the truth.
        assert (a["dpi"], b["dpi"]) == (150, 300)
        with Image.open(small) as coarse_image, Image.open(large) as fine_image:
            assert coarse_image.info["dpi"][0] == pytest.approx(150, abs=0.05)  # PNG keeps dots a metre
            assert fine_image.info["dpi"][0] == pytest.approx(300, abs=0.05)


def test_pages_of_real_writers_digits_come_from_a_cvl_file(tmp_path):
    # CVL's layout: dark ink on gray paper. Only 3s and 8s, so every field shows where
    # its digits came from; no MNIST is given or needed.
    images = np.full((10, 28, 28), 235, np.uint8)
    labels = np.array([3, 8] * 5, np.uint8)
    for image, label in zip(images, labels):
        cv2.putText(image, str(label), (6, 23), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 60, 1, cv2.LINE_AA)
    np.savez(tmp_path / "cvl.npz", images=images, labels=labels, writers=np.array(["0001"] * 10))
    written = write_samples(None, tmp_path / "out", pages=3, seed=5, cvl=tmp_path / "cvl.npz")
    assert len(written) == 3
    for image_path in written:
        gray = cv2.imread(str(image_path), cv2.IMREAD_GRAYSCALE)
        truth = json.loads(image_path.with_suffix(".json").read_text())
        assert truth["fields"]
        for field in truth["fields"]:
            assert set(field["text"]) <= {"3", "8"}
            x, y, w, h = field["bbox"]
            assert gray[y:y + h, x:x + w].min() < gray.mean() - 60


REPO = Path(__file__).resolve().parent.parent


def test_the_committed_samples_are_what_make_samples_writes(tmp_path, real_mnist):
    """`make samples` (the CLI's defaults on the real MNIST) rewrites samples/ as committed:
    a generator change that would alter the pages shows here until the set is rewritten.
    The truth is compared, not the image bytes, which another Pillow may encode otherwise."""
    assert main(["samples", "--mnist", str(real_mnist), "--output", str(tmp_path)]) == ExitCode.ok
    committed = sorted(path.name for path in (REPO / "samples").iterdir())
    assert sorted(path.name for path in tmp_path.iterdir()) == committed
    for name in committed:
        if name.endswith(".json"):
            assert json.loads((tmp_path / name).read_text()) == json.loads((REPO / "samples" / name).read_text()), name


def test_fax_pages_are_black_and_white_at_fax_resolution_with_truth_on_the_page_as_read(tiny_mnist, tmp_path):
    config = load_config()
    written = write_samples(tiny_mnist, tmp_path, pages=3, seed=4, fax=True)
    assert [path.suffix for path in written] == [".tif"] * 3
    for image_path in written:
        with Image.open(image_path) as image:
            assert image.mode == "1" and image.info["compression"] == "group4"
            assert image.info["dpi"] == pytest.approx((204, 98), abs=0.05)
            stored_height = image.size[1]
        truth = json.loads(image_path.with_suffix(".json").read_text())
        (page,) = iter_pages(read_source(image_path, config.input), config.input)
        # The reader stretches the 98 lines an inch to 204: the truth is on that page.
        assert (truth["height"], truth["width"]) == page.gray.shape
        assert page.gray.shape[0] == pytest.approx(stored_height * 204 / 98, abs=1)
        assert truth["fields"]
        for field in truth["fields"]:
            for digit in field["digits"]:
                x, y, w, h = digit["bbox"]
                assert page.gray[y:y + h, x:x + w].min() == 0  # black ink inside each digit's box


def test_bilevel_pages_are_the_same_pages_black_and_white_at_their_resolution(tiny_mnist, tmp_path):
    gray = write_samples(tiny_mnist, tmp_path / "gray", pages=2, seed=6)
    two_tone = write_samples(tiny_mnist, tmp_path / "bw", pages=2, seed=6, bilevel=True)
    assert [path.suffix for path in two_tone] == [".tif"] * 2
    for gray_path, image_path in zip(gray, two_tone):
        with Image.open(image_path) as image:
            assert image.mode == "1" and image.info["compression"] == "group4"
            stated = image.info["dpi"]
        truth = json.loads(image_path.with_suffix(".json").read_text())
        assert stated == pytest.approx((truth["dpi"], truth["dpi"]), abs=0.05)
        gray_truth = json.loads(gray_path.with_suffix(".json").read_text())
        assert truth["fields"] == gray_truth["fields"] and truth["width"] == gray_truth["width"]
        (page,) = iter_pages(read_source(image_path, load_config().input), load_config().input)
        assert page.bilevel


def test_fax_and_bilevel_together_are_refused(tmp_path):
    assert main(["samples", "--fax", "--bilevel", "--output", str(tmp_path)]) == ExitCode.could_not_run
