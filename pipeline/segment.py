"""Find handwritten digits on a page and propose how to read each piece of ink.

The page is flattened and thresholded (``preprocess``), levelled, and cleared of ruled
lines; its ink grows a few pixels into the pale ink joined to it, so that a stroke
broken where the pen paled is one component (crops keep the ink as found); components
are linked into fields (pieces side by side, of similar height, closer than
``field_gap`` digit heights). Inside a field, fragments are merged into the digit they
belong to (a 5's detached bar) or dropped as punctuation, and blobs too wide for one
digit get cut hypotheses for the classifier to judge (``group.read_fields``). Typeset
text is dropped by its exact baseline and its few exact heights. A short image is a
cut-out field (a cheque amount box) and is read as one field whatever its gaps. A scan
finer than 150-200 dpi is read at a smaller size (at once when its file states its
resolution, else again), a page written with a thin or pale pen again with a lower ink
level.

Work happens on the levelled (and perhaps shrunk) page; every box is mapped back to the
original page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline import preprocess
from pipeline.config import SegmentConfig
from pipeline.normalize import CROP_SIZE, normalize_digit, percentile

# (x, y, w, h) in pixels of the original page image: x is the column, y the row.
Box = tuple[int, int, int, int]

# Segmentation doubts a field can carry (``FieldLayout.reasons``), declared once.
ODD_SIZE = "odd_size"  # a blob much shorter or taller than the field's other digits
SEGMENT_REASONS = (ODD_SIZE,)

# A page whose gray levels span less than this has no ink to find (blank or all black).
MIN_CONTRAST = 16
# Typical digit height (see ``_digit_heights``), in pixels, above which a page is taken
# for a scan finer than the 150-200 dpi the pixel sizes are set for. Generated forms and
# cheques at 150-200 dpi measure 64 at most (100 + 50 pages and samples/); the same pages
# at 300 dpi mostly measure more, at 600 dpi all of them.
FINE_SCAN_DIGIT_HEIGHT = 66
# How tall a fine scan's digits are made: mid-range for 150-200 dpi pages.
WORKING_DIGIT_HEIGHT = 40
# Re-reads of a fine scan at most: the first one's step can fall short when noise or
# security print scatters small blobs over the page.
MAX_RESCALES = 3
# The resolution the pixel sizes are set for. A page whose file states one finer than
# FINE_STATED_DPI (a scanner's 300 or 600 dpi, a PDF rasterized at input.pdf_dpi) is
# first read shrunk to it: one reading at the working size instead of a full-size one
# and then another.
SETTINGS_DPI = 200
FINE_STATED_DPI = 240
# ...unless its digits come out shorter than this many min_digit_height at that size: the
# stated resolution overstates the scan (or the writing is tiny), and it is read full size.
STATED_DPI_SMALL = 1.5
# Median ink area of a page's digit blobs, in blob heights squared, below which the pen
# is taken for a thin or pale one. Its strokes fall in and out of the usual ink level, so
# digits come apart into pieces too small to keep; the page is read again with the ink
# level at its floor (``min_ink_darkness``). Generated pages of MNIST digits measure
# 0.225 at least (214 pages at 150-600 dpi); the same pages written with CVL's thinner-
# stroked real digits 0.20 on the median page. Not for a cut-out field: its security
# print reaches above the floor.
THIN_PEN_INK = 0.21
# On a thin-pen page even the floor breaks the palest stretches of a stroke: a blob's crop
# also takes ink above this share of the level that is joined to its own strokes and does
# not touch another piece's ink, looked for up to PALE_REACH pixels past its box.
PALE_INK = 0.5
PALE_REACH = 3
# On any other page a pen whose pressure comes and goes leaves stretches of a stroke below
# the ink level too: a blob's crop takes the ink joined to its strokes down to this share
# of their median darkness (when that is below the level; a dark pen's blobs stay as they
# are). A share of the stroke's own darkness, not of the level: growing every page's
# blobs down to a share of the level took the blur halo around dark strokes on 300 dpi
# scans (measured on 2026-11-25: -1.9 points of exact fields there).
PALE_STROKE = 0.6
# A pen whose pressure comes and goes, or a pale digit on a page of dark ones, leaves
# stretches of stroke below the page's ink level, and the digit falls apart into pieces
# too small to keep. Before components are found, the ink grows by up to PALE_GROWTH
# pixels into the ink above PALE_JOIN of the level joined to it: the breaks mend, while
# a cheque's pale background pattern touching a digit adds a few pixels at most.
# Measured on 2026-12-08: a growth of 1 to 6 pixels gains about alike (real writers'
# pages 63.1-63.9% of fields against 59.6%), 3 costs half 6's time; a join at 0.8 of
# the level loses the gain. A thin-pen page read at the floor grows too: its palest
# digits are fragments even there (real writers' pages 63.8% -> 68.1%).
PALE_JOIN = 0.6
PALE_GROWTH = 3
# Skews below this many degrees are not worth a resampling of the page.
MIN_ROTATION = 0.2
# Components smaller than this share of min_digit_height squared are specks (noise, dust).
SPECK_AREA = 0.08
# Pieces at least this share of min_digit_height take part in linking, so that the small
# letters of printed words join their capitals (and the word is recognised as text).
LINK_HEIGHT = 0.5
# Digits standing on one rule (comb row, underline) stay one field across gaps this wide, in heights.
RULE_GAP = 1.6
# A field whose pieces mostly (this share, and at least two) stand on one rule is written
# on it; a piece off the rule's ends and shorter than this share of their height is not
# handwriting of the field (a printed currency sign before an amount box).
RULED_SHARE = 0.5
BESIDE_RULE_HEIGHT = 0.8
# Two pieces side by side belong to one line when their rows overlap by this share of the shorter.
ROW_OVERLAP = 0.5
# ... and when their heights differ by less than this factor.
HEIGHT_RATIO = 2.0
# A short piece lies within a taller one's rows if it sticks out by at most this share of
# the taller one's height (a broken digit's piece beside whole digits).
PIECE_SLACK = 0.1
# Pieces overlapping by this share of the narrower one's width are parts of one digit
# (a broken 5 or 4), if together they are no taller than MERGED_HEIGHT digit heights.
MERGE_OVERLAP = 0.25
MERGED_HEIGHT = 1.4
# ... and so are pieces sharing this share of the narrower one's columns whose rows
# overlap, unless one lies wholly within the other's rows: a 7's bar that reaches down
# past the top of its stem, a 5's flag beside its body's shoulder. Digits side by side
# share a few columns at most, even when they touch.
NESTED_OVERLAP = 0.5
# Pieces one over the other, sharing MERGE_OVERLAP of the narrower one's columns, with a
# gap of at most STACK_GAP of the taller one's height and together at most STACK_SPAN of
# it, link into one field: a bold 7's bar that rule removal parted from its stem, a 5's
# halves. Their rows overlap too little to link side by side, and alone the bar was a
# field of its own. Two digits on consecutive lines are further apart or taller together.
STACK_GAP = 0.25
STACK_SPAN = 2.0
# Printed text: at least this share of pieces share one baseline, and there are at most
# this share as many distinct heights as pieces (descenders and punctuation disagree).
PRINTED_SHARE = 0.6
# ... and at least this many pieces on that baseline.
PRINTED_MIN = 3
# Steepest baseline slope (rows per column) taken for print: about the degree that
# deskewing may leave, as where a heading is printed askew of the page's handwriting.
# Measured on 2026-12-08 against 0.01 (half a degree): the same fields read on every
# generated set but one spurious field fewer on the 60 pages of seed 12 and one more
# field read at 300 dpi; 0.03 read one field fewer on the 100 real writers' pages and
# one more on the 40 of seed 12.
PRINTED_LEAN = 0.02
# Small digits (trailing zeros written small) keep at least this share of the field's
# digit height in both directions; punctuation is thinner or flatter.
SMALL_DIGIT = 0.28
# Blobs outside this range of the field's digit height raise ODD_SIZE.
ODD_RANGE = (0.55, 1.6)
# Pieces are shrunk to at most this many pixels a side before normalize_digit: more than
# twice its 20-pixel box, so no detail is lost, and its stroke measure stays fast.
NORMALIZE_SIDE = 48
# A blob this many times as wide as the field's median blob may be two touching digits
# (a "1" leaning on an "8" is narrower than touch_aspect heights).
WIDE_BLOB = 1.7
# Neighbouring blobs may be one digit in two strokes (a 4's two strokes, a 0 in two arcs,
# a 1 and its flag: real writers lift the pen, and a thin stroke breaks at the ink level)
# when they are at most MERGE_GAP digit heights apart, together no wider than tall, and
# one of them at most MERGE_SHORT of their joint height: two whole digits side by side
# are wider than that together, or both full height. The classifier decides.
MERGE_GAP = 0.1
MERGE_SHORT = 0.85
# Touching digits: at most this many in one blob (amounts like "000" run together), and a
# blob is cut into n pieces only if it is at least (n - 1) * PIECE_WIDTH digit heights wide.
MAX_PIECES = 5
PIECE_WIDTH = 0.6
# A lone stroke as thin as a rule whose end comes this close to a rule (share of its
# height) ran into it: a rule's remnant, not a 1.
REMNANT_CLEARANCE = 0.15
# A blob narrower than a digit height is cut only at a waist, a column whose ink spans at
# most this share of its rows: two touching digits meet in a short bridge, while a single
# wide digit (a 0, a 2) spans nearly its full height in its middle columns.
NARROW_WAIST = 0.5


@dataclass(frozen=True)
class Candidate:
    """One piece of ink proposed as a single digit."""

    bbox: Box
    crop: np.ndarray  # (28, 28) float32 in [0, 1], ink 1: ``normalize_digit``'s output


@dataclass(frozen=True)
class Blob:
    """Ink read as one digit, or cut into several: the classifier picks the reading."""

    bbox: Box
    readings: tuple[tuple[Candidate, ...], ...]  # readings[0] is uncut; later ones are cuts
    # Two neighbouring blobs proposed as one digit in two strokes (_merge_hypotheses):
    # readings[0] reads them together, readings[1] apart, each piece as an uncut blob.
    merged: bool = False


@dataclass(frozen=True)
class FieldLayout:
    """One handwritten number: its blobs in reading order. ``cut_out``: the whole page is
    this one number (a cheque's amount box cut out by another system), so no print lies
    among its blobs."""

    bbox: Box
    blobs: tuple[Blob, ...]
    reasons: tuple[str, ...]  # segmentation doubts, e.g. "odd_size"
    cut_out: bool = False


@dataclass(frozen=True)
class _PaleInk:
    """What a page's blobs grow by (see PALE_INK and PALE_STROKE): its ink ``level``,
    whether it is read at the floor, and which component labels are specks (a lookup by
    label). A speck's ink does not bar the way as another piece's ink does: at the floor
    a pale stroke's darker spots are specks of their own."""

    level: int
    at_floor: bool
    specks: np.ndarray


@dataclass(frozen=True)
class PageLayout:
    width: int
    height: int
    skew_degrees: float
    fields: tuple[FieldLayout, ...]  # reading order


def _as_gray(gray: np.ndarray) -> np.ndarray:
    gray = np.asarray(gray)
    if gray.ndim != 2:
        raise ValueError(f"gray must be a 2-D (M, N) array, got shape {gray.shape}")
    if gray.dtype == np.uint8:
        return gray
    if gray.dtype == bool:
        return np.where(gray, np.uint8(255), np.uint8(0))
    values = np.nan_to_num(gray.astype(np.float64), nan=255.0, posinf=255.0, neginf=0.0)
    if np.issubdtype(gray.dtype, np.floating) and values.size and values.max() <= 1.0:
        values = values * 255.0
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def _union_find(count: int, pairs_i: np.ndarray, pairs_j: np.ndarray) -> np.ndarray:
    """Group label of each of ``count`` items linked by the given pairs (labels in order
    of each group's first item)."""
    parent = list(range(count))

    def root(item: int) -> int:
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    if pairs_i.size == 0:  # most fields' pieces: nothing to merge
        return np.arange(count)
    for a, b in zip(pairs_i.tolist(), pairs_j.tolist()):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([root(item) for item in range(count)], np.int64)
    return np.unique(roots, return_inverse=True)[1]


def _link_rows(boxes: np.ndarray, rule_of: np.ndarray, gap: float, columns: np.ndarray) -> np.ndarray:
    """Field label of each piece (rows of (x, y, w, h) ``boxes``).

    Pieces side by side, of similar height, link when closer than ``gap`` digit heights,
    or closer than RULE_GAP heights of the taller when they stand on the same rule
    (``rule_of``, -1 for none): the digits of a comb row or an underline belong together,
    a broken digit's short piece included. Pieces one over the other link when close
    (STACK_GAP, STACK_SPAN). A table column (row of ``columns``, (x, y, w, h)) standing
    between two pieces, across both, parts them however close.
    """
    x, y, w, h = (boxes[:, k].astype(np.float64) for k in range(4))
    overlap = np.minimum(y + h, (y + h)[:, None]) - np.maximum(y, y[:, None])
    shorter = np.minimum(h, h[:, None])
    taller = np.maximum(h, h[:, None])
    space = np.maximum(x, x[:, None]) - np.minimum(x + w, (x + w)[:, None])
    mean_height = (h + h[:, None]) / 2.0
    same_rule = (rule_of[:, None] == rule_of[None, :]) & (rule_of[:, None] >= 0)
    # A piece of a broken digit is short, but lies within the rows of the digits beside it.
    inside = overlap >= shorter - PIECE_SLACK * taller
    linked = (overlap >= ROW_OVERLAP * shorter) & ((taller <= HEIGHT_RATIO * shorter) | inside)
    linked &= (space <= gap * mean_height) | (same_rule & (space <= RULE_GAP * taller))
    span = np.maximum(y + h, (y + h)[:, None]) - np.minimum(y, y[:, None])
    linked |= ((-space >= MERGE_OVERLAP * np.minimum(w, w[:, None])) & (overlap <= 0)
               & (-overlap <= STACK_GAP * taller) & (span <= STACK_SPAN * taller))
    pairs_i, pairs_j = np.nonzero(np.triu(linked, 1))
    if columns.shape[0] and pairs_i.size:
        # Each linked pair's gap (columns) and shared rows, one row per pair.
        left = np.minimum((x + w)[pairs_i], (x + w)[pairs_j])[:, None]
        right = np.maximum(x[pairs_i], x[pairs_j])[:, None]
        top = np.maximum(y[pairs_i], y[pairs_j])[:, None]
        bottom = np.minimum((y + h)[pairs_i], (y + h)[pairs_j])[:, None]
        cx, cy, cw, ch = (columns[:, k][None, :].astype(np.float64) for k in range(4))
        centre = cx + cw / 2.0
        whole = ~((left <= centre) & (centre <= right) & (cy <= top) & (cy + ch >= bottom)).any(axis=1)
        pairs_i, pairs_j = pairs_i[whole], pairs_j[whole]
    return _union_find(x.size, pairs_i, pairs_j)


def _rule_under(boxes: np.ndarray, rules: np.ndarray) -> np.ndarray:
    """For each piece, the index of the horizontal rule it stands on (-1 for none).

    A rule (row of ``rules``, (x, y, w, h)) is under a piece when it spans the piece's
    centre column and lies between 0.3 heights above and 0.6 heights below the piece's
    bottom (an underline, or the bottom of its comb box).
    """
    result = np.full(boxes.shape[0], -1, np.int64)
    if rules.shape[0] == 0 or boxes.shape[0] == 0:
        return result
    rx, ry, rw, rh = (rules[:, k][None, :].astype(np.float64) for k in range(4))
    centre = (boxes[:, 0] + boxes[:, 2] / 2.0)[:, None]
    bottom = (boxes[:, 1] + boxes[:, 3])[:, None].astype(np.float64)
    height = boxes[:, 3][:, None].astype(np.float64)
    under = (rx <= centre) & (centre <= rx + rw)
    under &= (ry + rh >= bottom - 0.3 * height) & (ry <= bottom + 0.6 * height)
    found = under.any(axis=1)
    result[found] = np.argmax(under[found], axis=1)
    return result


def _rule_remnant(box: np.ndarray, rules: np.ndarray) -> bool:
    """Whether a lone stroke no wider than a rule is what a rule left behind: a frame's
    side past the ends of the rules found (within its own height of one), or a stroke
    running into a rule (within REMNANT_CLEARANCE of its height). A stroke standing clear
    of the rules across it, above and below, is a 1 (in a table cell)."""
    x, y, w, h = (float(v) for v in box)
    rx, ry, rw, rh = (rules[:, k].astype(np.float64) for k in range(4))
    beyond = np.maximum(np.maximum(rx - (x + w), x - (rx + rw)), 0.0)
    if ((beyond > 0) & (beyond <= h) & (ry <= y + h + h) & (ry + rh >= y - h)).any():
        return True
    across = beyond == 0
    clearance = REMNANT_CLEARANCE * h
    return bool((across & (ry <= y + h + clearance) & (ry + rh >= y - clearance)).any())


def _outside_rule(stats: np.ndarray, members: np.ndarray, rule_of: np.ndarray, rules: np.ndarray) -> np.ndarray:
    """Which ``members`` (rows of ``stats``; ``rule_of`` their rules, -1 for none) are small
    marks beside the rule that the others stand on.

    When most pieces of a field stand on one rule (the bottom of a box, an underline),
    the handwriting is written there; a piece off the rule's ends that is much shorter
    than them is printed furniture, such as the currency sign before an amount box.
    """
    outside = np.zeros(members.size, bool)
    ruled = rule_of[rule_of >= 0]
    if ruled.size < 2 or ruled.size < RULED_SHARE * members.size:
        return outside
    rule = rules[np.bincount(ruled).argmax()]
    boxes = stats[members, :4].astype(np.float64)
    centre = boxes[:, 0] + boxes[:, 2] / 2.0
    reference = percentile(boxes[rule_of >= 0, 3], 50)
    off_ends = (centre < rule[0]) | (centre > rule[0] + rule[2])
    return (rule_of < 0) & off_ends & (boxes[:, 3] < BESIDE_RULE_HEIGHT * reference)


def _x_overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))


def _union_box(boxes: np.ndarray) -> np.ndarray:
    x0, y0 = boxes[:, 0].min(), boxes[:, 1].min()
    x1, y1 = (boxes[:, 0] + boxes[:, 2]).max(), (boxes[:, 1] + boxes[:, 3]).max()
    return np.array([x0, y0, x1 - x0, y1 - y0])


def _digit_sized(boxes: np.ndarray, height: float, config: SegmentConfig) -> np.ndarray:
    """Which pieces (rows of (x, y, w, h, ...) ``boxes``) are large enough to be a digit of
    a field ``height`` tall.

    Full-height pieces are; so are small digits (raised or trailing zeros) that are at
    least SMALL_DIGIT of the height in both directions. Dots, commas and dashes are
    smaller in one direction at least.
    """
    full = boxes[:, 3] >= config.fragment_height * height
    small = (boxes[:, 3] >= SMALL_DIGIT * height) & (boxes[:, 2] >= SMALL_DIGIT * height)
    return full | small


def _group_pieces(stats: np.ndarray, members: np.ndarray, fragments: np.ndarray,
                  config: SegmentConfig) -> tuple[list[list[int]], np.ndarray, float]:
    """Split one field's pieces into digit blobs: lists of component indices, left to right.

    ``members``: indices (into ``stats``) of the field's linked pieces; ``fragments``:
    short pieces nearby. Pieces stacked over each other (a broken 5, a 1 in two dashes,
    a 7's bar apart from its stem) merge while together they stay within a digit's
    height; merged groups of digit size are blobs. What is left is merged into the blob
    above or below it, else dropped as punctuation (dots, commas and dashes lie between
    digits, not over them).
    Returns the blobs, their (B, 4) (x, y, w, h) boxes and the field's digit height.
    """
    # The upper quartile, not the median: pieces of broken digits pull the median down.
    height = percentile(stats[members, 3], 75)
    pieces = np.unique(np.concatenate([members, fragments]))
    x, y, w, h = (stats[pieces, k].astype(np.float64) for k in range(4))
    columns = np.minimum(x + w, (x + w)[:, None]) - np.maximum(x, x[:, None])
    rows = np.minimum(y + h, (y + h)[:, None]) - np.maximum(y, y[:, None])
    span = np.maximum(y + h, (y + h)[:, None]) - np.minimum(y, y[:, None])
    narrower, shorter = np.minimum(w, w[:, None]), np.minimum(h, h[:, None])
    stacked = (columns >= MERGE_OVERLAP * narrower) & (rows < ROW_OVERLAP * shorter)
    stacked |= (columns >= NESTED_OVERLAP * narrower) & (rows < shorter)
    stacked &= span <= MERGED_HEIGHT * height
    group_of = _union_find(pieces.size, *np.nonzero(np.triu(stacked, 1)))
    # Each group's pieces and union box at once: sorted by group, cut where the group changes.
    by_group = np.argsort(group_of, kind="stable")
    starts = np.flatnonzero(np.diff(group_of[by_group], prepend=-1))
    groups = np.split(pieces[by_group], starts[1:])
    x0, y0 = np.minimum.reduceat(x[by_group], starts), np.minimum.reduceat(y[by_group], starts)
    x1 = np.maximum.reduceat((x + w)[by_group], starts)
    y1 = np.maximum.reduceat((y + h)[by_group], starts)
    group_boxes = np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)
    sized = _digit_sized(group_boxes, height, config)
    order = sorted(np.flatnonzero(sized), key=lambda k: group_boxes[k][0])
    blobs = [groups[k].tolist() for k in order]
    boxes = [group_boxes[k] for k in order]
    if not blobs:
        return [], np.zeros((0, 4)), height
    for k in np.flatnonzero(~sized):
        box = group_boxes[k]
        centre = box[1] + box[3] / 2.0
        best, best_overlap = -1, 0.0
        for j, blob_box in enumerate(boxes):
            overlap = _x_overlap(blob_box, box)
            near = blob_box[1] - 0.3 * height <= centre <= blob_box[1] + blob_box[3] + 0.3 * height
            if near and overlap >= MERGE_OVERLAP * box[2] and overlap > best_overlap:
                best, best_overlap = j, overlap
        if best >= 0:
            blobs[best].extend(int(i) for i in groups[k])
            boxes[best] = _union_box(np.stack([boxes[best], box]))
    return blobs, np.stack(boxes), height


def _looks_printed(boxes: np.ndarray, config: SegmentConfig) -> bool:
    """Typeset text: three or more pieces, most on one exact baseline (level, or leaning
    by at most PRINTED_LEAN), in few exact heights (a font's cap and x heights). Only for
    pieces not standing on a rule: a rule cuts the digits written on it to one flat
    baseline too."""
    count = boxes.shape[0]
    if count < 3 or config.printed_tolerance <= 0:
        return False
    bottoms = (boxes[:, 1] + boxes[:, 3]).astype(np.float64)
    centres = boxes[:, 0] + boxes[:, 2] / 2.0
    # A line of print may lean by what deskewing left (a pixel step along it): its slope
    # is the median of the pairwise slopes (Theil-Sen), which descenders do not pull.
    # Handwriting drifts more; a steeper slope is measured against a level baseline.
    pairs_i, pairs_j = np.triu_indices(count, 1)
    run = centres[pairs_j] - centres[pairs_i]
    slopes = (bottoms[pairs_j] - bottoms[pairs_i])[run > 0] / run[run > 0]
    slope = percentile(slopes, 50) if slopes.size else 0.0
    level = bottoms - slope * centres if abs(slope) <= PRINTED_LEAN else bottoms
    on_baseline = np.abs(level - percentile(level, 50)) <= config.printed_tolerance
    heights = np.sort(boxes[:, 3].astype(np.float64))
    distinct = 1 + int((np.diff(heights) > config.printed_tolerance).sum())
    # Two handwritten digits of one height on one baseline happen by chance; three do not.
    agree = on_baseline.mean() >= PRINTED_SHARE and on_baseline.sum() >= PRINTED_MIN
    return bool(agree and distinct <= max(2.0, PRINTED_SHARE * count))


def _pieces_in(mask: np.ndarray, box: np.ndarray, min_area: float) -> np.ndarray:
    """(P, 4) boxes, in the window, of the pieces of ``mask`` within ``box`` (x, y, w, h)
    of at least ``min_area`` pixels."""
    x, y, w, h = (int(v) for v in box)
    _, _, stats = preprocess.components(np.ascontiguousarray(mask[y:y + h, x:x + w]))
    stats = stats[1:]
    return stats[stats[:, 4] >= min_area, :4]


def _cut_columns(profile: np.ndarray, windows: list[tuple[float, float]]) -> list[int] | None:
    """One cut column per window (shares of the width): the column lowest in ``profile``,
    nearest the window centre."""
    width = profile.size
    cuts = []
    for start, stop in windows:
        lo, hi = int(start * width), int(np.ceil(stop * width))
        if hi - lo < 1:
            return None
        segment = profile[lo:hi].astype(np.float64)
        centre = (lo + hi - 1) / 2.0
        bias = np.abs(np.arange(lo, hi) - centre) / max(width, 1) * (profile.max() + 1) * 0.5
        cuts.append(lo + int(np.argmin(segment + bias)))
    return cuts


def _cut_hypotheses(ink: np.ndarray, height: float, min_width: float) -> list[list[tuple[int, int]]]:
    """Column ranges of each proposed reading of a blob at least ``min_width`` wide.

    Two pieces (cut near the middle), then 3 to MAX_PIECES evenly spaced
    pieces while the blob is wide enough for them (PIECE_WIDTH digit heights each); a
    blob narrower than ``height`` only where it has a waist (NARROW_WAIST).
    Cuts fall near where a boundary is expected, on the column whose ink spans the fewest
    rows: the waist where two digits touch. Not the column with the fewest ink pixels:
    touching loops ("00") meet in a nearly solid column, while a loop's inside has only
    its top and bottom.
    """
    width = ink.shape[1]
    if width < min_width:
        return []
    inked = ink > 0
    first = inked.argmax(axis=0)
    last = inked.shape[0] - 1 - inked[::-1].argmax(axis=0)
    profile = np.where(inked.any(axis=0), last - first + 1, 0)
    plans = [[(0.3, 0.7)]]
    for pieces in range(3, MAX_PIECES + 1):
        if width < (pieces - 1) * PIECE_WIDTH * height:
            break
        step = 1.0 / pieces
        plans.append([(k * step - 0.3 * step, k * step + 0.3 * step) for k in range(1, pieces)])
    options = []
    for windows in plans:
        cuts = _cut_columns(profile, windows)
        if cuts is None:
            continue
        if width < height and profile[cuts[0]] > NARROW_WAIST * inked.shape[0]:
            continue
        edges = [0] + cuts + [width]
        pieces = [(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]
        if all(b - a >= 2 for a, b in pieces) and pieces not in options:
            options.append(pieces)
    return options


class _Frame:
    """Maps boxes on the levelled page back to the original page."""

    def __init__(self, inverse: np.ndarray | None, width: int, height: int):
        # Plain floats: a page maps hundreds of boxes, and numpy's per-call cost on
        # four corners is ten times the arithmetic.
        self.inverse = None if inverse is None else np.asarray(inverse, np.float64).tolist()
        self.width = width
        self.height = height

    def box(self, x: float, y: float, w: float, h: float) -> Box:
        if self.inverse is None:
            x0, y0, x1, y1 = x, y, x + w, y + h
        else:
            (a, b, c), (d, e, f) = self.inverse
            left, top, right, bottom = float(x), float(y), float(x + w), float(y + h)
            corners = ((left, top), (right, top), (left, bottom), (right, bottom))
            xs = [a * cx + b * cy + c for cx, cy in corners]
            ys = [d * cx + e * cy + f for cx, cy in corners]
            x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
        x0 = min(max(math.floor(x0), 0), self.width - 1)
        y0 = min(max(math.floor(y0), 0), self.height - 1)
        x1 = min(max(math.ceil(x1), x0 + 1), self.width)
        y1 = min(max(math.ceil(y1), y0 + 1), self.height)
        return (x0, y0, x1 - x0, y1 - y0)


def _candidate(ink: np.ndarray, col0: int, row0: int, frame: _Frame) -> Candidate | None:
    """A candidate from a piece of ink whose top-left pixel is (row0, col0) on the levelled page."""
    left, top, width, height = cv2.boundingRect((ink > 0).view(np.uint8))
    if width == 0:
        return None
    piece = ink[top:top + height, left:left + width]
    box = frame.box(col0 + left, row0 + top, width, height)
    side = max(piece.shape)
    if side > NORMALIZE_SIDE:
        # normalize_digit's stroke measure costs time in proportion to the area.
        scale = NORMALIZE_SIDE / side
        size = (max(1, round(piece.shape[1] * scale)), max(1, round(piece.shape[0] * scale)))
        piece = cv2.resize(piece, size, interpolation=cv2.INTER_AREA)
    return Candidate(box, normalize_digit(piece))


def _pale_grown(own: np.ndarray, dark: np.ndarray, window: tuple[int, int, int, int], level: int,
                floor: float, specks: np.ndarray) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """A blob's box and ink mask, grown by the pale ink (above ``floor``) joined to its own
    ink ``own``, the (h, w) mask of ``window`` (x, y, w, h) on ``dark``. Ink above
    ``level`` that is neither its own nor a speck's (``specks``, the same shape), and the
    pixels next to it, stay out: a neighbour's halo or a rule's edge is not the blob's."""
    x, y, w, h = window
    area = dark[y:y + h, x:x + w]
    others = cv2.dilate(((area > level) & ~own & ~specks).view(np.uint8), np.ones((3, 3), np.uint8)).view(bool)
    _, pieces = cv2.connectedComponents((own | ((area > floor) & ~others)).view(np.uint8), connectivity=8)
    joined = np.zeros(int(pieces.max()) + 1, bool)
    joined[pieces[own]] = True
    joined[0] = False
    grown = joined[pieces]
    left, top, width, height = cv2.boundingRect(grown.view(np.uint8))
    return (x + left, y + top, width, height), grown[top:top + height, left:left + width]


def _build_blob(ids: list[int], box: np.ndarray, stats: np.ndarray, labels: np.ndarray, dark: np.ndarray,
                height: float, min_width: float, frame: _Frame, pale: _PaleInk | None) -> Blob | None:
    """The blob of components ``ids`` (rows of ``stats``) whose union box is ``box``, grown
    by its pale ink unless ``pale`` is None (a cut-out field)."""
    x, y, w, h = (int(v) for v in box)
    # A lookup by label: np.isin costs more than the rest of this function on small boxes.
    member = np.zeros(stats.shape[0] + 1, bool)
    member[np.asarray(ids) + 1] = True
    inside = member[labels[y:y + h, x:x + w]]
    if pale is not None:
        floor = PALE_INK * pale.level if pale.at_floor else PALE_STROKE * percentile(dark[y:y + h, x:x + w][inside], 50)
        if floor < pale.level:
            rows, cols = dark.shape
            x0, y0 = max(x - PALE_REACH, 0), max(y - PALE_REACH, 0)
            x1, y1 = min(x + w + PALE_REACH, cols), min(y + h + PALE_REACH, rows)
            window = labels[y0:y1, x0:x1]
            (x, y, w, h), inside = _pale_grown(member[window], dark, (x0, y0, x1 - x0, y1 - y0), pale.level,
                                               floor, pale.specks[window])
    ink = np.where(inside, dark[y:y + h, x:x + w].astype(np.float32) / 255.0, np.float32(0.0))
    whole = _candidate(ink, x, y, frame)
    if whole is None:
        return None
    readings = [(whole,)]
    for pieces in _cut_hypotheses(ink, height, min_width):
        cut = tuple(_candidate(ink[:, a:b], x + a, y, frame) for a, b in pieces)
        if all(c is not None for c in cut):
            readings.append(cut)
    return Blob(frame.box(x, y, w, h), tuple(readings))


def _mergeable(left: np.ndarray, right: np.ndarray, height: float) -> bool:
    """Whether neighbouring blob boxes ``left`` and ``right`` (x, y, w, h) may be one digit
    written in two strokes, in a field of digits ``height`` tall (see MERGE_GAP)."""
    union = _union_box(np.stack([left, right]))
    return bool(right[0] - (left[0] + left[2]) <= MERGE_GAP * height
                and union[2] <= union[3]
                and min(left[3], right[3]) <= MERGE_SHORT * union[3])


def _merge_hypotheses(blobs: list[Blob | None], blob_ids: list[list[int]], blob_boxes: np.ndarray,
                      stats: np.ndarray, labels: np.ndarray, dark: np.ndarray, height: float,
                      frame: _Frame, pale: _PaleInk | None) -> list[Blob | None]:
    """``blobs`` (left to right, boxes ``blob_boxes``), each pair that may be one digit in
    two strokes replaced by a merged blob that reads them together or apart: the classifier
    picks (``group.read_fields``). Pairs are taken left to right, a blob in one pair at
    most. Apart, each piece is read uncut: pieces together no wider than tall are
    narrower than touching digits."""
    out = []
    k = 0
    while k < len(blobs):
        first = blobs[k]
        second = blobs[k + 1] if k + 1 < len(blobs) else None
        if first is not None and second is not None and _mergeable(blob_boxes[k], blob_boxes[k + 1], height):
            together = _build_blob(blob_ids[k] + blob_ids[k + 1], _union_box(blob_boxes[k:k + 2]), stats, labels,
                                   dark, height, math.inf, frame, pale)
            if together is not None:
                apart = (first.readings[0][0], second.readings[0][0])
                out.append(Blob(together.bbox, (together.readings[0], apart), merged=True))
                k += 2
                continue
        out.append(first)
        k += 1
    return out


def _reading_order(boxes: list[np.ndarray]) -> list[int]:
    """Indices of field boxes top to bottom, then left to right within a row."""
    order = sorted(range(len(boxes)), key=lambda i: boxes[i][1] + boxes[i][3] / 2.0)
    rows: list[list[int]] = []
    for index in order:
        centre = boxes[index][1] + boxes[index][3] / 2.0
        if rows and centre < boxes[rows[-1][0]][1] + boxes[rows[-1][0]][3]:
            rows[-1].append(index)
        else:
            rows.append([index])
    return [i for row in rows for i in sorted(row, key=lambda i: boxes[i][0])]


def segment_page(gray: np.ndarray, config: SegmentConfig, dpi: float | None = None,
                 bilevel: bool = False) -> PageLayout:
    """Find the digit fields of a page.

    Parameters
    ----------
    gray : (M, N) ndarray
        Grayscale page, ink dark on light; uint8 expected (other dtypes are converted).
    config : SegmentConfig
    dpi : float, optional
        The resolution the page's file states, when it states one. Above FINE_STATED_DPI
        the page is first read shrunk to SETTINGS_DPI.
    bilevel : bool
        The page was black and white as scanned (a fax): its thin rules may be broken
        into dashes, which are joined (``preprocess.find_lines``).

    Returns
    -------
    PageLayout
        Fields in reading order; boxes in pixels of ``gray``. A blank, all-black or tiny
        page gives no fields.

    The sizes in pixels that the settings and constants give (rule thickness, line length,
    speck area) suit pages scanned at 150-200 dpi. A finer scan (300 or 600 dpi) shows
    itself by digits taller than ``FINE_SCAN_DIGIT_HEIGHT``: it is read again, shrunk so
    that they stand ``WORKING_DIGIT_HEIGHT`` tall. A page written with a thin or pale pen
    shows itself by little ink in its digits (``THIN_PEN_INK``): it is read again with a
    lower ink level. A page whose file states a resolution finer than FINE_STATED_DPI is
    read shrunk to SETTINGS_DPI first, and full size only if its digits come out small.
    """
    gray = _as_gray(gray)
    rows, cols = gray.shape
    if min(rows, cols) < config.min_digit_height or int(gray.max()) - int(gray.min()) < MIN_CONTRAST:
        return PageLayout(cols, rows, 0.0, ())
    scale = 1.0
    # A cut-out field is read at its own size, as one field, whatever its resolution.
    if dpi is not None and dpi > FINE_STATED_DPI and rows * SETTINGS_DPI / dpi > config.single_field_max_height:
        scale = SETTINGS_DPI / dpi
    skew, fields, blob_ink = _find_fields(gray, config, scale, bilevel=bilevel)
    if scale < 1.0 and _digit_heights(fields)[0] * scale < STATED_DPI_SMALL * config.min_digit_height:
        scale = 1.0
        skew, fields, blob_ink = _find_fields(gray, config, scale, bilevel=bilevel)
    for _ in range(MAX_RESCALES):
        typical, cautious = _digit_heights(fields)
        if typical * scale <= FINE_SCAN_DIGIT_HEIGHT:
            break
        step = WORKING_DIGIT_HEIGHT / cautious
        if step >= scale:  # by the cautious measure the digits are small enough already
            break
        scale = step
        skew, fields, blob_ink = _find_fields(gray, config, scale, bilevel=bilevel)
    if blob_ink < THIN_PEN_INK:
        skew, fields, _ = _find_fields(gray, config, scale, at_floor=True, bilevel=bilevel)
    return PageLayout(cols, rows, skew, fields)


def _digit_heights(fields: tuple[FieldLayout, ...]) -> tuple[float, float]:
    """Two measures of how tall a page's digits are, in pixels of the original page.

    ``typical`` is the median blob height weighted by blob area: the many small bits that
    noise or security print leave on a fine scan barely move it. ``cautious`` is the lower
    of that and the 75th percentile of heights, which a few tall merged blobs do not
    inflate: the re-read's scale comes from it, so it never overshoots to tiny digits.
    """
    # A merged blob counts as the pieces it was found as: proposing a merge does not move
    # the scale a page is read at.
    found = []
    for field in fields:
        for blob in field.blobs:
            found.extend([candidate.bbox for candidate in blob.readings[1]] if blob.merged else [blob.bbox])
    boxes = np.array(found, np.float64)
    if boxes.shape[0] == 0:
        return 0.0, 0.0
    heights = boxes[:, 3]
    order = np.argsort(heights)
    weight = np.cumsum(heights[order] * boxes[order, 2])
    typical = float(heights[order][np.searchsorted(weight, weight[-1] / 2.0)])
    return typical, min(typical, percentile(heights, 75))


def _find_fields(gray: np.ndarray, config: SegmentConfig, scale: float, at_floor: bool = False,
                 bilevel: bool = False) -> tuple[float, tuple[FieldLayout, ...], float]:
    """The skew, the fields (in reading order; boxes on ``gray``) and the median ink of
    their blobs (ink pixels over height squared; inf without blobs, and for a cut-out
    field, which is never read at the floor: see THIN_PEN_INK) of a page read at
    ``scale`` times its size, with the ink level at ``config.min_ink_darkness`` when
    ``at_floor``, else where ``preprocess.ink_threshold`` puts it; dashed rules are
    joined on a ``bilevel`` page, unless it is a cut-out field: it has no rules, and the
    level strokes of its digits would chain like dashes (binarized ORAND amounts read
    as bilevel: 46.9% of amounts right against 52.0% as gray)."""
    rows, cols = gray.shape
    if scale != 1.0:
        gray = cv2.resize(gray, None, fx=scale, fy=scale,
                          interpolation=cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR)
    dark = preprocess.darkness(gray, config.background_window)
    if at_floor:
        level = round(config.min_ink_darkness * 255)
    else:
        level = preprocess.ink_threshold(dark, config.min_ink_darkness)
    mask = preprocess.ink_mask(dark, level)
    single = gray.shape[0] <= config.single_field_max_height
    skew = 0.0 if single else preprocess.estimate_skew(mask, config.max_skew_degrees)
    inverse = None
    if abs(skew) >= MIN_ROTATION:
        matrix, shape = preprocess.rotation(gray.shape, skew)
        dark = preprocess.rotate(dark, matrix, shape)
        mask = preprocess.ink_mask(dark, level)
        inverse = cv2.invertAffineTransform(matrix)
    if scale != 1.0:
        unscale = np.float64([[1.0 / scale, 0.0, 0.0], [0.0, 1.0 / scale, 0.0]])
        inverse = unscale if inverse is None else unscale @ np.vstack([inverse, [0.0, 0.0, 1.0]])
    frame = _Frame(inverse, cols, rows)
    # A cut-out field holds no print: digits filling it leave a rule no bare stretch.
    lines = preprocess.find_lines(dark, level, config.line_min_length, config.max_line_thickness,
                                  config.max_digit_height, print_nearby=not single, dashed=bilevel and not single)
    clean = preprocess.remove_lines(mask, lines, config.max_line_thickness)
    grown = clean
    if not single:
        grown = preprocess.grow_into_pale_ink(clean, dark, round(PALE_JOIN * level), PALE_GROWTH, lines)
    _, labels, stats = preprocess.components(grown)
    stats = stats[1:].astype(np.int64)  # label k + 1 is row k
    if stats.shape[0] == 0:
        return skew, (), math.inf
    heights, widths, areas = stats[:, 3], stats[:, 2], stats[:, 4]
    speck_area = SPECK_AREA * config.min_digit_height ** 2
    specks = areas < speck_area
    kept = ~specks & (heights <= config.max_digit_height)
    kept &= widths <= 6 * config.max_digit_height
    tall = np.flatnonzero(kept & (heights >= LINK_HEIGHT * config.min_digit_height))
    fragments_all = np.flatnonzero(kept & (heights < config.min_digit_height))
    if tall.size == 0:
        return skew, (), math.inf
    on_rule = np.zeros(stats.shape[0], bool)
    # Each component's ink as found, before growing: what THIN_PEN_INK measures the pen by.
    found_ink = stats[:, 4]
    if grown is not clean:
        found_ink = np.bincount(labels[clean > 0], minlength=stats.shape[0] + 1)[1:]
        # Growing joins pieces; the crops keep the ink as found, or a dark pen's strokes
        # would thicken by their blur.
        labels = cv2.bitwise_and(labels, labels, mask=clean)
    if single:
        # One cut-out field: the digits are the pieces near the tallest ones' height.
        reference = percentile(heights[tall], 75)
        sized = _digit_sized(stats[tall], reference, config)
        groups = [tall[sized]]
        fragments_all = np.concatenate([fragments_all, tall[~sized]])
    else:
        rule_of = _rule_under(stats[tall, :4], lines.rules)
        field_of = _link_rows(stats[tall, :4], rule_of, config.field_gap, lines.columns)
        groups = []
        for label in np.unique(field_of):
            in_field = field_of == label
            members = tall[in_field]
            groups.append(members[~_outside_rule(stats, members, rule_of[in_field], lines.rules)])
        on_rule[tall[rule_of >= 0]] = True
    pale = None if single else _PaleInk(level, at_floor, np.concatenate([[False], specks]))
    fields, boxes, inks = [], [], []
    fx, fy, fw, fh = (stats[fragments_all, k] for k in range(4))
    # A short piece linked into a field with others is that field's: the field below or
    # beside it does not take it again as a fragment near its box.
    claimed = np.full(stats.shape[0], -1, np.int64)
    for index, members in enumerate(groups):
        if members.size >= 2:
            claimed[members] = index
    for index, members in enumerate(groups):
        box = _union_box(stats[members, :4])
        pad = 0.5 * percentile(heights[members], 50)
        near = fragments_all[(fx + fw > box[0] - pad) & (fx < box[0] + box[2] + pad)
                             & (fy + fh > box[1] - pad) & (fy < box[1] + box[3] + pad)]
        near = near[(claimed[near] < 0) | (claimed[near] == index)]
        blob_ids, blob_boxes, height = _group_pieces(stats, members, near, config)
        if not blob_ids or height < config.min_digit_height:
            continue
        if (not single and len(blob_ids) == 1 and blob_boxes[0, 2] <= config.max_line_thickness
                and _rule_remnant(blob_boxes[0], lines.rules)):
            continue
        union = _union_box(blob_boxes)
        # Print shows in its pieces as found too: grown by the noise around them, its
        # letters lose the exact baselines and heights that tell it.
        if not single and on_rule[members].mean() < 0.5 and (
                _looks_printed(blob_boxes, config)
                or _looks_printed(_pieces_in(clean, union, speck_area), config)):
            continue
        # Wide for one digit: wider than touch_aspect heights, or than WIDE_BLOB typical blobs.
        min_width = config.touch_aspect * height
        if len(blob_ids) >= 3:
            min_width = min(min_width, WIDE_BLOB * percentile(blob_boxes[:, 2], 50))
        blobs = [_build_blob(ids, blob_box, stats, labels, dark, height, min_width, frame, pale)
                 for ids, blob_box in zip(blob_ids, blob_boxes)]
        if not single:
            blobs = _merge_hypotheses(blobs, blob_ids, blob_boxes, stats, labels, dark, height, frame, pale)
        blobs = [b for b in blobs if b is not None]
        if not blobs:
            continue
        inks += [found_ink[ids].sum() / blob_box[3] ** 2 for ids, blob_box in zip(blob_ids, blob_boxes)]
        ratios = blob_boxes[:, 3] / height
        reasons = (ODD_SIZE,) if ((ratios < ODD_RANGE[0]) | (ratios > ODD_RANGE[1])).any() else ()
        fields.append(FieldLayout(frame.box(*union), tuple(blobs), reasons, cut_out=single))
        boxes.append(union)
    ordered = tuple(fields[i] for i in _reading_order(boxes))
    blob_ink = math.inf if single or not inks else percentile(np.asarray(inks, np.float64), 50)
    return float(skew), ordered, blob_ink


def layout_crops(layout: PageLayout) -> np.ndarray:
    """Every candidate's crop, (K, 28, 28) float32, in the order ``group.read_fields`` expects.

    Fields, then blobs, then readings, then candidates, each in stored order.
    """
    crops = [candidate.crop
             for field in layout.fields for blob in field.blobs
             for reading in blob.readings for candidate in reading]
    if not crops:
        return np.zeros((0, CROP_SIZE, CROP_SIZE), np.float32)
    return np.stack(crops).astype(np.float32, copy=False)
