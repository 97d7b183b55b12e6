"""Turn classified candidates into fields: pick readings, build text, raise flags.

Interface shared with ``batch`` and ``report`` (implementation in progress).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.config import FlagConfig
from pipeline.segment import Box, PageLayout


@dataclass(frozen=True)
class DigitReading:
    label: str
    confidence: float
    bbox: Box


@dataclass(frozen=True)
class FieldReading:
    id: int
    text: str
    bbox: Box
    confidence: float
    flagged: bool
    reasons: tuple[str, ...]
    digits: tuple[DigitReading, ...]


def read_fields(layout: PageLayout, probs: np.ndarray, config: FlagConfig) -> tuple[FieldReading, ...]:
    """``probs``: (K, 11) calibrated probabilities for ``layout_crops(layout)``; class 10 = not a digit."""
    raise NotImplementedError
