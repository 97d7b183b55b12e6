import cv2
import numpy as np

from pipeline.augment import augment_digit, make_non_digits
from pipeline.normalize import CROP_SIZE


def digit_images(count=6):
    images = np.zeros((count, 28, 28), np.uint8)
    for index in range(count):
        cv2.putText(images[index], str(index % 10), (6, 23), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 255, 2)
    return images


def test_augmented_digits_are_normalized_variants_and_seeded():
    images = digit_images()
    first = np.stack([augment_digit(im, np.random.default_rng(5)) for im in images])
    again = np.stack([augment_digit(im, np.random.default_rng(5)) for im in images])
    np.testing.assert_array_equal(first, again)
    assert first.shape == (6, CROP_SIZE, CROP_SIZE) and first.dtype == np.float32
    assert all(crop.max() > 0.9 for crop in first)
    plain = images.astype(np.float32) / 255
    assert not np.allclose(first, plain, atol=0.05)


def test_non_digits_cover_several_kinds_and_stay_in_range():
    junk = make_non_digits(200, digit_images(), np.random.default_rng(3))
    assert junk.shape == (200, CROP_SIZE, CROP_SIZE)
    assert junk.min() >= 0.0 and junk.max() <= 1.0
    blank = ~junk.reshape(200, -1).any(axis=1)
    assert 0 < blank.sum() < 30
    ink_share = (junk > 0.5).reshape(200, -1).mean(axis=1)
    assert ink_share[~blank].std() > 0.03
