"""Segmentation on small synthetic pages whose digits and furniture we draw ourselves."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest

from pipeline import segment
from pipeline.config import SegmentConfig
from pipeline.segment import (PALE_INK, THIN_PEN_INK, PageLayout, _cut_hypotheses, _find_fields, _group_pieces,
                              _link_rows, _looks_printed, _mergeable, _pale_grown, layout_crops, segment_page)

CONFIG = SegmentConfig()
FONT = cv2.FONT_HERSHEY_SCRIPT_SIMPLEX


def blank(rows: int = 400, cols: int = 600, paper: int = 235) -> np.ndarray:
    return np.full((rows, cols), paper, np.uint8)


def write(page: np.ndarray, text: str, x: int, baseline: int, scale: float = 1.6, thickness: int = 4,
          spacing: int = 8, tone: int = 40, seed: int = 0) -> list[tuple[int, int, int, int]]:
    """Draw ``text`` one character at a time, each a little off the baseline and in size
    as handwriting is (typeset text is dropped); returns each character's ink box (x, y, w, h)."""
    rng = np.random.default_rng(seed)
    boxes = []
    for char in text:
        layer = np.zeros_like(page)
        size = scale * rng.uniform(0.85, 1.15)
        cv2.putText(layer, char, (x, baseline + int(rng.integers(-5, 6))), FONT, size, 255, thickness, cv2.LINE_AA)
        rows = np.flatnonzero(layer.max(axis=1) > 128)
        cols = np.flatnonzero(layer.max(axis=0) > 128)
        boxes.append((int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)))
        np.minimum(page, np.where(layer > 0, 255 - (255 - tone) * (layer / 255.0), 255).astype(np.uint8), out=page)
        x = boxes[-1][0] + boxes[-1][2] + spacing
    return boxes


def union(boxes) -> tuple[int, int, int, int]:
    x0 = min(b[0] for b in boxes)
    y0 = min(b[1] for b in boxes)
    x1 = max(b[0] + b[2] for b in boxes)
    y1 = max(b[1] + b[3] for b in boxes)
    return (x0, y0, x1 - x0, y1 - y0)


def iou(a, b) -> float:
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    return w * h / float(a[2] * a[3] + b[2] * b[3] - w * h)


def noisy(page: np.ndarray, seed: int, sigma: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(page + rng.normal(0, sigma, page.shape), 0, 255).astype(np.uint8)


def test_plain_number_is_one_field_with_one_blob_per_digit():
    page = blank()
    boxes = write(page, "4071", 100, 200)
    layout = segment_page(noisy(page, 1), CONFIG)
    assert len(layout.fields) == 1
    field = layout.fields[0]
    assert len(field.blobs) == 4 and not field.cut_out
    assert iou(field.bbox, union(boxes)) > 0.8
    for blob, box in zip(field.blobs, boxes):
        assert iou(blob.bbox, box) > 0.6


def test_fields_come_in_reading_order():
    page = blank(500, 700)
    lower_left = write(page, "12", 60, 380)
    upper_right = write(page, "345", 400, 150)
    upper_left = write(page, "67", 60, 160)
    layout = segment_page(noisy(page, 2), CONFIG)
    found = [field.bbox for field in layout.fields]
    assert len(found) == 3
    expected = [union(upper_left), union(upper_right), union(lower_left)]
    assert all(iou(a, b) > 0.7 for a, b in zip(found, expected))


def test_rule_through_digits_is_removed_without_splitting_them():
    page = blank()
    boxes = write(page, "3820", 100, 200)
    cv2.line(page, (40, 183), (560, 183), 30, 2)  # a table rule across the middle
    layout = segment_page(noisy(page, 3), CONFIG)
    assert len(layout.fields) == 1
    assert len(layout.fields[0].blobs) == 4
    assert iou(layout.fields[0].bbox, union(boxes)) > 0.7


def test_digits_on_an_underline_are_one_field():
    page = blank()
    boxes = write(page, "16059", 100, 200, seed=1)
    bottom = max(b[1] + b[3] for b in boxes)
    cv2.line(page, (80, bottom + 1), (420, bottom + 1), 30, 2)
    layout = segment_page(noisy(page, 31), CONFIG)
    assert len(layout.fields) == 1
    assert len(layout.fields[0].blobs) == 5
    assert iou(layout.fields[0].bbox, union(boxes)) > 0.7


def test_printed_sign_before_an_amount_box_is_not_part_of_the_amount():
    page = blank()
    left, top, bottom = 120, 160, 222  # the box: digits stand near its bottom
    cv2.rectangle(page, (left, top), (540, bottom), 30, 2)
    cv2.putText(page, "$", (left - 26, 200), cv2.FONT_HERSHEY_SIMPLEX, 0.9, 30, 2, cv2.LINE_AA)
    boxes = write(page, "4072", left + 20, 210, seed=3)
    layout = segment_page(noisy(page, 9), CONFIG)
    assert len(layout.fields) == 1
    field = layout.fields[0]
    assert len(field.blobs) == 4
    assert field.bbox[0] >= left  # the "$" left of the box is in no field
    assert iou(field.bbox, union(boxes)) > 0.7


# The comb row of comb_page(): cells CELL px wide and 80 tall, the first at (X0, TOP).
CELL, TOP, X0 = 58, 130, 80


def comb_page(cells: int = 7) -> np.ndarray:
    """A blank page with a row of ``cells`` comb boxes drawn on it."""
    page = blank()
    for k in range(cells):
        cv2.rectangle(page, (X0 + k * CELL, TOP), (X0 + (k + 1) * CELL, TOP + 80), 20, 2)
    return page


def test_comb_boxes_hold_one_field():
    page = comb_page()
    boxes = []
    for k, char in enumerate("902715"):
        boxes += write(page, char, X0 + k * CELL + 12, TOP + 62)
    layout = segment_page(noisy(page, 4), CONFIG)
    assert len(layout.fields) == 1
    assert len(layout.fields[0].blobs) == 6
    assert iou(layout.fields[0].bbox, union(boxes)) > 0.7


@pytest.mark.parametrize("seed", [0, 1])
def test_a_black_and_white_comb_whose_bottom_rule_is_in_dashes_holds_one_field(seed):
    # A fax's threshold cuts a thin rule into dashes: its comb walls still join two rules,
    # and are not read as 1s between the digits.
    page = blank(paper=255)
    for k in range(8):
        cv2.line(page, (X0 + k * CELL, TOP), (X0 + k * CELL, TOP + 80), 0, 2)
    cv2.line(page, (X0, TOP), (X0 + 7 * CELL, TOP), 0, 2)
    for x in range(X0, X0 + 7 * CELL, 30):
        cv2.line(page, (x, TOP + 80), (min(x + 20, X0 + 7 * CELL), TOP + 80), 0, 2)
    boxes = []
    for k, char in enumerate("902715"):
        boxes += write(page, char, X0 + k * CELL + 12, TOP + 62, seed=seed)
    page = np.where(page < 128, 0, 255).astype(np.uint8)
    layout = segment_page(page, CONFIG, bilevel=True)
    assert len(layout.fields) == 1
    assert len(layout.fields[0].blobs) == 6
    assert iou(layout.fields[0].bbox, union(boxes)) > 0.7


def test_a_black_and_white_cut_out_amount_keeps_its_level_strokes():
    # A cut-out field holds no rules: the level bars of four 7s in a row, which on a full
    # black-and-white page would chain like a rule's dashes, stay the 7s' bars.
    page = np.full((90, 220), 255, np.uint8)
    for k in range(4):
        x = 20 + k * 45
        cv2.line(page, (x, 20), (x + 32, 20), 0, 3)
        cv2.line(page, (x + 32, 20), (x + 20, 72), 0, 3)
    (field,) = segment_page(page, CONFIG, bilevel=True).fields
    assert [blob.bbox[2] for blob in field.blobs] == [37] * 4


def test_bold_digits_touching_their_comb_walls_are_one_blob_each():
    # Bold 0s touching their cells' left walls come out one blob each, the walls erased.
    # (This page passed before cb7d3eb too: here wall and stroke touch too briefly to make
    # a run too wide for a wall; that fix is tested in test_preprocess.)
    page = comb_page()
    for k in range(6):
        cv2.ellipse(page, (X0 + k * CELL + 24, TOP + 40), (18, 24), 0, 0, 360, 20, 10)
    layout = segment_page(noisy(page, 4), CONFIG)
    assert len(layout.fields) == 1
    blobs = [blob.bbox for blob in layout.fields[0].blobs]
    assert len(blobs) == 6
    assert all(w > 20 for _, _, w, _ in blobs)


def test_a_one_filling_its_comb_cell_is_a_digit_not_a_wall():
    # A tall 1 from rule to rule between two walls is off the comb's pitch: were it taken
    # for a wall, the digit would vanish and its empty cell would part the field in two.
    page = comb_page()
    boxes = []
    for k, char in enumerate("90"):
        boxes += write(page, char, X0 + k * CELL + 12, TOP + 62)
    one = X0 + 2 * CELL + 20
    cv2.line(page, (one, TOP + 3), (one, TOP + 77), 30, 5)
    boxes.append((one - 2, TOP + 3, 5, 75))
    for k, char in enumerate("715"):
        boxes += write(page, char, X0 + (k + 3) * CELL + 12, TOP + 62, seed=k + 1)
    layout = segment_page(noisy(page, 4), CONFIG)
    assert len(layout.fields) == 1
    assert len(layout.fields[0].blobs) == 6
    blobs = [blob.bbox for blob in layout.fields[0].blobs]
    assert max(iou(blob, boxes[2]) for blob in blobs) > 0.5


def test_touching_pair_gets_a_cut_hypothesis():
    page = blank()
    write(page, "1", 100, 200)
    write(page, "00", 150, 200, spacing=-6)  # two zeros joined by ink
    layout = segment_page(noisy(page, 5), CONFIG)
    assert len(layout.fields) == 1
    blobs = layout.fields[0].blobs
    assert len(blobs) == 2
    wide = blobs[1]
    assert len(wide.readings[0]) == 1
    assert any(len(reading) == 2 for reading in wide.readings[1:])


def test_a_narrow_blob_is_cut_only_at_a_waist():
    # Both 36 px wide, under the 40 px digit height: a "3" and a "6" meeting in a short
    # bridge get a cut where they meet, a round 0 (full height in its middle columns) none.
    pair = np.zeros((40, 36), np.float32)
    cv2.ellipse(pair, (9, 20), (7, 17), 0, 0, 360, 1.0, 3)
    cv2.ellipse(pair, (27, 20), (7, 17), 0, 0, 360, 1.0, 3)
    pair[:, 17:19] = 0
    pair[18:22, 15:21] = 1.0  # the bridge
    zero = np.zeros((40, 36), np.float32)
    cv2.ellipse(zero, (18, 20), (16, 18), 0, 0, 360, 1.0, 3)
    cuts = _cut_hypotheses(pair, height=40.0, min_width=32.0)
    assert len(cuts) == 1 and abs(cuts[0][0][1] - 18) <= 2
    assert _cut_hypotheses(zero, height=40.0, min_width=32.0) == []
    assert _cut_hypotheses(zero, height=30.0, min_width=24.0), "wider than a digit height: cut anywhere"


def test_touching_zeros_are_cut_where_they_meet():
    # Two rings overlapping by two columns: where they meet, their sides make a short but
    # nearly solid column of ink; inside each ring a column has only the top and bottom.
    ink = np.zeros((40, 68), np.float32)
    cv2.circle(ink, (20, 20), 12, 1.0, 4)
    cv2.circle(ink, (47, 20), 12, 1.0, 4)
    meet = 33.5
    inside_ring = (ink[:, 20] > 0).sum()
    assert inside_ring < (ink[:, 33] > 0).sum()  # fewer ink pixels inside a ring than where they meet
    options = _cut_hypotheses(ink, height=28.0, min_width=30.0)
    halves = [pieces for pieces in options if len(pieces) == 2]
    assert len(halves) == 1
    (_, cut), _ = halves[0]
    assert abs(cut - meet) <= 2


def test_broken_five_is_one_candidate():
    page = blank()
    boxes = write(page, "5", 100, 200, scale=2.2, thickness=5)
    x, y, w, h = boxes[0]
    page[y + int(0.22 * h): y + int(0.32 * h), x:x + w] = 235  # cut the top bar off
    pieces = cv2.connectedComponents((page < 128).astype(np.uint8))[0] - 1
    assert pieces >= 2  # the drawing really is broken
    write(page, "7", x + w + 10, 200, scale=2.2, thickness=5)
    layout = segment_page(noisy(page, 6), CONFIG)
    assert len(layout.fields) == 1
    assert len(layout.fields[0].blobs) == 2
    assert iou(layout.fields[0].blobs[0].bbox, boxes[0]) > 0.7


def test_a_four_in_two_strokes_is_proposed_whole_and_apart():
    # A 4 as real writers break it: the slant and bar in one stroke, the stem apart.
    page = blank()
    write(page, "72", 100, 200, scale=2.0, thickness=4)
    x, top = 180, 162
    cv2.line(page, (x + 10, top + 2), (x, top + 24), 40, 4, cv2.LINE_AA)
    cv2.line(page, (x, top + 24), (x + 11, top + 24), 40, 4, cv2.LINE_AA)
    cv2.line(page, (x + 19, top), (x + 19, top + 40), 40, 4, cv2.LINE_AA)
    assert cv2.connectedComponents((page[:, x - 5:] < 128).astype(np.uint8))[0] - 1 == 2
    (field,) = segment_page(noisy(page, 4), CONFIG).fields
    assert len(field.blobs) == 3
    four = field.blobs[2]
    assert four.merged and [len(reading) for reading in four.readings] == [1, 2]
    assert iou(four.bbox, (x - 2, top - 2, 25, 45)) > 0.8
    assert four.readings[1][0].bbox[0] < four.readings[1][1].bbox[0]


def test_a_digit_with_a_pale_stretch_on_a_page_of_dark_ones_is_one_blob():
    page = blank()
    write(page, "38", 100, 200, scale=2.0, thickness=4)
    layer = np.zeros_like(page)
    cv2.ellipse(layer, (205, 180), (11, 19), 0, 0, 360, 255, 4, cv2.LINE_AA)
    zero = layer > 0
    pale = zero.copy()
    pale[:, list(range(0, 203)) + list(range(208, page.shape[1]))] = False  # light at its top and bottom
    page[zero & ~pale] = 40
    page[pale] = 175  # darker than the paper by a share well under the page's ink level
    (field,) = segment_page(noisy(page, 5), CONFIG).fields
    assert len(field.blobs) == 3
    assert not field.blobs[2].merged and [len(reading) for reading in field.blobs[2].readings] == [1]
    assert iou(field.blobs[2].bbox, (192, 159, 27, 43)) > 0.8


def test_growing_into_pale_ink_leaves_a_dark_digits_crop_as_found(monkeypatch):
    # The blur around a dark pen's strokes is pale ink joined to them: it may join pieces,
    # but the crops keep the strokes' own width.
    def whole(layout):
        return [blob.readings[0][0] for field in layout.fields for blob in field.blobs]

    page = blank()
    write(page, "4751", 100, 200, scale=2.0, thickness=5)
    scan = noisy(cv2.GaussianBlur(page, (0, 0), 1.5), 5)
    grown = segment_page(scan, CONFIG)
    monkeypatch.setattr(segment, "PALE_GROWTH", 0)
    found = segment_page(scan, CONFIG)
    assert [len(field.blobs) for field in grown.fields] == [4]
    assert [digit.bbox for digit in whole(grown)] == [digit.bbox for digit in whole(found)]
    assert all(np.array_equal(a.crop, b.crop) for a, b in zip(whole(grown), whole(found)))


def test_only_a_short_piece_close_beside_another_may_be_its_digits_other_stroke():
    assert _mergeable(np.array([0, 20, 12, 35]), np.array([15, 0, 6, 55]), 55.0)
    assert not _mergeable(np.array([0, 0, 20, 50]), np.array([24, 0, 20, 50]), 50.0)  # both full height
    assert not _mergeable(np.array([0, 20, 12, 35]), np.array([22, 0, 6, 55]), 55.0)  # too far apart
    assert not _mergeable(np.array([0, 10, 30, 30]), np.array([30, 0, 20, 40]), 40.0)  # wider than tall


def test_a_sevens_bar_apart_from_its_stem_is_one_blob():
    # Pieces as a scan left them: a 7's bar (34 x 20) over its stem, the stem's top
    # within the bar's lower rows; digits of the same height on either side.
    stats = np.array([[388, 1176, 21, 36, 400], [418, 1166, 34, 20, 300], [422, 1175, 30, 36, 350],
                      [461, 1177, 40, 36, 500], [510, 1164, 31, 44, 500]])
    blobs, boxes, _ = _group_pieces(stats, np.arange(5), np.zeros(0, np.int64), CONFIG)
    assert sorted(map(sorted, blobs)) == [[0], [1, 2], [3], [4]]
    assert boxes[1].tolist() == [418, 1166, 34, 45]


def test_rotated_page_boxes_are_in_original_coordinates():
    page = blank(700, 900)
    for row in range(4):
        cv2.line(page, (60, 150 + row * 140), (840, 150 + row * 140), 30, 2)
    truth = [union(write(page, "58213", 200, 140)), union(write(page, "9047", 300, 420))]
    matrix = cv2.getRotationMatrix2D((450, 350), 3.0, 1.0)
    rotated = cv2.warpAffine(page, matrix, (900, 700), flags=cv2.INTER_LINEAR, borderValue=235)
    moved = []
    for x, y, w, h in truth:
        corners = np.array([[x, y, 1], [x + w, y, 1], [x, y + h, 1], [x + w, y + h, 1]], float) @ matrix.T
        (x0, y0), (x1, y1) = corners.min(axis=0), corners.max(axis=0)
        moved.append((x0, y0, x1 - x0, y1 - y0))
    layout = segment_page(noisy(rotated, 7), CONFIG)
    assert abs(layout.skew_degrees - 3.0) < 0.5
    assert len(layout.fields) == 2
    assert [len(f.blobs) for f in layout.fields] == [5, 4]
    for field, expected in zip(layout.fields, moved):
        assert iou(field.bbox, expected) > 0.7


def test_specks_do_not_make_fields():
    rng = np.random.default_rng(8)
    page = blank()
    write(page, "64", 250, 220)
    for _ in range(150):
        cv2.circle(page, (int(rng.integers(600)), int(rng.integers(400))), int(rng.integers(1, 3)), 60, -1)
    layout = segment_page(noisy(page, 8), CONFIG)
    assert len(layout.fields) == 1
    assert len(layout.fields[0].blobs) == 2


@pytest.mark.parametrize("text, font, scale, thickness, rows", [
    ("Please write the amount below", cv2.FONT_HERSHEY_SIMPLEX, 1.0, 2, 300),
    # A bold heading on a page large enough to be searched for rules at half size: the
    # blur that bridges broken rules once made short "rules" of its letters' feet.
    ("Claim Form", cv2.FONT_HERSHEY_DUPLEX, 1.2, 4, 600),
])
def test_printed_text_is_not_a_digit_field(text, font, scale, thickness, rows):
    page = blank(rows, 900)
    cv2.putText(page, text, (40, 80), font, scale, 30, thickness, cv2.LINE_AA)
    boxes = write(page, "250", 300, rows - 80)
    layout = segment_page(noisy(page, 9), CONFIG)
    assert len(layout.fields) == 1
    assert iou(layout.fields[0].bbox, union(boxes)) > 0.7


def test_printed_text_leaning_by_what_deskewing_leaves_is_not_a_digit_field():
    # A heading printed a little askew on a page whose handwriting stands level: the page
    # is not turned, and the heading's baseline still leans by most of a degree.
    page = blank(300, 900)
    layer = np.zeros_like(page)
    cv2.putText(layer, "BANK OF NOWHERE", (40, 80), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 255, 2, cv2.LINE_AA)
    layer = cv2.warpAffine(layer, cv2.getRotationMatrix2D((450, 80), 0.8, 1.0), (900, 300)).astype(np.float32) / 255
    page = (page - cv2.GaussianBlur(layer, (0, 0), 1.0) * (page - 30.0)).astype(np.uint8)
    boxes = write(page, "250", 300, 220)
    layout = segment_page(noisy(page, 9), CONFIG)
    assert abs(layout.skew_degrees) < 0.5
    assert len(layout.fields) == 1
    assert iou(layout.fields[0].bbox, union(boxes)) > 0.7


def test_cut_out_amount_is_one_field_without_punctuation():
    page = blank(70, 260, paper=190)
    rng = np.random.default_rng(10)
    texture = (8 * np.sin(np.arange(260)[None, :] / 3.0 + np.arange(70)[:, None] / 5.0)).astype(np.int16)
    page = np.clip(page.astype(np.int16) + texture, 0, 255).astype(np.uint8)
    first = write(page, "1", 10, 55, scale=1.4)
    cv2.circle(page, (first[0][0] + first[0][2] + 8, 52), 3, 40, -1)  # thousands dot
    rest = write(page, "500", first[0][0] + first[0][2] + 20, 55, scale=1.4)
    cv2.line(page, (rest[-1][0] + rest[-1][2] + 8, 40), (rest[-1][0] + rest[-1][2] + 22, 40), 40, 3)  # dash
    layout = segment_page(np.clip(page + rng.normal(0, 2, page.shape), 0, 255).astype(np.uint8), CONFIG)
    assert len(layout.fields) == 1
    assert len(layout.fields[0].blobs) == 4
    assert layout.fields[0].cut_out  # the whole image is the number (see group's DROP_REJECTED)


@pytest.mark.parametrize("page", [
    np.full((300, 400), 240, np.uint8),
    np.zeros((300, 400), np.uint8),
    np.full((1, 1), 128, np.uint8),
    np.zeros((0, 0), np.uint8),
    np.random.default_rng(11).integers(0, 256, (64, 64)).astype(np.uint8),
])
def test_degenerate_pages_give_an_explicit_answer(page):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layout = segment_page(page, CONFIG)
    assert isinstance(layout, PageLayout)
    assert (layout.height, layout.width) == page.shape
    if page.size <= 1 or page.min() == page.max():
        assert layout.fields == ()
    assert layout_crops(layout).shape[1:] == (28, 28)


def test_non_2d_input_is_refused():
    with pytest.raises(ValueError, match="2-D"):
        segment_page(np.zeros((10, 10, 3), np.uint8), CONFIG)


def test_layout_crops_follow_fields_blobs_readings():
    page = blank()
    write(page, "1", 100, 200)
    write(page, "00", 150, 200, spacing=-6)
    layout = segment_page(noisy(page, 12), CONFIG)
    crops = layout_crops(layout)
    candidates = [c for f in layout.fields for b in f.blobs for r in b.readings for c in r]
    assert crops.shape == (len(candidates), 28, 28)
    assert crops.dtype == np.float32
    assert all(np.array_equal(crop, c.crop) for crop, c in zip(crops, candidates))
    assert 0.0 <= crops.min() and crops.max() <= 1.0
    assert layout_crops(PageLayout(10, 10, 0.0, ())).shape == (0, 28, 28)


def test_segmentation_is_deterministic_and_leaves_input_alone():
    page = blank()
    write(page, "739", 120, 220)
    page = noisy(page, 13)
    before = page.copy()
    first = segment_page(page, CONFIG)
    second = segment_page(page, CONFIG)
    assert np.array_equal(page, before)
    assert [f.bbox for f in first.fields] == [f.bbox for f in second.fields]
    assert np.array_equal(layout_crops(first), layout_crops(second))



def test_short_piece_within_its_neighbours_rows_links_to_them():
    # Two 60-px digits and, between them, a 22-px piece of a broken digit lying inside their
    # rows; far to the right, a lone 22-px mark level with the digits' tops.
    boxes = np.array([[100, 100, 40, 60], [150, 120, 8, 22], [170, 100, 40, 60], [400, 90, 20, 22]])
    labels = _link_rows(boxes, np.full(4, -1), 1.5, np.zeros((0, 4), np.int64))
    assert labels[0] == labels[1] == labels[2]
    assert labels[3] != labels[0]


def test_a_broken_digits_piece_on_a_comb_rule_links_across_its_cell():
    # Digits 60 px tall on one rule; a broken digit's 30-px piece 80 px beyond the first:
    # further than RULE_GAP of the pair's mean height, within RULE_GAP of the digit's.
    boxes = np.array([[100, 100, 40, 60], [220, 130, 30, 30], [330, 100, 40, 60]])
    labels = _link_rows(boxes, np.zeros(3, np.int64), 1.5, np.zeros((0, 4), np.int64))
    assert labels[0] == labels[1] == labels[2]


def test_a_bar_parted_from_its_stem_links_over_it_but_the_next_line_does_not():
    # A 3, a bold 7's bar above its stem (rows apart from the 3's), the stem, a 1; and a
    # 4 on the line below the 3, 12 px under it.
    boxes = np.array([[100, 200, 40, 48], [150, 180, 50, 20], [165, 204, 22, 44], [210, 198, 30, 44],
                      [102, 260, 38, 46]])
    labels = _link_rows(boxes, np.full(5, -1), 1.5, np.zeros((0, 4), np.int64))
    assert len(set(labels[:4])) == 1
    assert labels[4] != labels[0]


def test_a_bold_sevens_bar_apart_from_its_stem_is_not_a_field_of_its_own():
    page = blank()
    left = write(page, "3", 100, 245, scale=2.5, seed=1)
    x = left[0][0] + left[0][2] + 14
    cv2.line(page, (x, 192), (x + 30, 192), 40, 17)  # the bar, higher than the 3 and the 1
    cv2.line(page, (x + 28, 207), (x + 14, 243), 40, 6)  # the stem, apart from it
    write(page, "1", x + 44, 245, scale=2.5, seed=2)
    layout = segment_page(noisy(page, 3), CONFIG)
    assert len(layout.fields) == 1
    assert layout.fields[0].bbox[1] <= 185


def test_a_table_column_parts_the_numbers_on_either_side():
    boxes = np.array([[100, 100, 40, 60], [150, 100, 40, 60], [230, 100, 40, 60], [280, 100, 40, 60]])
    column = np.array([[208, 40, 2, 300]])
    labels = _link_rows(boxes, np.zeros(4, np.int64), 1.5, column)
    assert labels[0] == labels[1] and labels[2] == labels[3]
    assert labels[1] != labels[2]
    assert len(set(_link_rows(boxes, np.zeros(4, np.int64), 1.5, np.zeros((0, 4), np.int64)))) == 1


def table(page: np.ndarray) -> None:
    """Three rows of two cells: rules at y 100-340 from x 40 to 660, columns through every row."""
    for y in (100, 180, 260, 340):
        cv2.line(page, (40, y), (660, y), 30, 2)
    for x in (40, 330, 660):
        cv2.line(page, (x, 100), (x, 340), 30, 2)


def test_numbers_in_neighbouring_table_cells_are_two_fields():
    page = blank(500, 700)
    table(page)
    left = write(page, "205", 225, 245, seed=5)
    right = write(page, "31", 342, 245, seed=6)
    assert 0 < right[0][0] - (left[-1][0] + left[-1][2]) < 30  # closer than the digits are tall
    layout = segment_page(noisy(page, 12), CONFIG)
    assert len(layout.fields) == 2
    assert iou(layout.fields[0].bbox, union(left)) > 0.7
    assert iou(layout.fields[1].bbox, union(right)) > 0.7


def test_a_short_piece_of_one_field_is_not_taken_again_by_the_field_below():
    # A 4 and a small loop beside it (a piece shorter than a digit, linked into the 4's
    # field) stand in one table cell; a 7 in the cell below starts within half its height
    # of the loop, where a field looks for its own broken pieces.
    page = blank(500, 700)
    table(page)
    cv2.polylines(page, [np.array([[205, 130], [190, 162], [228, 162]])], False, 40, 4)
    cv2.line(page, (216, 136), (216, 176), 40, 4)
    cv2.circle(page, (247, 160), 7, 40, 2)
    cv2.polylines(page, [np.array([[232, 189], [264, 189], [246, 232]])], False, 40, 4)
    layout = segment_page(noisy(page, 14), CONFIG)
    assert len(layout.fields) == 2
    upper, lower = layout.fields
    assert upper.bbox[0] + upper.bbox[2] >= 253  # the loop is in the 4's field
    assert lower.bbox[1] >= 180 and len(lower.blobs) == 1  # and not in the 7's, across the rule


def test_a_thin_one_alone_in_a_table_cell_is_a_field_but_a_rules_remnant_is_not():
    # All three strokes are as thin as a rule. The 1 stands clear of its cell's rules; a
    # frame's side past the rules' ends, and a stroke running into a rule, are remnants.
    page = blank(500, 760)
    table(page)
    cv2.line(page, (200, 116), (201, 164), 40, 3)  # the 1, 16 px clear of both rules
    cv2.line(page, (690, 196), (690, 244), 30, 3)  # a frame side beyond the rules' ends
    cv2.line(page, (500, 262), (500, 310), 30, 3)  # a stroke running into a rule
    layout = segment_page(noisy(page, 13), CONFIG)
    assert [len(field.blobs) for field in layout.fields] == [1]
    assert iou(layout.fields[0].bbox, (198, 114, 6, 53)) > 0.5


def test_a_line_of_print_may_lean_a_pixel_but_handwriting_drifting_more_is_not_print():
    # Capitals of one height whose baseline steps up one pixel halfway, as deskewing leaves it.
    caps = np.array([(20 + 18 * k, 57 + (k >= 5), 15, 18) for k in range(11)])
    assert _looks_printed(caps, CONFIG)
    # Digits of one height sinking about a pixel a digit: steeper than print leans.
    digits = np.array([(280 + 40 * k, 602 + k // 2 * 2 - k % 2, 28, 33) for k in range(6)])
    assert not _looks_printed(digits, CONFIG)


@pytest.mark.parametrize("factor", [2.5, 3.0])
def test_a_fine_scan_reads_like_the_same_page_at_200_dpi(factor):
    # Drawn at 200 dpi (digits ~40 px, 2 px rules), then scanned finer: the rule through
    # the digits and the underline grow thicker than a rule may be at 200 dpi.
    page = blank(500, 700)
    through = write(page, "3820", 100, 150, scale=2.0, thickness=5)
    cv2.line(page, (60, 128), (640, 128), 30, 2)
    underlined = write(page, "16059", 100, 300, seed=1, scale=2.0, thickness=5)
    bottom = max(b[1] + b[3] for b in underlined)
    cv2.line(page, (80, bottom + 2), (560, bottom + 2), 30, 2)
    plain = write(page, "71", 100, 430, seed=2, scale=2.0, thickness=5)
    fine = noisy(cv2.resize(page, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC), 5)
    layout = segment_page(fine, CONFIG)
    assert (layout.width, layout.height) == (fine.shape[1], fine.shape[0])
    assert [len(field.blobs) for field in layout.fields] == [4, 5, 2]
    for field, boxes in zip(layout.fields, (through, underlined, plain)):
        # Boxes are in the fine page's pixels.
        assert iou(field.bbox, tuple(v * factor for v in union(boxes))) > 0.7


def fine_scan(factor: float) -> tuple[np.ndarray, list]:
    """A page drawn at 200 dpi (digits ~40 px, 2 px rules) scanned ``factor`` times finer,
    and its two numbers' digit boxes at 200 dpi."""
    page = blank(500, 700)
    through = write(page, "3820", 100, 150, scale=2.0, thickness=5)
    cv2.line(page, (60, 128), (640, 128), 30, 2)
    plain = write(page, "716", 100, 330, seed=2, scale=2.0, thickness=5)
    return noisy(cv2.resize(page, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC), 5), [through, plain]


def readings_of(monkeypatch) -> list:
    """The scales ``_find_fields`` is called at, recorded from now on."""
    scales = []
    original = segment._find_fields

    def recorded(gray, config, scale, at_floor=False, bilevel=False):
        scales.append(round(scale, 3))
        return original(gray, config, scale, at_floor, bilevel)

    monkeypatch.setattr(segment, "_find_fields", recorded)
    return scales


def test_a_page_stating_a_fine_resolution_is_read_once_at_the_working_size(monkeypatch):
    page, numbers = fine_scan(2.0)
    scales = readings_of(monkeypatch)
    stated = segment_page(page, CONFIG, dpi=400)
    assert scales == [0.5]  # not full size first, then shrunk
    unstated = segment_page(page, CONFIG)
    assert scales[1] == 1.0 and len(scales) == 3
    for layout in (stated, unstated):
        assert [len(field.blobs) for field in layout.fields] == [4, 3]
        for field, boxes in zip(layout.fields, numbers):
            assert iou(field.bbox, tuple(2 * v for v in union(boxes))) > 0.7


def test_a_page_overstating_its_resolution_is_read_full_size(monkeypatch):
    page, numbers = fine_scan(1.0)  # a 200-dpi scan whose file says 600
    scales = readings_of(monkeypatch)
    layout = segment_page(page, CONFIG, dpi=600)
    assert scales == [0.333, 1.0]
    assert [len(field.blobs) for field in layout.fields] == [4, 3]


def test_a_cut_out_field_is_read_at_its_own_size_whatever_its_resolution(monkeypatch):
    field = blank(120, 420)
    write(field, "4071", 20, 90, scale=2.0, thickness=5)
    scales = readings_of(monkeypatch)
    layout = segment_page(noisy(field, 6), CONFIG, dpi=300)
    assert scales == [1.0] and [len(f.blobs) for f in layout.fields] == [4]


@pytest.mark.parametrize("seed", [0, 2, 3])
def test_digits_of_a_thin_pale_pen_are_read_whole(seed):
    # 1 px strokes whose pressure comes and goes, softened by the scanner: at the usual
    # ink level they fall apart into pieces too small to keep, or lose whole strokes.
    page = blank()
    boxes = write(page, "4071", 100, 150, thickness=1, tone=90)
    boxes += write(page, "2583", 100, 300, thickness=1, tone=90, seed=1)
    rng = np.random.default_rng(seed)
    pressure = cv2.GaussianBlur(rng.random(page.shape).astype(np.float32), (0, 0), 4)
    pressure = 0.3 + 0.7 * (pressure - pressure.min()) / np.ptp(pressure)
    ink = cv2.GaussianBlur((235.0 - page) * pressure, (0, 0), 0.7)
    scan = noisy((235.0 - ink).astype(np.uint8), 1)
    assert _find_fields(scan, CONFIG, 1.0)[2] < THIN_PEN_INK
    layout = segment_page(scan, CONFIG)
    assert [len(field.blobs) for field in layout.fields] == [4, 4]
    blobs = [blob.bbox for field in layout.fields for blob in field.blobs]
    for box in boxes:
        assert max(iou(blob, box) for blob in blobs) > 0.7


@pytest.mark.parametrize("seed", [1, 2, 4])
def test_a_paler_number_on_a_thin_pen_page_is_read_whole_at_the_floor(seed):
    # One number in a thin pale pen makes the page a thin-pen one, read at the ink floor;
    # another, written with the same pressure at 0.6 of its darkness, falls apart into
    # pieces too small to keep even there, unless the floor's ink grows into its paler ink.
    page, faint = blank(), blank()
    write(page, "4071", 100, 150, thickness=1, tone=90)
    boxes = write(faint, "2583", 100, 300, thickness=2, tone=90, seed=1)
    rng = np.random.default_rng(seed)
    pressure = cv2.GaussianBlur(rng.random(page.shape).astype(np.float32), (0, 0), 4)
    pressure = 0.3 + 0.7 * (pressure - pressure.min()) / np.ptp(pressure)
    ink = cv2.GaussianBlur(((235.0 - page) + 0.6 * (235.0 - faint)) * pressure, (0, 0), 0.7)
    scan = noisy((235.0 - ink).astype(np.uint8), 1)
    assert _find_fields(scan, CONFIG, 1.0)[2] < THIN_PEN_INK
    layout = segment_page(scan, CONFIG)
    assert [len(field.blobs) for field in layout.fields] == [4, 4]
    for blob, box in zip(layout.fields[1].blobs, boxes):
        assert iou(blob.bbox, box) > 0.7


def test_a_pen_of_usual_width_is_not_taken_for_a_thin_one():
    page = blank()
    write(page, "4071", 100, 150)
    write(page, "2583", 100, 300, seed=1)
    assert _find_fields(noisy(page, 1), CONFIG, 1.0)[2] >= THIN_PEN_INK


def test_a_blob_on_a_thin_pen_page_takes_the_pale_ink_joined_to_it():
    level = 64
    dark = np.zeros((30, 40), np.uint8)
    dark[5:25, 10:12] = 120  # the blob's own stroke: a 1 ...
    dark[5:7, 12:20] = 40  # ... with a pale flag (below the level, above half of it): a 7
    dark[10:12, 30:36] = 40  # pale ink of nothing: a speck
    dark[20:25, 16:18] = 120  # a neighbour's stroke ...
    dark[20:25, 12:16] = 40  # ... whose pale halo touches the blob
    dark[3:5, 14:16] = 120  # a speck's dark spot beside the flag, which must not bar it
    specks = np.zeros(dark.shape, bool)
    specks[3:5, 14:16] = True
    own = (dark > level) & (np.arange(40) < 14)[None, :] & (np.arange(30) > 3)[:, None]
    box, grown = _pale_grown(own, dark, (0, 0, 40, 30), level, PALE_INK * level, specks)
    assert box == (10, 3, 10, 22)
    assert grown[5:7, 12:20].all(), "the flag joins the stroke, the speck beside it too"
    assert not grown[15:25, 15:].any(), "the neighbour and the halo next to it stay out"
    assert grown[20:25, 12:15].all(), "the halo's pixels not next to the neighbour join"
    assert not grown[10:12, 30:36].any(), "pale ink joined to nothing of the blob stays out"


def test_a_pen_stroke_going_pale_stays_in_its_digit():
    # A 0 written with a pen of middling darkness whose right side fades below the page's
    # ink level: the crop takes the faded stretch (joined to the digit's own strokes, and
    # above PALE_STROKE of their darkness), so the 0 stays closed instead of reading as a C.
    page = blank()
    boxes = write(page, "41", 100, 150, tone=120)
    x = boxes[-1][0] + boxes[-1][2] + 30
    cv2.ellipse(page, (x, 125), (14, 24), 0, 0, 360, 120, 4, cv2.LINE_AA)
    page[117:134, x + 8:x + 20] = np.maximum(page[117:134, x + 8:x + 20], 168)
    layout = segment_page(noisy(page, 1), CONFIG)
    assert [len(field.blobs) for field in layout.fields] == [3]
    zero = (layout.fields[0].blobs[-1].readings[0][0].crop > 0.3).astype(np.uint8)
    _, hierarchy = cv2.findContours(zero, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    assert sum(1 for contour in hierarchy[0] if contour[3] >= 0) == 1, "one hole: the 0 is closed"
