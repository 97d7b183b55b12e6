"""Clean a grayscale page before segmentation: flatten the background, find ink, deskew, drop rules.

Every function takes and returns numpy arrays and never mutates its input. Ink is
reported as *darkness*: how much darker than the local background a pixel is, as a
share of that background (0 = paper, 1 = black). Dividing by an estimated background
removes uneven lighting and greyish paper, and leaves security-print texture as faint
darkness that one global threshold can drop while keeping pen strokes.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

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
# Rows (on the shrunk page) a wall may run on past its rule, out of the box: a drawn
# box's corners overshoot, where a digit's stroke stops short of the rule inside.
WALL_OVERSHOOT = 3
# Columns (on the shrunk page) a wall's end may stand beside its rule's end: a drawn box's
# rules stop short of its outer walls too, and a black-and-white scan's threshold wipes a
# thin rule's last pixels. Measured on 2026-12-08 against 3 columns (3 had beaten 1): 11
# fields more read right of the 1,670 on three fax sets, 1 more on each of the 100 and
# the 50 generated pages and on 40 black-and-white scans at 200 dpi, 1 fewer of the 682
# on the 40 held-out real writers' pages; spurious fields fewer on every set that had
# any (9 and 12 columns scored alike; 6 a little lower).
WALL_SIDE_REACH = 9
# A comb's walls stand at one pitch (its cell width). In a row of at least COMB_WALLS walls
# whose gaps all lie within PITCH_SLACK of the pitch, a tick nearer than that to both its
# neighbours, its two gaps adding up to the pitch, is a digit's stroke filling its cell (a
# tall 1, a 7's stem), not a wall: taken for one, the digit was erased and its empty cell
# cut the field in two. Where such a row misses a wall (a gap of two pitches), a thin tick
# touching one of its rules at the gap's middle is that wall, carried past its rule.
COMB_WALLS = 4
PITCH_SLACK = 0.2
# A tick touching neither rule of a comb, on its pitch where it misses a wall, is a wall when
# at least this share of the walls' height tall and its top within the rest of it from
# theirs: on a fax both rules may be wiped at a comb's end (measured on 2026-12-08:
# 7 fields more read right of the 1,670 on three sets of generated faxes, 2 on the 50
# gray pages, the rest the same).
BARE_WALL = 0.8
# A stretch of a line at least this many pixels thicker than the line is along most of
# its length, touching ink, is a stroke lying along it (antialiasing and the pixel steps
# of a rule a hair off level add one).
ALONG_EXTRA = 2
# Pixels beside a found rule also belong to it (antialiasing, residual skew).
RULE_EDGE = 2
# On a black-and-white page a thin rule a hair off level is cut into dashes by the
# threshold (each pixel row it crosses keeps a stretch); so is a page border or a table
# column a hair off upright. Thin runs along one row (or column) at least DASH_PIECE of
# the rule length long, no further apart than DASH_BRIDGE of it, join into a rule when
# DASH_PIECES or more of them cover DASH_COVER of its length. Not on gray pages: there
# the level strokes of neighbouring digits chain so too (3 fields fewer read right on the
# 100 generated pages). Measured on 2026-12-08 on three sets of 40 generated faxes (the
# first two chose the constants): fields read right 65.9 -> 76.1%, 64.3 -> 79.6% and
# 71.9 -> 84.6%; the columns then took spurious fields from 0.58, 0.73 and 0.98 a page
# to 0.55, 0.63 and 0.60 (a border in dashes read as a column of 1s).
DASH_PIECE = 0.2
DASH_BRIDGE = 0.5
DASH_PIECES = 3
DASH_COVER = 0.5
# A horizontal run shorter than the tallest digit is a rule only when it is at least this
# many times as long as the ink it lies in is tall: a 4's or 7's bar is shorter than its digit.
RULE_ASPECT = 1.2
# ... and, when that ink is taller than a rule, bare in this share of its columns:
RULE_BARE = 0.25
# ... that is, without ink in the rows beyond the RULE_HALO rows (of the shrunk page)
# next to it, which are still the rule's own blurred edge.
RULE_HALO = 2
# The best angle must sharpen the row profile by this factor over the page as it is:
# rules and text lines do it by far more, a handful of digits by chance only.
SKEW_GAIN = 1.1
# Below this many ink pixels (on the small image) the skew is not estimated: too little evidence.
MIN_SKEW_INK = 50


def _downsample_factor(shape: tuple[int, int]) -> int:
    return max(1, math.ceil(max(shape) / ESTIMATE_SIDE))


def _shrink(image: np.ndarray, factor: int) -> np.ndarray:
    """``image`` averaged over ``factor``-square blocks; the last rows and columns that
    fill no whole block are left out. OpenCV's area resize takes a fast path for an exact
    integer factor only: 2339 rows to 1169 cost ~20× as much (10 against 0.5 ms)."""
    rows, cols = max(1, image.shape[0] // factor), max(1, image.shape[1] // factor)
    return cv2.resize(image[:rows * factor, :cols * factor], (cols, rows), interpolation=cv2.INTER_AREA)


def _enlarge(small: np.ndarray, shape: tuple[int, int], factor: int) -> np.ndarray:
    """Undo ``_shrink`` on a mask: each pixel becomes a ``factor``-square block where it
    was taken from; the rows and columns ``_shrink`` left out repeat their neighbours."""
    rows, cols = shape
    big = cv2.resize(small, (small.shape[1] * factor, small.shape[0] * factor), interpolation=cv2.INTER_NEAREST)
    big = big[:rows, :cols]
    return cv2.copyMakeBorder(big, 0, rows - big.shape[0], 0, cols - big.shape[1], cv2.BORDER_REPLICATE)


def estimate_background(gray: np.ndarray, window: int) -> np.ndarray:
    """Paper brightness under every pixel, (M, N) uint8, from a (M, N) uint8 page.

    A grey closing (max then min filter) wider than any pen stroke removes dark strokes;
    a median then smooths what is left. Computed on a downsampled copy for speed.
    ``window`` is the filter width in pixels of the full-size page.
    """
    rows, cols = gray.shape
    factor = _downsample_factor(gray.shape)
    small = _shrink(gray, factor)
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


def ink_mask(dark: np.ndarray, level: int) -> np.ndarray:
    """(M, N) uint8: 255 where ``dark`` is above ``level``, else 0 (``cv2.threshold``: a
    fraction of ``np.where``'s time on a full page)."""
    return cv2.threshold(dark, level, 255, cv2.THRESH_BINARY)[1]


def components(mask: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """8-connected components of a uint8 mask: (count, labels, stats) as from
    ``cv2.connectedComponentsWithStats``.

    Labels are uint16 when that type surely holds them: OpenCV gathers the stats two to
    three times as fast then (9 against 22 ms on an A4 page). A mask never has more
    components than runs of ink along its rows, and a page of handwriting has some ten
    thousand (against some ninety thousand ink pixels).
    """
    runs = cv2.countNonZero(mask[:, :1]) + cv2.countNonZero(mask[:, 1:] & ~mask[:, :-1])
    ltype = cv2.CV_16U if runs < np.iinfo(np.uint16).max else cv2.CV_32S
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8, ltype=ltype)
    return count, labels, stats


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


@dataclass(frozen=True)
class RuledLines:
    """A page's ruled lines, as masks of the ink pixels that belong to them."""

    horizontal: np.ndarray  # (M, N) uint8, 255 on horizontal rules
    vertical: np.ndarray  # (M, N) uint8, 255 on vertical rules and comb walls
    rules: np.ndarray  # (R, 4) int64: (x, y, w, h) of each horizontal rule
    columns: np.ndarray  # (C, 4) int64: (x, y, w, h) of each table column or frame side

    @functools.cached_property
    def ink(self) -> np.ndarray:
        """(M, N) uint8, 255 on any line's ink: the two masks together, joined once a page."""
        return self.horizontal | self.vertical


def find_lines(dark: np.ndarray, level: int, min_length: int, max_thickness: int,
               tallest_digit: int, print_nearby: bool = True, dashed: bool = False) -> RuledLines:
    """Ruled lines of a page.

    ``dark`` is the (M, N) uint8 darkness and ``level`` its ink threshold. Rules are
    straight runs found by a grey opening with long kernels after a short blur along the
    run, so a thin rule that noise breaks into dashes still counts (at half the ink level).
    Runs thicker than ``max_thickness`` are strokes or blocks, not rules. A digit's own
    strokes can be as long as a short rule (a 4's bar, a tall 1), so:

    - a vertical run is a rule when it is longer than ``tallest_digit``, or when it is a
      wall joining two horizontal rules (comb boxes, table cells);
    - a horizontal run is a rule when it is longer than ``tallest_digit``, or at least
      ``min_length`` and wider than the ink it lies in is tall (RULE_ASPECT): a bar
      inside a digit is shorter than the digit is tall, an underline is not. On a page
      that may hold print (``print_nearby``) it must also show bare between the strokes
      on it, or it is the bridged feet of a printed word (see ``_rules``).

    With ``dashed`` (a black-and-white page), dashes in a row or a column are joined
    into rules too (see DASH_PIECE). Rules are large: they are searched at half
    resolution.
    """
    mask = ink_mask(dark, level)
    rows, cols = dark.shape
    factor = LINE_FACTOR if min(rows, cols) >= 4 * LINE_FACTOR * min_length else 1
    small = _shrink(dark, factor)
    length = max(3, min_length // factor)
    long_length = max(length, tallest_digit // factor)
    thick = max(1, max_thickness // factor) + 1
    gap = max(2, RULE_GAP // factor)
    faint = max(1, int(level * RULE_FAINT / factor))  # shrinking spreads a thin rule over twice the width

    def runs(size: tuple[int, int], blur: tuple[int, int]) -> np.ndarray:
        opened = cv2.morphologyEx(cv2.blur(small, blur), cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, size))
        return ink_mask(opened, faint)

    ink = ink_mask(small, faint)
    horizontal = runs((length, 1), (gap, 1))
    vertical = _taller_than(runs((1, length), (1, gap)), long_length)
    if dashed:
        horizontal |= _dashed_rules(ink, length, thick)
        vertical |= _dashed_rules(np.ascontiguousarray(ink.T), length, thick).T
    # Runs that survive an opening across their direction are too thick to be rules.
    horizontal &= ~cv2.morphologyEx(horizontal, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, thick)))
    vertical &= ~cv2.morphologyEx(vertical, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (thick, 1)))
    horizontal, rules = _rules(horizontal, ink & ~vertical, long_length, thick, print_nearby)
    if rules.shape[0]:
        vertical |= _comb_walls(runs((1, max(3, length // 3)), (1, gap)) & ~vertical, horizontal, thick)
    # A rule a hair off level or antialiased loses its edge pixels to the opening: the ink
    # within RULE_EDGE pixels of it belongs to it too (grown on the small page, for speed).
    grow = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * max(1, RULE_EDGE // factor) + 1,) * 2)
    columns = _columns(vertical, rules, long_length, thick)
    horizontal, vertical = cv2.dilate(horizontal, grow), cv2.dilate(vertical, grow)
    return RuledLines(_on_page(horizontal, mask, factor, vertical=False),
                      _on_page(vertical, mask, factor, vertical=True), rules * factor, columns * factor)


def _dashed_rules(mask: np.ndarray, length: int, thick: int) -> np.ndarray:
    """(M, N) uint8 mask, 255 on rows of level dashes in ``mask`` that make a horizontal
    rule at least ``length`` long, the gaps between them bridged (see DASH_PIECE); on
    ``mask.T``, the vertical ones."""
    dashes = cv2.morphologyEx(mask, cv2.MORPH_OPEN,
                              cv2.getStructuringElement(cv2.MORPH_RECT, (max(3, round(DASH_PIECE * length)), 1)))
    dashes &= ~cv2.morphologyEx(dashes, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, thick)))
    bridge = cv2.getStructuringElement(cv2.MORPH_RECT, (max(3, round(DASH_BRIDGE * length)), 1))
    count, labels, stats = components(cv2.morphologyEx(dashes, cv2.MORPH_CLOSE, bridge))
    keep = (stats[:, 2] >= length) & (stats[:, 3] <= thick)
    keep[0] = False
    for index in np.flatnonzero(keep):
        x, y, w, h = stats[index, :4]
        covered = (dashes[y:y + h, x:x + w] > 0).any(axis=0)
        pieces = int(covered[0]) + np.count_nonzero(covered[1:] & ~covered[:-1])
        keep[index] = pieces >= DASH_PIECES and covered.mean() >= DASH_COVER
    return _painted(labels, stats, keep)


def _on_page(small: np.ndarray, mask: np.ndarray, factor: int, vertical: bool) -> np.ndarray:
    """The ``mask`` pixels under ``small`` (a line mask on the page shrunk by ``factor``).

    Lines cover a small share of a page: only the windows around them (bands across
    the lines, cut to their extent along them) are enlarged, not the whole page.
    """
    page = np.zeros_like(mask)
    rows, cols = mask.shape
    for row_span, col_span in _line_windows(small, 1, vertical):
        # A window at the small page's far edge also covers the rows and columns
        # ``_shrink`` left out.
        top, left = row_span.start * factor, col_span.start * factor
        bottom = rows if row_span.stop == small.shape[0] else row_span.stop * factor
        right = cols if col_span.stop == small.shape[1] else col_span.stop * factor
        window = small[row_span, col_span]
        big = _enlarge(window, (bottom - top, right - left), factor) if factor > 1 else window
        page[top:bottom, left:right] = big & mask[top:bottom, left:right]
    return page


def _taller_than(mask: np.ndarray, height: int) -> np.ndarray:
    """The connected components of ``mask`` at least ``height`` rows tall."""
    count, labels, stats = components(mask)
    keep = stats[:, 3] >= height
    keep[0] = False
    return _painted(labels, stats, keep)


def _painted(labels: np.ndarray, stats: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """(M, N) uint8 mask, 255 on the components whose ``keep`` is set. Painted box by box:
    rules and walls are a few dozen components, and a lookup over every pixel of the
    page cost more than all of them together."""
    out = np.zeros(labels.shape, np.uint8)
    for index in np.flatnonzero(keep):
        x, y, w, h = stats[index, :4]
        out[y:y + h, x:x + w][labels[y:y + h, x:x + w] == index] = 255
    return out


def _rules(horizontal: np.ndarray, ink: np.ndarray, long_length: int, thick: int,
           print_nearby: bool) -> tuple[np.ndarray, np.ndarray]:
    """The ``horizontal`` runs that are rules, and their (R, 4) (x, y, w, h) boxes.

    Runs shorter than ``long_length`` must be at least RULE_ASPECT times as long as the
    tallest ``ink`` component they touch is tall; shorter ones are bars of digits. With
    ``print_nearby``, where that ink is taller than a rule (``thick``), the run must also
    be bare (no ink just above or below it) in RULE_BARE of its columns: a rule shows
    between and beside the digits written on it, while the blur bridges the feet of a
    printed word into a run that has letters over all its ink.
    """
    count, runs_of, stats = components(horizontal)
    keep = np.ones(count, bool)
    keep[0] = False
    short = np.flatnonzero(stats[1:, 2] < long_length) + 1
    if short.size:
        _, ink_of, ink_stats = components(ink)
        for index in short:  # a few dozen short runs: look only inside each one's box
            x, y, w, h = stats[index, :4]
            touched = ink_of[y:y + h, x:x + w][runs_of[y:y + h, x:x + w] == index]
            touched = touched[touched > 0]
            tallest = ink_stats[touched, 3].max() if touched.size else 0
            keep[index] = w >= RULE_ASPECT * tallest
            if print_nearby and keep[index] and tallest > thick:
                above = ink[max(0, y - RULE_HALO - thick):max(0, y - RULE_HALO), x:x + w]
                below = ink[y + h + RULE_HALO:y + h + RULE_HALO + thick, x:x + w]
                around = above.any(axis=0) | below.any(axis=0)
                keep[index] = (ink[y:y + h, x:x + w].any(axis=0) & ~around).mean() >= RULE_BARE
    return _painted(runs_of, stats, keep), stats[keep, :4].astype(np.int64)


def _comb_walls(ticks: np.ndarray, horizontal: np.ndarray, thick: int) -> np.ndarray:
    """The vertical ``ticks`` (short runs) that join two horizontal rules: comb box walls.

    A wall touches both rules; a digit's stroke that only comes close to them does not
    (digits in comb cells often fill the cell to within a few pixels of its top rule).
    """
    # Where a bold stroke touches a wall, the two make one run too wide for a wall (wider
    # than thick + 1): those rows are left out, and the wall's rows above and below them
    # stand thin on their own, each reaching one rule (see _walls_in_gaps).
    too_wide = cv2.morphologyEx(ticks, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (thick + 2, 1)))
    ticks = ticks & ~too_wide
    reach = np.ones((WALL_REACH + WALL_OVERSHOOT + 1, 2 * WALL_SIDE_REACH + 1), np.uint8)
    near_top = cv2.dilate(horizontal, reach, anchor=(WALL_SIDE_REACH, WALL_REACH))
    near_bottom = cv2.dilate(horizontal, reach, anchor=(WALL_SIDE_REACH, WALL_OVERSHOOT))
    count, labels, stats = components(ticks)
    x, y, w, h = (stats[:, k] for k in range(4))
    top = np.zeros(count, bool)
    bottom = np.zeros(count, bool)
    for offset in range(thick + 1):  # the columns of a tick thin enough to be a wall
        column = np.minimum(x + offset, horizontal.shape[1] - 1)
        top |= (offset < w) & (near_top[y, column] > 0)
        bottom |= (offset < w) & (near_bottom[y + h - 1, column] > 0)
    thin = w <= thick + 1
    thin[0] = False
    keep = thin & top & bottom
    keep[_strokes_off_pitch(stats, np.flatnonzero(keep))] = False
    # A wall found past a comb's end makes the next one past it a wall too: a comb whose
    # rules stop short (a fax's threshold wiped their ends) has several such walls in a row.
    one_rule = thin & (top ^ bottom)
    no_rule = thin & ~top & ~bottom
    while True:
        found = _walls_in_gaps(stats, np.flatnonzero(keep), np.flatnonzero(one_rule & ~keep),
                               np.flatnonzero(no_rule & ~keep))
        if found.size == 0:
            break
        keep[found] = True
    return _painted(labels, stats, keep)


def _comb_rows(stats: np.ndarray, ticks: np.ndarray) -> list[np.ndarray]:
    """The rows of more than COMB_WALLS ``ticks`` (rows of component ``stats``) sharing half
    the rows of the shorter, each as positions into ``ticks`` from left to right."""
    y, h = stats[ticks, 1].astype(np.float64), stats[ticks, 3].astype(np.float64)
    centre = stats[ticks, 0] + stats[ticks, 2] / 2.0
    rows = {tuple(np.flatnonzero(members)) for members in _share_rows(y, h, y[:, None], h[:, None])}
    return [np.asarray(row)[np.argsort(centre[list(row)], kind="stable")] for row in rows if len(row) > COMB_WALLS]


def _share_rows(top: np.ndarray, height: np.ndarray, other_top, other_height) -> np.ndarray:
    """Whether row spans (``top``, ``height``) and (``other_top``, ``other_height``), which
    broadcast, share at least half the rows of the shorter: ticks of one comb row."""
    overlap = np.minimum(top + height, other_top + other_height) - np.maximum(top, other_top)
    return overlap >= 0.5 * np.minimum(height, other_height)


def _strokes_off_pitch(stats: np.ndarray, ticks: np.ndarray) -> np.ndarray:
    """The ``ticks`` (rows of component ``stats``) that stand between two walls of a
    regular comb row, off its pitch (see COMB_WALLS): strokes, not walls.

    The pitch is the upper quartile of the gaps between neighbours, which strokes
    (splitting a gap in two) pull down less than the median.
    """
    centre = stats[ticks, 0] + stats[ticks, 2] / 2.0
    strokes = set()
    for order in _comb_rows(stats, ticks):
        gaps = np.diff(centre[order])
        pitch = np.percentile(gaps, 75)
        if pitch <= 0:
            continue
        left, right = gaps[:-1], gaps[1:]
        off = np.maximum(left, right) < (1 - PITCH_SLACK) * pitch
        off &= np.abs(left + right - pitch) <= PITCH_SLACK * pitch
        walls = np.ones(order.size, bool)
        walls[1:-1] = ~off
        # Without those strokes every gap must be the pitch: a table's irregular columns stay walls.
        if off.any() and (np.abs(np.diff(centre[order[walls]]) - pitch) <= PITCH_SLACK * pitch).all():
            strokes.update(order[1:-1][off].tolist())
    return ticks[sorted(strokes)]


def _walls_in_gaps(stats: np.ndarray, walls: np.ndarray, candidates: np.ndarray,
                   bare: np.ndarray) -> np.ndarray:
    """The ``candidates`` (thin ticks touching one rule of a comb) standing where a regular
    comb row of ``walls`` misses one, a gap of two pitches or one pitch past its last wall
    at either end: walls too. A wall whose end a digit's ink or a box corner's overshoot
    carries past its rule fails the two-rule test, and left on the page it reads as a 1.
    The ``bare`` ticks (touching no rule: both rules wiped there) count as well when they
    stand as tall as the row's walls, from their top (BARE_WALL)."""
    candidates = np.concatenate([candidates, bare])
    if candidates.size == 0:
        return candidates
    is_bare = np.arange(candidates.size) >= candidates.size - bare.size
    centre = stats[walls, 0] + stats[walls, 2] / 2.0
    found = []
    cx = stats[candidates, 0] + stats[candidates, 2] / 2.0
    cy, ch = stats[candidates, 1].astype(np.float64), stats[candidates, 3].astype(np.float64)
    for order in _comb_rows(stats, walls):
        gaps = np.diff(centre[order])
        pitch = np.median(gaps)
        double = np.abs(gaps - 2 * pitch) <= PITCH_SLACK * pitch
        if pitch <= 0 or not (double | (np.abs(gaps - pitch) <= PITCH_SLACK * pitch)).all():
            continue
        top = np.median(stats[walls[order], 1])
        height = np.median(stats[walls[order], 3])
        in_row = _share_rows(cy, ch, top, height)
        in_row &= ~is_bare | ((ch >= BARE_WALL * height) & (np.abs(cy - top) <= (1 - BARE_WALL) * height))
        # In a two-pitch gap's middle, or one pitch past either end (the comb's outer side).
        ends = [centre[order][0] - pitch, centre[order][-1] + pitch]
        for middle in list((centre[order][:-1] + gaps / 2.0)[double]) + ends:
            found += np.flatnonzero(in_row & (np.abs(cx - middle) <= PITCH_SLACK * pitch)).tolist()
    return candidates[sorted(set(found))]


def _columns(vertical: np.ndarray, rules: np.ndarray, long_length: int, thick: int) -> np.ndarray:
    """(C, 4) boxes of the ``vertical`` rules that part what lies on either side: longer
    than ``long_length``, or running on through a rule of ``rules`` that long, as a
    table's columns do from row to row. A comb's walls stop at its rules; shorter runs
    (security print's waves) do not make a wall a column.
    """
    stats = components(vertical)[2][1:, :4].astype(np.int64)
    if stats.shape[0] == 0 or rules.shape[0] == 0:
        return stats[stats[:, 3] >= long_length]
    x, y, w, h = (stats[:, k][:, None] for k in range(4))
    rx, ry, rw, rh = (rules[:, k][None, :] for k in range(4))
    centre = x + w // 2
    margin = thick + WALL_OVERSHOOT
    crossed = (rx <= centre) & (centre < rx + rw) & (ry > y + margin) & (ry + rh < y + h - margin)
    crossed &= rw >= long_length
    return stats[(stats[:, 3] >= long_length) | crossed.any(axis=1)]


def grow_into_pale_ink(mask: np.ndarray, dark: np.ndarray, floor: int, steps: int,
                       lines: RuledLines) -> np.ndarray:
    """``mask`` grown by up to ``steps`` pixels into the pale ink next to it: pixels of
    ``dark`` above ``floor`` reached from ``mask`` through such pixels alone (a geodesic
    dilation), never onto or next to ``lines``' ink (a rule's blurred edge is not a
    stroke's). A break in a stroke mends; a pale pattern that touches a stroke adds at
    most ``steps`` pixels to it."""
    pale = ink_mask(dark, floor) & ~cv2.dilate(lines.ink, np.ones((5, 5), np.uint8))
    pale |= mask
    kernel = np.ones((3, 3), np.uint8)
    grown = mask
    for _ in range(steps):
        grown = cv2.dilate(grown, kernel) & pale
    return grown


def remove_lines(mask: np.ndarray, lines: RuledLines, max_thickness: int) -> np.ndarray:
    """``mask`` without ``lines``, ink restored where a stroke crosses or touches a line.

    A stroke crossing a rule has ink on both sides of it: a closing across the line
    (kernel just longer than the line is thick) bridges the gap, and the bridged pixels
    on the line are put back. A stroke touching a rule from one side (a 5's bar or a 0's
    top written along a comb's top rule) keeps the rule's pixels in the columns (rows,
    for vertical lines) where its ink meets the rule. A stroke lying along a line (a 7's
    bar drawn on a box's top, a 0's side on a comb's wall) keeps the stretch where it
    makes the line thicker.
    """
    if not lines.ink.any():
        return mask.copy()
    cleaned = mask & ~lines.ink
    restored = cleaned.copy()
    _mend(restored, cleaned, lines.horizontal, max_thickness, vertical=False)
    _mend(restored, cleaned, lines.vertical, max_thickness, vertical=True)
    return restored


def _bands(profile: np.ndarray, pad: int) -> list[slice]:
    """Slices around the runs of nonzero ``profile`` entries, widened by ``pad`` and
    merged where less than ``2 * pad`` apart."""
    at = np.flatnonzero(profile)
    if at.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(at) > 2 * pad)
    return [slice(max(0, start - pad), stop + pad + 1)
            for start, stop in zip(np.r_[at[0], at[breaks + 1]], np.r_[at[breaks], at[-1]])]


def _line_windows(lines: np.ndarray, pad: int, vertical: bool) -> list[tuple[slice, slice]]:
    """(rows, columns) windows around the lines of a mask, clipped to it: bands across the
    lines (``_bands``), each cut to its lines' extent along them (comb walls span a few
    rows only) widened by ``pad``."""
    rows, cols = lines.shape
    length, breadth = (rows, cols) if vertical else (cols, rows)
    windows = []
    for band in _bands(lines.any(axis=0 if vertical else 1), pad):
        x, y, w, h = cv2.boundingRect(lines[:, band] if vertical else lines[band])
        start, stop = (y, y + h) if vertical else (x, x + w)
        along = slice(max(0, start - pad), min(stop + pad, length))
        across = slice(band.start, min(band.stop, breadth))
        windows.append((along, across) if vertical else (across, along))
    return windows


def _strokes_along(line: np.ndarray, contact: np.ndarray, vertical: bool) -> np.ndarray | None:
    """The pixels of ``line`` (uint8 mask) that a stroke lying along it adds, or None.

    A 7's bar drawn on a box's top rule, or a 0's side along a comb's wall, thickens the
    line where it lies: across the line there, its run of pixels is at least ALONG_EXTRA
    longer than the line's usual run (the median over that line). Such stretches are
    kept where they meet ``contact``, the line pixels touching ink off the line. Lines
    are told apart by the empty rows (columns, for vertical lines) between them.
    """
    out = None
    if cv2.countNonZero(contact) == 0:
        return out
    across_axis = 0 if vertical else 1
    inked = line.max(axis=across_axis) > 0
    touched_at = contact.max(axis=across_axis) > 0
    bounds = np.flatnonzero(np.diff(np.r_[0, inked.view(np.int8), 0]))
    for first, last in zip(bounds[::2], bounds[1::2]):
        if not touched_at[first:last].any():
            continue
        strip = (slice(None), slice(first, last)) if vertical else (slice(first, last), slice(None))
        own = line[strip] > 0
        # Runs across the line, one after another in a flat array; a zero between lines.
        across = own if vertical else own.T
        flat = np.hstack([across, np.zeros((across.shape[0], 1), bool)]).ravel()
        edges = np.diff(np.r_[np.int8(0), flat.view(np.int8), np.int8(0)])
        starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        lengths = stops - starts
        thick = lengths >= float(np.median(lengths)) + ALONG_EXTRA
        if not thick.any():
            continue
        marks = (np.bincount(starts[thick], minlength=flat.size + 1)
                 - np.bincount(stops[thick], minlength=flat.size + 1))
        thick_across = (np.cumsum(marks[:-1]) > 0).reshape(across.shape[0], across.shape[1] + 1)[:, :-1]
        thick_mask = (thick_across if vertical else thick_across.T).astype(np.uint8)
        _, piece_of = cv2.connectedComponents(thick_mask)
        touched = np.unique(piece_of[(contact[strip] > 0) & (thick_mask > 0)])
        keep = np.isin(piece_of, touched[touched > 0])
        if out is None:
            out = np.zeros_like(line)
        out[strip][keep] = line[strip][keep]
    return out


def _mend(restored: np.ndarray, cleaned: np.ndarray, line: np.ndarray, max_thickness: int,
          vertical: bool) -> None:
    """Put back, in ``restored`` (written in place), the pixels of ``line`` that strokes
    cross or touch.

    Crossing: a closing across the line bridges ``cleaned`` ink from one side to the
    other. Touching: the line pixels just beside ink, grown across the line by more than
    it is thick, and the thick stretches that ink touches (``_strokes_along``). Only
    windows around the lines are worked on (rules cover a small share of a page).
    """
    span = 2 * max_thickness + 3
    reach = max_thickness + 2 * RULE_EDGE

    def across_lines(size: int) -> np.ndarray:
        """A kernel ``size`` pixels long across the lines, one pixel along them."""
        return cv2.getStructuringElement(cv2.MORPH_RECT, (size, 1) if vertical else (1, size))

    pad = max(span, reach + 1)
    bridge, step, across = across_lines(span), across_lines(3), across_lines(2 * reach + 1)
    for window in _line_windows(line, pad, vertical):
        on_line = line[window]
        crossed = cv2.morphologyEx(cleaned[window], cv2.MORPH_CLOSE, bridge) & on_line
        ink = restored[window] | crossed
        contact = cv2.dilate(ink, step) & on_line
        ink |= cv2.dilate(contact, across) & on_line
        along = _strokes_along(on_line, contact, vertical)
        if along is not None:
            ink |= along
        restored[window] = ink
