import cv2
import numpy as np
import pytest

from pipeline.normalize import BOX_SIZE, CROP_SIZE, STROKE_BAND, estimate_stroke_width, normalize_digit


def drawn_digit(height=120, thickness=6, text="7"):
    canvas = np.zeros((height + 40, height + 40), np.uint8)
    cv2.putText(canvas, text, (20, height + 10), cv2.FONT_HERSHEY_SIMPLEX, height / 30, 255, thickness)
    return canvas


def ink_box(crop):
    rows = np.flatnonzero((crop > 0.1).any(axis=1))
    cols = np.flatnonzero((crop > 0.1).any(axis=0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def test_output_contract_and_box_size():
    crop = normalize_digit(drawn_digit())
    assert crop.shape == (CROP_SIZE, CROP_SIZE) and crop.dtype == np.float32
    assert crop.min() >= 0.0 and crop.max() == pytest.approx(1.0)
    height, width = ink_box(crop)
    assert max(height, width) in range(BOX_SIZE - 1, BOX_SIZE + 3)


def test_centre_of_mass_is_centred_wherever_the_ink_was():
    ink = np.zeros((300, 400), np.float32)
    ink[200:260, 20:50] = drawn_digit(50, 4, "2")[10:70, 15:45]
    crop = normalize_digit(ink)
    rows, cols = np.indices(crop.shape)
    total = crop.sum()
    assert abs((rows * crop).sum() / total - CROP_SIZE / 2) < 1.0
    assert abs((cols * crop).sum() / total - CROP_SIZE / 2) < 1.0


def test_same_digit_at_different_scales_gives_similar_crops():
    small = normalize_digit(drawn_digit(40, 2))
    large = normalize_digit(drawn_digit(160, 8))
    assert np.abs(small - large).mean() < 0.06


def test_thin_and_thick_strokes_are_brought_into_band():
    for thickness in (1, 22):
        crop = normalize_digit(drawn_digit(200, thickness))
        width = estimate_stroke_width(crop > 0.5)
        assert STROKE_BAND[0] - 0.8 <= width <= STROKE_BAND[1] + 0.8, (thickness, width)


def test_thinning_a_felt_tip_digit_keeps_its_thin_parts():
    # A 6 whose loop the felt tip filled: a wide blob and a thin stem over it. Eroding
    # to the blob's mean width would wipe the stem off and leave a lump.
    ink = np.zeros((90, 60), np.float32)
    cv2.circle(ink, (30, 62), 20, 1.0, -1)
    cv2.line(ink, (26, 44), (44, 6), 1.0, 5)
    crop = normalize_digit(ink)
    rows = np.flatnonzero(crop.max(axis=1) > 0.5)
    assert rows[-1] - rows[0] + 1 >= 0.9 * BOX_SIZE


def test_blank_and_degenerate_inputs_give_empty_crops():
    for ink in (np.zeros((30, 30)), np.zeros((1, 1)), np.zeros((0, 5)), np.full((4, 4), np.nan)):
        crop = normalize_digit(ink)
        assert crop.shape == (CROP_SIZE, CROP_SIZE) and not crop.any()


def test_single_pixel_and_gray_ink():
    dot = np.zeros((9, 9), np.uint8)
    dot[4, 4] = 255
    assert normalize_digit(dot).max() == pytest.approx(1.0)
    faint = drawn_digit().astype(np.float32) * 0.3
    assert normalize_digit(faint).max() == pytest.approx(1.0)


def test_input_is_not_mutated_and_must_be_2d():
    ink = drawn_digit()
    before = ink.copy()
    normalize_digit(ink)
    np.testing.assert_array_equal(ink, before)
    with pytest.raises(ValueError, match="2-D"):
        normalize_digit(np.zeros((3, 3, 3)))


def test_percentile_matches_numpy():
    from pipeline.normalize import percentile

    rng = np.random.default_rng(4)
    for size in (1, 2, 3, 10, 301):
        values = rng.random(size).astype(np.float32)
        heights = rng.integers(5, 90, size)  # box sizes, as segment measures them
        for q in (0, 37.5, 50, 60, 75, 100):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), abs=1e-6)
            assert percentile(heights, q) == float(np.percentile(heights, q))
