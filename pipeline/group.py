"""Turn classified candidates into fields: pick readings, build text, raise flags.

Each blob is read the way the classifier likes best: the reading whose candidates have
the highest mean log-probability of their best digit, minus CUT_PENALTY per cut, so a
blob stays whole unless cutting it clearly reads better. A cut into pieces that are all
sure digits of near full height pays no penalty: the model reads two touching digits as
one with confidence too ("78" as 8 at 0.99), and a sure cut is the better evidence; but
not for a blob narrower than tall that reads whole as a sure digit, whose halves (a 0's
two arcs) can read as sure digits as well.
Blobs the model calls "not a digit" are left out of the text; a field whose pieces (whole
blobs and cut pieces) are rejected in a large share (DROP_REJECTED) is printed text or
junk and is not reported, unless it is a cut-out field (the whole image is one number,
with no print to drop): that one is reported, flagged, for a person to read.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np

from pipeline.classify import CLASS_NAMES, DIGIT_CLASSES, REJECT_CLASS
from pipeline.config import FlagConfig
from pipeline.segment import SEGMENT_REASONS, Box, PageLayout

LOW_CONFIDENCE = "low_confidence"  # a digit below FlagConfig.min_digit_confidence
NOT_A_DIGIT = "not_a_digit"  # the model rejected a full-size blob inside the field
FORCED_SPLIT = "forced_split"  # touching digits were read by cutting a blob
FORCED_MERGE = "forced_merge"  # two neighbouring pieces were read together as one digit
# Every reason a field can be flagged for, declared once (segmentation's doubts included).
FLAG_REASONS = (LOW_CONFIDENCE, NOT_A_DIGIT, FORCED_SPLIT, FORCED_MERGE) + SEGMENT_REASONS

# Log-probability given up per cut: a whole blob read at p=0.6 still beats two pieces at
# p=0.95 (mean log -0.05 - 0.5 < log 0.6 = -0.51), so cuts win only over a clearly bad read.
CUT_PENALTY = 0.5
# ...unless every piece reads as a digit at least this sure (not "not a digit") and is at
# least SURE_HEIGHT of the blob's height: a 1's flag or a 7's bar cut off its stem is short.
# Measured 0.95-0.99 and 0.5-0.6 alike on generated pages, samples/ and the ORAND amounts.
SURE_PIECE = 0.97
SURE_HEIGHT = 0.6
# A rejected blob at least this share of the field's median blob height is "full size":
# a symbol in the number's place, worth a reviewer's look. Smaller ones are stray marks.
FULL_SIZE = 0.7
# A field with at least this share of its pieces rejected is not a handwritten number:
# print that the model partly reads as digits has a third to a half of its letters
# rejected; on generated pages no field read right had this many.
DROP_REJECTED = 0.4
# Floor on probabilities before the log, so a zero never gives -inf.
PROB_FLOOR = 1e-6


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
    confidence: float  # product of its digits' confidences: the chance all are right
    flagged: bool
    reasons: tuple[str, ...]  # drawn from FLAG_REASONS, in that order
    digits: tuple[DigitReading, ...]


def _union(boxes: list[Box]) -> Box:
    x0 = min(b[0] for b in boxes)
    y0 = min(b[1] for b in boxes)
    x1 = max(b[0] + b[2] for b in boxes)
    y1 = max(b[1] + b[3] for b in boxes)
    return (x0, y0, x1 - x0, y1 - y0)


def _together_wins(together: int, apart: range, best: list[float], best_log: list[float],
                   top_log: list[float], rejects: list[bool]) -> bool:
    """Whether a merged blob (``segment._merge_hypotheses``) reads as one digit.

    Row ``together`` is the pieces read together, rows ``apart`` each piece alone. Two
    pieces each read as a digit surely stay apart (a 1 beside a 4 is not a 4). Otherwise
    together wins when it is a digit read surely, or when its log-probability less
    CUT_PENALTY beats the pieces' mean; a piece the model rejects counts by how sure the
    rejection is (a stray mark beside a digit is well read apart).
    """
    if rejects[together] or all(best[k] >= SURE_PIECE and not rejects[k] for k in apart):
        return False
    if best[together] >= SURE_PIECE:
        return True
    apart_log = sum(top_log[k] if rejects[k] else best_log[k] for k in apart) / len(apart)
    return best_log[together] - CUT_PENALTY > apart_log


def read_fields(layout: PageLayout, probs: np.ndarray, config: FlagConfig) -> tuple[FieldReading, ...]:
    """Read every field of a page.

    Parameters
    ----------
    layout : PageLayout
        ``segment.segment_page``'s output.
    probs : (K, 11) ndarray
        Calibrated probabilities for ``segment.layout_crops(layout)``, row for row;
        columns 0-9 are digits, column 10 is "not a digit".
    config : FlagConfig

    Returns
    -------
    tuple of FieldReading
        Reported fields in reading order, ids from 1; fields with DROP_REJECTED of their pieces
        rejected (printed text, junk) are left out, except a cut-out field.
    """
    probs = np.asarray(probs, dtype=np.float64)
    expected = sum(len(r) for f in layout.fields for b in f.blobs for r in b.readings)
    if probs.ndim != 2 or probs.shape != (expected, len(CLASS_NAMES)):
        raise ValueError(f"probs must have shape ({expected}, {len(CLASS_NAMES)}) for this layout, got {probs.shape}")
    # Per candidate, computed for the whole page at once: its likeliest digit, that
    # digit's probability and log-probability, and whether "not a digit" beats all digits.
    labels = probs[:, :REJECT_CLASS].argmax(axis=1)
    best = probs[np.arange(expected), labels]
    best_log = np.log(np.maximum(best, PROB_FLOOR)).tolist()
    rejects = (probs.argmax(axis=1) == REJECT_CLASS).tolist()
    top_log = np.log(np.maximum(probs.max(axis=1), PROB_FLOOR)).tolist()
    labels, best = labels.tolist(), best.tolist()
    fields = []
    row = 0
    for field in layout.fields:
        heights = [blob.bbox[3] for blob in field.blobs]
        median_height = statistics.median(heights) if heights else 0.0
        digits: list[DigitReading] = []
        rejected_full = split = merged = False
        rejected = pieces = 0  # pieces read (whole blobs or cut pieces), and those rejected
        for blob in field.blobs:
            if blob.merged:
                # Together or apart, each candidate is read as an uncut blob.
                together, apart = row, range(row + 1, row + 1 + len(blob.readings[1]))
                row = apart.stop
                won = _together_wins(together, apart, best, best_log, top_log, rejects)
                merged |= won
                units = [(blob.readings[0][0], together)] if won else zip(blob.readings[1], apart)
                cut = False
            else:
                # Each reading scores the mean log-probability of its pieces' best digits,
                # less CUT_PENALTY per cut unless the cut is sure; the first best score wins.
                starts, scores = [], []
                whole_sure = best[row] >= SURE_PIECE and not rejects[row] and blob.bbox[2] < blob.bbox[3]
                for reading in blob.readings:
                    starts.append(row)
                    pieces_at = range(row, row + len(reading))
                    sure = (len(reading) > 1 and not whole_sure
                            and all(best[k] >= SURE_PIECE and not rejects[k] for k in pieces_at)
                            and all(c.bbox[3] >= SURE_HEIGHT * blob.bbox[3] for c in reading))
                    penalty = 0.0 if sure else CUT_PENALTY * (len(reading) - 1)
                    scores.append(sum(best_log[k] for k in pieces_at) / len(reading) - penalty)
                    row += len(reading)
                choice = scores.index(max(scores))
                cut = choice > 0
                split |= cut
                chosen = blob.readings[choice]
                units = zip(chosen, range(starts[choice], starts[choice] + len(chosen)))
            for candidate, k in units:
                pieces += 1
                if rejects[k]:
                    rejected += 1
                    if not cut:  # an uncut blob the model rejects is left out of the text
                        rejected_full |= candidate.bbox[3] >= FULL_SIZE * median_height
                        continue
                # A cut piece the model rejects still reads as its likeliest digit (a flagged
                # field shows it), but counts against the field: printed words cut into pieces.
                digits.append(DigitReading(DIGIT_CLASSES[labels[k]], best[k], candidate.bbox))
        if not digits or (rejected >= DROP_REJECTED * pieces and not field.cut_out):
            continue
        found = {
            LOW_CONFIDENCE: any(d.confidence < config.min_digit_confidence for d in digits),
            NOT_A_DIGIT: rejected_full,
            FORCED_SPLIT: split,
            FORCED_MERGE: merged,
        }
        found.update({reason: reason in field.reasons for reason in SEGMENT_REASONS})
        reasons = tuple(reason for reason in FLAG_REASONS if found[reason])
        confidence = math.prod(d.confidence for d in digits)
        fields.append(FieldReading(
            id=len(fields) + 1,
            text="".join(d.label for d in digits),
            bbox=_union([d.bbox for d in digits]),
            confidence=float(confidence),
            flagged=bool(reasons),
            reasons=reasons,
            digits=tuple(digits),
        ))
    return tuple(fields)
