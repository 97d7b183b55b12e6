"""Find handwritten digits on a page and propose how to read each piece of ink.

Interface shared with ``batch`` and ``group`` (implementation in progress).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.config import SegmentConfig

# (x, y, w, h) in pixels of the original page image: x is the column, y the row.
Box = tuple[int, int, int, int]


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


@dataclass(frozen=True)
class FieldLayout:
    """One handwritten number: its blobs in reading order."""

    bbox: Box
    blobs: tuple[Blob, ...]
    reasons: tuple[str, ...]  # segmentation doubts, e.g. "odd_size"


@dataclass(frozen=True)
class PageLayout:
    width: int
    height: int
    skew_degrees: float
    fields: tuple[FieldLayout, ...]  # reading order


def segment_page(gray: np.ndarray, config: SegmentConfig) -> PageLayout:
    """(M, N) uint8 grayscale page, ink dark -> its digit fields."""
    raise NotImplementedError


def layout_crops(layout: PageLayout) -> np.ndarray:
    """Every candidate's crop, (K, 28, 28) float32, in the order ``group.read_fields`` expects."""
    raise NotImplementedError
