"""Turn one digit's ink into a 28×28 crop the way MNIST was made.

MNIST digits were scaled so their longer side fits a 20×20 box (aspect kept), then
placed in a 28×28 frame with their centre of mass at the centre; ink is white (1.0)
on black (0.0). Training augments MNIST and runs every sample through this same
function, so the model sees crops made exactly as the page pipeline makes them.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

CROP_SIZE = 28
BOX_SIZE = 20
# Pixels whose ink is below this share of the crop's maximum do not count for the tight box.
INK_FLOOR = 0.1
# Inked pixels at or above this percentile of intensity count as full ink (1.0).
CORE_PERCENTILE = 60
# Stroke width band, in pixels at BOX_SIZE scale: 5th and 95th percentile of MNIST's
# training digits, ink taken at half intensity (measured with ``estimate_stroke_width``
# on 3,000 training digits: 1.87 and 4.85, median 2.89). Strokes outside the band
# are thickened or thinned to its edge, so a thin pen at 600 dpi or a felt marker at
# 150 dpi both look like MNIST's.
STROKE_BAND = (1.9, 4.8)
# Percentile of a digit's stroke widths (along its skeleton) taken for its thinnest strokes.
THIN_STROKES = 10


def percentile(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (linear interpolation) of a non-empty array by partial
    sort: >10× faster on the few hundred values of one digit or one page's boxes, and
    this runs for every candidate and every field of a page."""
    position = q / 100.0 * (values.size - 1)
    low = int(position)
    high = min(low + 1, values.size - 1)
    part = np.partition(values, (low, high))
    return float(part[low] + (part[high] - part[low]) * (position - low))


def _clip_unit(values: np.ndarray) -> np.ndarray:
    """``np.clip(values, 0, 1)`` in place: the same values without ``np.clip``'s Python
    overhead, which counts at the several clips per candidate of every page."""
    np.maximum(values, 0.0, out=values)
    return np.minimum(values, 1.0, out=values)


def _tight_box(ink: np.ndarray) -> tuple[int, int, int, int] | None:
    """(row0, row1, col0, col1) of the pixels above INK_FLOOR, or None when empty."""
    col, row, width, height = cv2.boundingRect((ink > INK_FLOOR).view(np.uint8))
    if width == 0:
        return None
    return row, row + height, col, col + width


def estimate_stroke_width(mask: np.ndarray, skeleton: np.ndarray | None = None) -> float:
    """Mean stroke width of a binary (M, N) mask, in its own pixels.

    Ink area divided by the length of its medial axis (``skeleton``, computed when not
    given); 0.0 for an empty mask.
    """
    mask = np.asarray(mask, dtype=bool)
    area = cv2.countNonZero(mask.view(np.uint8))
    if area == 0:
        return 0.0
    if skeleton is None:
        from skimage.morphology import skeletonize

        skeleton = skeletonize(mask)
    return area / max(cv2.countNonZero(skeleton.view(np.uint8)), 1)


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _adjust_stroke(ink: np.ndarray, scale: float) -> np.ndarray:
    """Thicken or thin ``ink`` so its stroke, seen at ``scale``, falls in STROKE_BAND."""
    from skimage.morphology import skeletonize

    mask = ink > 0.5
    skeleton = skeletonize(mask)
    width = estimate_stroke_width(mask, skeleton) * scale
    low, high = STROKE_BAND
    if width == 0.0 or low <= width <= high:
        return ink
    target = low if width < low else high
    # Growing or shrinking the outline by r pixels changes the width by 2r.
    radius = int(round(abs(target - width) / (2.0 * scale)))
    if radius == 0:
        return ink
    if width < low:
        return cv2.dilate(ink, _disc(radius))
    # Never erase part of a digit: a felt-tip 6 whose loop is filled has a mean stroke far
    # wider than its stem, and eroding to that width wipes the stem off. The erosion
    # stops where its thinnest strokes (THIN_STROKES of the skeleton's widths) would fall
    # below the band.
    half_widths = cv2.distanceTransform(mask.view(np.uint8), cv2.DIST_L2, 3)[skeleton]
    thinnest = 2.0 * percentile(half_widths, THIN_STROKES) if half_widths.size else 0.0
    radius = min(radius, int((thinnest - low / scale) / 2.0))
    if radius <= 0:
        return ink
    thinned = cv2.erode(ink, _disc(radius))
    # Never erase a digit: keep the original if thinning would remove most of it.
    return thinned if (thinned > 0.5).sum() >= 0.25 * mask.sum() else ink


def normalize_digit(ink: np.ndarray, adjust_stroke: bool = True) -> np.ndarray:
    """Make an MNIST-style crop from one digit's ink.

    Parameters
    ----------
    ink : (M, N) ndarray
        Ink intensity, any real dtype, ink high and background 0 (a binary mask works).
    adjust_stroke : bool
        Bring the stroke width into MNIST's band (STROKE_BAND).

    Returns
    -------
    crop : (28, 28) float32 ndarray
        Values in [0, 1], ink 1; all zeros when ``ink`` has no ink.
    """
    ink = np.asarray(ink, dtype=np.float32)
    if ink.ndim != 2:
        raise ValueError(f"ink must be a 2-D array, got shape {ink.shape}")
    out = np.zeros((CROP_SIZE, CROP_SIZE), np.float32)
    peak = float(ink.max()) if ink.size else 0.0
    if not math.isfinite(peak) or peak <= 0.0:
        return out
    ink = _clip_unit(ink / peak)
    # Saturate the stroke cores as MNIST's are: faint pens and gray scans look alike then.
    inked = ink[ink > INK_FLOOR]
    core = percentile(inked, CORE_PERCENTILE) if inked.size else 1.0
    ink = _clip_unit(ink / max(core, INK_FLOOR))
    box = _tight_box(ink)
    if box is None:
        return out
    r0, r1, c0, c1 = box
    ink = ink[r0:r1, c0:c1]
    height, width = ink.shape
    scale = BOX_SIZE / max(height, width)
    if adjust_stroke:
        # Pad so dilation has room, then recrop: the box may grow by the added stroke.
        padded = cv2.copyMakeBorder(ink, 4, 4, 4, 4, cv2.BORDER_CONSTANT, value=0.0)
        padded = _adjust_stroke(padded, scale)
        box = _tight_box(padded)
        if box is not None:
            r0, r1, c0, c1 = box
            ink = padded[r0:r1, c0:c1]
            height, width = ink.shape
            scale = BOX_SIZE / max(height, width)
    new_h = max(1, int(round(height * scale)))
    new_w = max(1, int(round(width * scale)))
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    small = cv2.resize(ink, (new_w, new_h), interpolation=interpolation)
    small = _clip_unit(small)
    total = float(small.sum())
    if total <= 0.0:
        return out
    com_r = float((np.arange(new_h)[:, None] * small).sum() / total)
    com_c = float((np.arange(new_w)[None, :] * small).sum() / total)
    # Shift so the centre of mass lands on the frame's centre, but keep the box inside.
    top = min(max(CROP_SIZE / 2.0 - com_r, 0.0), CROP_SIZE - new_h)
    left = min(max(CROP_SIZE / 2.0 - com_c, 0.0), CROP_SIZE - new_w)
    shift = np.float32([[1, 0, left], [0, 1, top]])
    out = cv2.warpAffine(small, shift, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR, borderValue=0.0)
    return _clip_unit(out)
