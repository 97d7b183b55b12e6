"""read_fields on hand-built layouts with fixed, fake probabilities (no model, no TensorFlow)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.config import FlagConfig
from pipeline.group import (
    FLAG_REASONS,
    FORCED_MERGE,
    FORCED_SPLIT,
    LOW_CONFIDENCE,
    NOT_A_DIGIT,
    read_fields,
)
from pipeline.segment import (
    ODD_SIZE,
    Blob,
    Candidate,
    FieldLayout,
    PageLayout,
    layout_crops,
)

FLAGS = FlagConfig(min_digit_confidence=0.9)
CROP = np.zeros((28, 28), np.float32)


def candidate(x: int, w: int = 20, h: int = 30) -> Candidate:
    return Candidate((x, 10, w, h), CROP)


def blob(x: int, cuts: tuple[int, ...] = (), h: int = 30) -> Blob:
    """A blob at column x, 20 px wide per digit; ``cuts``: piece counts of its cut readings."""
    width = 20 * max((1,) + cuts)
    readings = [(candidate(x, width, h),)]
    for pieces in cuts:
        readings.append(tuple(candidate(x + k * width // pieces, width // pieces, h) for k in range(pieces)))
    return Blob((x, 10, width, h), tuple(readings))


def page(*fields: tuple[Blob, ...], reasons=()) -> PageLayout:
    layouts = []
    for blobs in fields:
        x0 = min(b.bbox[0] for b in blobs)
        x1 = max(b.bbox[0] + b.bbox[2] for b in blobs)
        layouts.append(FieldLayout((x0, 10, x1 - x0, 30), blobs, tuple(reasons)))
    return PageLayout(1000, 100, 0.0, tuple(layouts))


def onehot(label: int, p: float = 0.99) -> np.ndarray:
    row = np.full(11, (1.0 - p) / 10.0, np.float32)
    row[label] = p
    return row


def probs(*rows) -> np.ndarray:
    return np.stack(rows).astype(np.float32)


def test_confident_digits_make_an_unflagged_field():
    layout = page((blob(0), blob(30), blob(60)))
    fields = read_fields(layout, probs(onehot(4), onehot(0), onehot(7)), FLAGS)
    assert len(fields) == 1
    field = fields[0]
    assert (field.id, field.text, field.flagged, field.reasons) == (1, "407", False, ())
    assert field.confidence == pytest.approx(math.prod(d.confidence for d in field.digits))
    assert [d.bbox for d in field.digits] == [b.bbox for b in layout.fields[0].blobs]
    assert field.bbox == (0, 10, 80, 30)


def test_ids_count_from_one_in_reading_order():
    layout = page((blob(0),), (blob(100),), (blob(200),))
    fields = read_fields(layout, probs(onehot(1), onehot(2), onehot(3)), FLAGS)
    assert [(f.id, f.text) for f in fields] == [(1, "1"), (2, "2"), (3, "3")]


def test_uncut_reading_wins_unless_clearly_worse():
    layout = page((blob(0, cuts=(2,)),))
    # Whole reads as 0 at 0.8; the cut reads 1, 1 at 0.95, short of sure: not worth a cut.
    fields = read_fields(layout, probs(onehot(0, 0.8), onehot(1, 0.95), onehot(1, 0.95)), FLAGS)
    assert fields[0].text == "0"
    assert FORCED_SPLIT not in fields[0].reasons
    assert LOW_CONFIDENCE in fields[0].reasons


def test_sure_cut_beats_a_confident_whole():
    # Touching "78" read whole as 8 at 0.99, and cut into a 7 and an 8 as sure.
    layout = page((blob(0), blob(30, cuts=(2,))))
    rows = probs(onehot(4), onehot(8, 0.99), onehot(7, 0.995), onehot(8, 0.995))
    fields = read_fields(layout, rows, FLAGS)
    assert fields[0].text == "478"
    assert fields[0].reasons == (FORCED_SPLIT,)


def test_a_narrow_blob_read_whole_as_a_sure_digit_stays_whole():
    # A 0 narrower than tall, cut down the middle into two arcs the model also reads as
    # sure digits ("61"): the sure whole wins. Were it unsure, the sure cut would win.
    layout = page((blob(0), blob(30, cuts=(2,), h=50)))
    rows = probs(onehot(4), onehot(0, 0.99), onehot(6, 0.995), onehot(1, 0.995))
    assert read_fields(layout, rows, FLAGS)[0].text == "40"
    rows = probs(onehot(4), onehot(0, 0.9), onehot(6, 0.995), onehot(1, 0.995))
    assert read_fields(layout, rows, FLAGS)[0].text == "461"


def test_cut_with_a_short_piece_is_not_sure():
    # A 1 whose flag is cut off its stem: both pieces read as sure 1s, but the flag is short.
    flag, stem = Candidate((30, 10, 8, 12), CROP), Candidate((38, 10, 8, 30), CROP)
    one = Blob((30, 10, 16, 30), ((Candidate((30, 10, 16, 30), CROP),), (flag, stem)))
    rows = probs(onehot(4), onehot(1, 0.98), onehot(1, 0.995), onehot(1, 0.995))
    fields = read_fields(page((blob(0), one)), rows, FLAGS)
    assert fields[0].text == "41"
    assert fields[0].reasons == ()


def test_cut_reading_wins_when_the_whole_is_rejected():
    layout = page((blob(0), blob(30, cuts=(2, 3))))
    rows = probs(onehot(5), onehot(10, 0.9), onehot(2), onehot(7), onehot(2, 0.5), onehot(7, 0.5), onehot(1, 0.5))
    fields = read_fields(layout, rows, FLAGS)
    assert fields[0].text == "527"
    assert fields[0].reasons == (FORCED_SPLIT,)
    assert len(fields[0].digits) == 3


def test_rejected_full_size_blob_is_left_out_and_flagged():
    layout = page((blob(0), blob(30), blob(60)))
    fields = read_fields(layout, probs(onehot(3), onehot(10), onehot(8)), FLAGS)
    assert fields[0].text == "38"
    assert fields[0].reasons == (NOT_A_DIGIT,)
    assert fields[0].flagged


def test_small_rejected_mark_is_dropped_silently():
    layout = page((blob(0), blob(30), blob(60, h=8)))
    fields = read_fields(layout, probs(onehot(3), onehot(8), onehot(10)), FLAGS)
    assert (fields[0].text, fields[0].reasons) == ("38", ())


def test_mostly_rejected_field_is_not_reported():
    layout = page((blob(0), blob(30), blob(60)), (blob(200),))
    fields = read_fields(layout, probs(onehot(10), onehot(10), onehot(1), onehot(6)), FLAGS)
    assert [(f.id, f.text) for f in fields] == [(1, "6")]


def test_a_cut_out_amount_mostly_rejected_is_still_reported_for_review():
    # A cheque's amount box cut out by another system holds no print: its one field is
    # read and flagged however much of it the model rejects, never dropped as print.
    blobs = (blob(0), blob(30), blob(60))
    rows = probs(onehot(10), onehot(10), onehot(1))
    amount = PageLayout(100, 50, 0.0, (FieldLayout((0, 10, 80, 30), blobs, (), cut_out=True),))
    (field,) = read_fields(amount, rows, FLAGS)
    assert (field.text, field.flagged, NOT_A_DIGIT in field.reasons) == ("1", True, True)
    assert read_fields(page(blobs), rows, FLAGS) == ()  # on a page, the same field is dropped


def test_bold_print_read_as_digits_with_two_in_five_letters_rejected_is_not_reported():
    # A printed word in a table cell: most letters pass for digits, two of five do not.
    word = page(tuple(blob(30 * k) for k in range(5)))
    rows = probs(onehot(5), onehot(10), onehot(1), onehot(10), onehot(7))
    assert read_fields(word, rows, FLAGS) == ()


def test_printed_word_cut_into_rejected_pieces_is_not_reported():
    # One wide blob: rejected whole, cut in three pieces of which two are rejected too.
    word = page((blob(0, cuts=(3,)),))
    rows = probs(onehot(10), onehot(1, 0.6), onehot(10, 0.6), onehot(10, 0.6))
    assert read_fields(word, rows, FLAGS) == ()
    # The same blob with one rejected piece of three is touching digits: read and flagged,
    # the rejected piece as its likeliest digit.
    unsure_one = onehot(10, 0.6)
    unsure_one[1] = 0.2
    rows = probs(onehot(10), onehot(1, 0.6), onehot(7, 0.6), unsure_one)
    (field,) = read_fields(word, rows, FLAGS)
    assert field.text == "171"
    assert FORCED_SPLIT in field.reasons and field.flagged


def merged(x: int) -> Blob:
    """Two neighbouring pieces proposed as one digit: a short one (12 x 20) and a tall one."""
    apart = (Candidate((x, 20, 12, 20), CROP), Candidate((x + 12, 10, 8, 30), CROP))
    return Blob((x, 10, 20, 30), ((candidate(x),), apart), merged=True)


def test_pieces_read_together_when_the_whole_is_a_sure_digit_and_a_piece_is_not():
    # A 4 in two strokes: together a sure 4; apart an unsure 6 and a sure 1.
    rows = probs(onehot(7), onehot(4, 0.99), onehot(6, 0.6), onehot(1, 0.99))
    (field,) = read_fields(page((blob(0), merged(30))), rows, FLAGS)
    assert field.text == "74"
    assert field.reasons == (FORCED_MERGE,) and field.flagged
    assert field.digits[1].bbox == (30, 10, 20, 30)


def test_pieces_each_read_as_a_sure_digit_stay_apart():
    # A 1 beside a 4: together it passes for a sure 4 too, but two sure digits stay two.
    rows = probs(onehot(7), onehot(4, 0.99), onehot(4, 0.99), onehot(1, 0.99))
    (field,) = read_fields(page((blob(0), merged(30))), rows, FLAGS)
    assert (field.text, field.reasons) == ("741", ())
    assert [d.bbox for d in field.digits[1:]] == [(30, 20, 12, 20), (42, 10, 8, 30)]


def test_pieces_rejected_together_stay_apart():
    rows = probs(onehot(7), onehot(10, 0.9), onehot(6, 0.6), onehot(1, 0.6))
    (field,) = read_fields(page((blob(0), merged(30))), rows, FLAGS)
    assert field.text == "761"
    assert FORCED_MERGE not in field.reasons


def test_a_surely_rejected_piece_apart_counts_as_well_read():
    # A 0 beside a stray mark the model surely rejects, and together an unsure 9: apart
    # wins, the mark is dropped. Scored by its digits alone the mark would lose.
    rows = probs(onehot(7), onehot(9, 0.6), onehot(0, 0.99), onehot(10, 0.99))
    (field,) = read_fields(page((blob(0), merged(30))), rows, FLAGS)
    assert field.text == "70"
    # Both pieces unsure digits: the unsure whole, less the penalty, still beats them.
    rows = probs(onehot(7), onehot(8, 0.8), onehot(0, 0.3), onehot(3, 0.3))
    (field,) = read_fields(page((blob(0), merged(30))), rows, FLAGS)
    assert field.text == "78"
    assert FORCED_MERGE in field.reasons


def test_segmentation_doubts_become_flags():
    layout = page((blob(0), blob(30)), reasons=(ODD_SIZE,))
    fields = read_fields(layout, probs(onehot(9), onehot(9)), FLAGS)
    assert fields[0].reasons == (ODD_SIZE,)
    assert set(fields[0].reasons) <= set(FLAG_REASONS)


def test_low_confidence_follows_the_config():
    layout = page((blob(0),))
    rows = probs(onehot(2, 0.85))
    assert read_fields(layout, rows, FlagConfig(min_digit_confidence=0.9))[0].reasons == (LOW_CONFIDENCE,)
    assert read_fields(layout, rows, FlagConfig(min_digit_confidence=0.8))[0].reasons == ()


def test_empty_page_reads_nothing():
    layout = PageLayout(10, 10, 0.0, ())
    assert read_fields(layout, np.zeros((0, 11), np.float32), FLAGS) == ()


def test_probabilities_must_match_the_layout():
    layout = page((blob(0, cuts=(2,)),))
    assert layout_crops(layout).shape[0] == 3
    with pytest.raises(ValueError, match="shape"):
        read_fields(layout, probs(onehot(1), onehot(2)), FLAGS)
