"""Measure the pipeline: a batch report against truth pages, and real cheque amounts.

Predicted fields are matched to truth fields one to one, greedily by box overlap
(intersection over union at least MATCH_IOU). Digit recall counts the truth digits
found in order in the matched prediction (longest common subsequence), so a missed
field loses all its digits and a misread digit loses one.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np

from pipeline.config import Config
from pipeline.group import read_fields
from pipeline.segment import layout_crops, segment_page

# Least intersection over union for a predicted field to be the same field as a truth one:
# loose, because a field missing one digit is still that field (misread, not missed).
MATCH_IOU = 0.3
# Images segmented before one batched classifier call in ``evaluate_amounts``.
AMOUNT_CHUNK = 256
# Keys of ``evaluate_report``'s and ``evaluate_amounts``' results, with their printed
# names, in the order ``format_markdown`` prints them.
METRICS = (
    ("pages", "Pages"),
    ("truth_fields", "Truth fields"),
    ("exact_match", "Field exact match"),
    ("character_error_rate", "Character error rate"),
    ("digit_recall", "Digit recall"),
    ("missed_fields", "Missed fields"),
    ("spurious_per_page", "Spurious fields per page"),
    ("flagged_share", "Share of fields flagged"),
    ("wrong_flagged_share", "Share of wrong fields flagged"),
    ("unflagged_error_rate", "Error rate among unflagged fields"),
    ("amounts", "Amounts"),
    ("unreadable", "Unreadable images"),
    ("unflagged_share", "Share unflagged"),
)


def _iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = min(ax + aw, bx + bw) - max(ax, bx)
    h = min(ay + ah, by + bh) - max(ay, by)
    if w <= 0 or h <= 0:
        return 0.0
    inter = float(w * h)
    return inter / float(aw * ah + bw * bh - inter)


def _edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ca != cb))
    return row[-1]


def _common_subsequence(a: str, b: str) -> int:
    row = [0] * (len(b) + 1)
    for ca in a:
        previous = 0
        for j, cb in enumerate(b, 1):
            previous, row[j] = row[j], previous + 1 if ca == cb else max(row[j], row[j - 1])
    return row[-1]


def match_fields(predicted: list[dict], truth: list[dict]) -> list[tuple[int, int]]:
    """(predicted index, truth index) pairs, best overlap first, each field used once."""
    pairs = sorted(((_iou(p["bbox"], t["bbox"]), i, j) for i, p in enumerate(predicted)
                    for j, t in enumerate(truth)), reverse=True)
    used_p, used_t, matches = set(), set(), []
    for iou, i, j in pairs:
        if iou < MATCH_IOU:
            break
        if i not in used_p and j not in used_t:
            used_p.add(i)
            used_t.add(j)
            matches.append((i, j))
    return matches


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def evaluate_report(report: dict, truth_dir: Path) -> dict:
    """Compare a batch report with the truth JSONs in ``truth_dir``.

    Each report document's ``path`` names an image whose truth is the ``.json`` of the same
    stem in ``truth_dir``; documents without truth are skipped, and truth pages missing
    from the report (or failed) count all their fields as missed. Rates are None when
    their denominator is zero.
    """
    truth_dir = Path(truth_dir)
    truths = {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted(truth_dir.glob("*.json"))}
    predicted_pages = {}
    for document in report.get("documents", []):
        stem = Path(document["path"]).stem
        if stem in truths:
            pages = document.get("pages") or [] if document.get("status") == "ok" else []
            predicted_pages[stem] = pages[0]["fields"] if pages else []
    totals = {key: 0 for key in ("truth_fields", "exact", "chars", "edits", "recalled", "missed", "spurious",
                                 "reported", "flagged", "wrong", "wrong_flagged", "unflagged", "unflagged_wrong")}
    for stem, truth in truths.items():
        fields = predicted_pages.get(stem, [])
        matches = dict(match_fields(fields, truth["fields"]))
        matched_truth = {j: i for i, j in matches.items()}
        totals["spurious"] += len(fields) - len(matches)
        for i, field in enumerate(fields):
            totals["reported"] += 1
            wrong = i not in matches or field["text"] != truth["fields"][matches[i]]["text"]
            totals["flagged"] += bool(field["flagged"])
            totals["wrong"] += wrong
            totals["wrong_flagged"] += wrong and bool(field["flagged"])
            if not field["flagged"]:
                totals["unflagged"] += 1
                totals["unflagged_wrong"] += wrong
        for j, expected in enumerate(truth["fields"]):
            text = expected["text"]
            totals["truth_fields"] += 1
            totals["chars"] += len(text)
            if j not in matched_truth:
                totals["missed"] += 1
                totals["edits"] += len(text)
                continue
            got = fields[matched_truth[j]]["text"]
            totals["exact"] += got == text
            totals["edits"] += _edit_distance(got, text)
            totals["recalled"] += _common_subsequence(got, text)
    return {
        "pages": len(truths),
        "truth_fields": totals["truth_fields"],
        "exact_match": _share(totals["exact"], totals["truth_fields"]),
        "character_error_rate": _share(totals["edits"], totals["chars"]),
        "digit_recall": _share(totals["recalled"], totals["chars"]),
        "missed_fields": totals["missed"],
        "spurious_per_page": _share(totals["spurious"], len(truths)),
        "flagged_share": _share(totals["flagged"], totals["reported"]),
        "wrong_flagged_share": _share(totals["wrong_flagged"], totals["wrong"]),
        "unflagged_error_rate": _share(totals["unflagged_wrong"], totals["unflagged"]),
    }


def format_markdown(metrics: dict) -> str:
    """A two-column markdown table of ``metrics`` (``evaluate_report``'s keys, then any others)."""
    names = dict(METRICS)
    order = [key for key, _ in METRICS if key in metrics] + [key for key in metrics if key not in names]
    lines = ["| Metric | Value |", "|---|---|"]
    for key in order:
        value = metrics[key]
        if value is None:
            shown = "n/a"
        elif isinstance(value, float):
            shown = f"{value:.1%}" if 0.0 <= value <= 1.0 and key != "spurious_per_page" else f"{value:.3f}"
        else:
            shown = str(value)
        lines.append(f"| {names.get(key, key)} | {shown} |")
    return "\n".join(lines) + "\n"


def evaluate_amounts(orand_dir: Path, classifier, config: Config) -> dict:
    """Read ORAND-CAR-style amount images and score whole-amount exact match.

    ``orand_dir`` holds ``labels.csv`` (file, text, ...) and the images it names. Each
    image is read as grayscale, segmented as a page (a short image is one field), and
    the texts of its fields are joined left to right. Returns counts and rates:
    exact match, share unflagged, and the error rate among unflagged amounts.
    """
    orand_dir = Path(orand_dir)
    with open(orand_dir / "labels.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    exact = unflagged = unflagged_wrong = unreadable = 0
    for start in range(0, len(rows), AMOUNT_CHUNK):
        chunk = rows[start:start + AMOUNT_CHUNK]
        layouts = []
        for row in chunk:
            gray = cv2.imread(str(orand_dir / row["file"]), cv2.IMREAD_GRAYSCALE)
            if gray is None:
                unreadable += 1
                layouts.append(None)
            else:
                layouts.append(segment_page(gray, config.segment))
        crops = [layout_crops(layout) for layout in layouts if layout is not None]
        stacked = np.concatenate(crops) if crops else np.zeros((0, 28, 28), np.float32)
        probs = classifier.predict(stacked) if len(stacked) else np.zeros((0, 11), np.float32)
        offset = 0
        for row, layout in zip(chunk, layouts):
            if layout is None:
                continue
            count = len(layout_crops(layout))
            fields = read_fields(layout, probs[offset:offset + count], config.flags)
            offset += count
            text = "".join(field.text for field in sorted(fields, key=lambda f: f.bbox[0]))
            right = text == row["text"]
            exact += right
            if fields and not any(field.flagged for field in fields):
                unflagged += 1
                unflagged_wrong += not right
    total = len(rows)
    return {
        "amounts": total,
        "unreadable": unreadable,
        "exact_match": _share(exact, total),
        "unflagged_share": _share(unflagged, total),
        "unflagged_error_rate": _share(unflagged_wrong, unflagged),
    }


def reflag(report: dict, threshold: float) -> dict:
    """The report as it would be with ``min_digit_confidence = threshold``.

    ``low_confidence`` is re-derived from the digits' confidences; every other reason stays.
    """
    documents = []
    for document in report.get("documents", []):
        pages = []
        for page in document.get("pages") or []:
            fields = []
            for field in page["fields"]:
                reasons = [r for r in field["reasons"] if r != "low_confidence"]
                if any(digit["confidence"] < threshold for digit in field["digits"]):
                    reasons.append("low_confidence")
                fields.append({**field, "reasons": reasons, "flagged": bool(reasons)})
            pages.append({**page, "fields": fields})
        documents.append({**document, "pages": pages})
    return {**report, "documents": documents}


def threshold_sweep(report: dict, truth_dir: Path, thresholds) -> list[dict]:
    """Flag figures for each candidate ``min_digit_confidence``: how to choose the default."""
    rows = []
    for threshold in thresholds:
        metrics = evaluate_report(reflag(report, threshold), truth_dir)
        rows.append({"threshold": threshold, "flagged_share": metrics["flagged_share"],
                     "wrong_flagged_share": metrics["wrong_flagged_share"],
                     "unflagged_error_rate": metrics["unflagged_error_rate"]})
    return rows


def format_sweep(rows: list[dict]) -> str:
    lines = ["| min_digit_confidence | Fields flagged | Wrong fields flagged | Error among unflagged |",
             "|---|---|---|---|"]
    for row in rows:
        cells = [f"{row[key]:.1%}" if row[key] is not None else "n/a"
                 for key in ("flagged_share", "wrong_flagged_share", "unflagged_error_rate")]
        lines.append(f"| {row['threshold']:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
