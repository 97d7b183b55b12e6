"""Clean a grayscale page before segmentation: flatten the background, find ink, deskew, drop rules.

Every function takes and returns numpy arrays and never mutates its input. Ink is
reported as *darkness*: how much darker than the local background a pixel is, as a
share of that background (0 = paper, 1 = black). Dividing by an estimated background
removes uneven lighting and greyish paper, and leaves security-print texture as faint
darkness that one global threshold can drop while keeping pen strokes.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# Largest image side, in pixels, on which the background and the skew are estimated:
# both vary slowly, and a ~600 px image keeps them under a few milliseconds on A4 pages.
ESTIMATE_SIDE = 600
# Gaps up to this many pixels inside a thin ruled line are bridged before it is measured.
RULE_GAP = 5
# Darkness (share of the paper's brightness) that is ink whatever the page: pale grey or
# red ballpoint scans at ~0.4 with blurred edges lower, security print stays under 0.2.
# 0.4 lost pale strokes on generated forms; 0.3 let scan noise into real cheque amounts.
INK_CERTAIN = 0.35
# Rules are searched on the page shrunk by this factor (they are long and simple).
LINE_FACTOR = 2
# A rule counts where its blurred darkness reaches this share of the ink level: thin
# rules fade when blurred and shrunk, and noise breaks them into dashes.
RULE_FAINT = 0.75
# Rows (on the shrunk page) between a comb wall's end and its rule: blur and antialiasing only.
WALL_REACH = 1
# Pixels beside a found rule also belong to it (antialiasing, residual skew).
RULE_EDGE = 2
# The best angle must sharpen the row profile by this factor over the page as it is:
# rules and text lines do it by far more, a handful of digits by chance only.
SKEW_GAIN = 1.1
# Below this many ink pixels (on the small image) the skew is not estimated: too little evidence.
MIN_SKEW_INK = 50


def _downsample_factor(shape: tuple[int, int]) -> int:
    return max(1, math.ceil(max(shape) / ESTIMATE_SIDE))


def estimate_background(gray: np.ndarray, window: int) -> np.ndarray:
    """Paper brightness under every pixel, (M, N) uint8, from a (M, N) uint8 page.

    A grey closing (max then min filter) wider than any pen stroke removes dark strokes;
    a median then smooths what is left. Computed on a downsampled copy for speed.
    ``window`` is the filter width in pixels of the full-size page.
    """
    rows, cols = gray.shape
    factor = _downsample_factor(gray.shape)
    small = cv2.resize(gray, (max(1, cols // factor), max(1, rows // factor)), interpolation=cv2.INTER_AREA)
    size = max(3, (window // factor) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (size, size))
    closed = cv2.morphologyEx(small, cv2.MORPH_CLOSE, kernel, borderType=cv2.BORDER_REPLICATE)
    closed = cv2.medianBlur(closed, min(size, 5) | 1)
    return cv2.resize(closed, (cols, rows), interpolation=cv2.INTER_LINEAR)


def darkness(gray: np.ndarray, window: int) -> np.ndarray:
    """(M, N) uint8 darkness, 0 = paper, 255 = black, relative to the local background.

    Saturating uint8 arithmetic throughout: pixels brighter than the paper are 0, and
    a black background (nothing brighter to compare with) is 0 as well.
    """
    background = estimate_background(gray, window)
    return cv2.divide(cv2.subtract(background, gray), background, scale=255.0)


def ink_threshold(dark: np.ndarray, floor: float) -> int:
    """Darkness level (0-255) above which a pixel is ink.

    Otsu's threshold over the pixels darker than half the floor (paper excluded, so it
    splits faint texture from pen strokes), never below ``floor`` (a share of 1) and
    never above INK_CERTAIN.
    """
    low = round(floor * 255)
    candidates = dark[dark > low // 2]
    if candidates.size < 2:
        return low
    otsu, _ = cv2.threshold(candidates.reshape(1, -1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    # Otsu may split pale handwriting from black print instead of texture from ink: never
    # go above INK_CERTAIN, darkness no texture reaches.
    return int(np.clip(otsu, low, max(low, round(INK_CERTAIN * 255))))


def estimate_skew(mask: np.ndarray, max_degrees: float) -> float:
    """Page skew in degrees (positive = content turned counter-clockwise), 0.0 when unsure.

    The angle whose row projection of the ink is sharpest (largest sum of squares):
    text lines and rules pile up into few rows only when they are level. Searched
    coarse (0.5°) then fine (0.1°) on a downsampled mask.
    """
    if max_degrees <= 0:
        return 0.0
    factor = _downsample_factor(mask.shape)
    small = mask[::factor, ::factor]
    rows, cols = np.nonzero(small)
    if rows.size < MIN_SKEW_INK:
        return 0.0
    rows = rows.astype(np.float64) - small.shape[0] / 2.0
    cols = cols.astype(np.float64) - small.shape[1] / 2.0

    def sharpness(angle: float) -> float:
        theta = math.radians(angle)
        projected = rows * math.cos(theta) + cols * math.sin(theta)
        counts = np.bincount(np.round(projected - projected.min()).astype(np.int64))
        return float(np.dot(counts, counts))

    coarse = np.arange(-max_degrees, max_degrees + 1e-9, 0.5)
    best = max(coarse, key=sharpness)
    fine = np.arange(best - 0.5, best + 0.5 + 1e-9, 0.1)
    best = float(max(fine, key=sharpness))
    # A few digits and no lines give no clear angle: keep the page as it is.
    if sharpness(best) <= sharpness(0.0) * SKEW_GAIN:
        return 0.0
    return float(np.clip(best, -max_degrees, max_degrees))


def rotation(shape: tuple[int, int], degrees: float) -> tuple[np.ndarray, tuple[int, int]]:
    """Affine (2, 3) float64 matrix that levels a page skewed by ``degrees``, and the
    (rows, cols) of a canvas that holds the whole rotated page."""
    rows, cols = shape
    # The content is turned by +degrees in image coordinates (rows down); turn it back.
    matrix = cv2.getRotationMatrix2D((cols / 2.0, rows / 2.0), -degrees, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    out_cols = math.ceil(rows * sin + cols * cos)
    out_rows = math.ceil(rows * cos + cols * sin)
    matrix[0, 2] += out_cols / 2.0 - cols / 2.0
    matrix[1, 2] += out_rows / 2.0 - rows / 2.0
    return matrix, (out_rows, out_cols)


def rotate(image: np.ndarray, matrix: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``image`` warped by ``matrix`` onto a zero canvas of ``shape`` (rows, cols)."""
    return cv2.warpAffine(image, matrix, (shape[1], shape[0]), flags=cv2.INTER_LINEAR, borderValue=0)


def find_lines(dark: np.ndarray, level: int, min_length: int, max_thickness: int) -> tuple[np.ndarray, np.ndarray]:
    """Ruled lines of a page.

    ``dark`` is the (M, N) uint8 darkness and ``level`` its ink threshold. Rules are
    horizontal and vertical runs at least ``min_length`` long, found by a grey opening
    with long kernels after a short blur along the run, so a thin rule that noise breaks
    into dashes still counts (at half the ink level); plus short vertical ticks that join
    two horizontal rules (comb box walls). Runs thicker than ``max_thickness`` are strokes
    or blocks, not rules. Rules are large: they are searched at half resolution.

    Returns
    -------
    lines : (M, N) uint8
        255 on the ink pixels that belong to a rule.
    rules : (R, 4) int64
        (x, y, w, h) of each horizontal rule, in pixels of ``dark``.
    """
    mask = np.where(dark > level, np.uint8(255), np.uint8(0))
    rows, cols = dark.shape
    factor = LINE_FACTOR if min(rows, cols) >= 4 * LINE_FACTOR * min_length else 1
    small = cv2.resize(dark, (max(1, cols // factor), max(1, rows // factor)), interpolation=cv2.INTER_AREA)
    length = max(3, min_length // factor)
    thick = max(1, max_thickness // factor) + 1
    gap = max(2, RULE_GAP // factor)
    faint = max(1, int(level * RULE_FAINT / factor))  # shrinking spreads a thin rule over twice the width

    def runs(size: tuple[int, int], blur: tuple[int, int]) -> np.ndarray:
        opened = cv2.morphologyEx(cv2.blur(small, blur), cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, size))
        return np.where(opened > faint, np.uint8(255), np.uint8(0))

    horizontal = runs((length, 1), (gap, 1))
    vertical = runs((1, length), (1, gap))
    # Runs that survive an opening across their direction are too thick to be rules.
    horizontal &= ~cv2.morphologyEx(horizontal, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, thick)))
    vertical &= ~cv2.morphologyEx(vertical, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (thick, 1)))
    lines = horizontal | vertical
    count, _, stats, _ = cv2.connectedComponentsWithStats(horizontal, connectivity=8)
    rules = stats[1:, :4].astype(np.int64) * factor
    if count > 1:
        # Comb walls: vertical runs at least a third of a rule's length, ending on horizontal rules.
        ticks = runs((1, max(3, length // 3)), (1, gap)) & ~vertical
        # A wall touches both rules; a digit's stroke that only comes close to them does not
        # (digits in comb cells often fill the cell to within a few pixels of its top rule).
        near = cv2.dilate(horizontal, cv2.getStructuringElement(cv2.MORPH_RECT, (3, 2 * WALL_REACH + 1)))
        count, labels, stats, _ = cv2.connectedComponentsWithStats(ticks, connectivity=8)
        keep = np.zeros(count, bool)
        for index in range(1, count):
            x, y, w, h, _ = stats[index]
            if w <= thick + 1 and near[y, x:x + w].any() and near[y + h - 1, x:x + w].any():
                keep[index] = True
        if keep.any():
            lines |= np.where(keep[labels], np.uint8(255), np.uint8(0))
    if factor > 1:
        lines = cv2.resize(lines, (cols, rows), interpolation=cv2.INTER_NEAREST)
    return _with_edges(lines, mask), rules


def _with_edges(lines: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A rule a hair off level or antialiased loses its edge pixels to the opening: take
    the ink within RULE_EDGE pixels of it too."""
    grow = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * RULE_EDGE + 1, 2 * RULE_EDGE + 1))
    return cv2.dilate(lines, grow) & mask


def remove_lines(mask: np.ndarray, lines: np.ndarray, max_thickness: int) -> np.ndarray:
    """``mask`` without ``lines``, ink restored where a stroke crosses a line.

    A stroke crossing a rule has ink on both sides of it: a closing across the line
    (kernel just longer than the line is thick) bridges the gap, and only the bridged
    pixels that lie on the line are put back.
    """
    if not lines.any():
        return mask.copy()
    cleaned = mask & ~lines
    span = 2 * max_thickness + 3
    across_h = cv2.morphologyEx(cleaned, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (1, span)))
    across_v = cv2.morphologyEx(cleaned, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (span, 1)))
    return cleaned | ((across_h | across_v) & lines & mask)
