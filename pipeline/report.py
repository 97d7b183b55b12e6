"""Report records and writers: ``report.json``, ``fields.csv``, ``digits.csv``, field images.

Only this module writes report files. Keys and columns are declared once, here, and
tests check against them. Every report is written to a temporary file in the same
folder and renamed over the old one (``os.replace``), so a run killed at any moment
leaves the previous good report in place (field images: see ``write_field_image``).
CSV cells a spreadsheet would run as a formula are neutralized with a leading ``'``;
read numbers such as ``"0451"`` stay strings.

``report.json``::

    {"run": {"started", "finished", "model": {"path", "sha256"}, "config", "version",
             "counts": {documents, pages, fields, flagged, errors, skipped_files, reused, read}},
     "documents": [{"path", "status", "error", "detail",
                    "pages": [{"page", "width", "height",
                               "fields": [{"id", "text", "bbox", "confidence", "flagged",
                                           "reasons", "digits": [{"label", "confidence", "bbox"}]}]}]}]}

Boxes are ``[x, y, w, h]`` in pixels of the original page image (x the column, y the row).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pandas as pd

from pipeline.errors import OutputError

REPORT_KEYS = ("run", "documents")
RUN_KEYS = ("started", "finished", "model", "config", "version", "counts")
MODEL_KEYS = ("path", "sha256")
COUNT_KEYS = ("documents", "pages", "fields", "flagged", "errors", "skipped_files", "reused", "read")
DOCUMENT_KEYS = ("path", "status", "error", "detail", "pages")
PAGE_KEYS = ("page", "width", "height", "fields")
FIELD_KEYS = ("id", "text", "bbox", "confidence", "flagged", "reasons", "digits")
DIGIT_KEYS = ("label", "confidence", "bbox")

# fields.csv: one row per number; a failed document gets one row with its status and error.
FIELD_COLUMNS = (
    "document", "status", "error", "page", "field", "text", "confidence", "flagged", "reasons",
    "x", "y", "w", "h", "image",
)
# digits.csv: one row per digit of every number.
DIGIT_COLUMNS = ("document", "page", "field", "digit", "label", "confidence", "x", "y", "w", "h")
_INT_COLUMNS = ("page", "field", "digit", "x", "y", "w", "h")

# A spreadsheet runs a cell starting with one of these as a formula (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
FIELD_IMAGE_DIR = "fields"
# Confidences are rounded for the report: four decimals are finer than calibration is.
CONFIDENCE_DECIMALS = 4
# Documents per pandas frame when writing CSV: bounds memory on very large runs.
CSV_DOCUMENTS_PER_FRAME = 500
REASON_SEPARATOR = ";"


# --- records -------------------------------------------------------------------------

def _box(bbox) -> list[int]:
    return [int(v) for v in bbox]


def _confidence(value: float) -> float:
    return round(float(value), CONFIDENCE_DECIMALS)


def field_record(field) -> dict:
    """A ``group.FieldReading`` as its report dict (keys ``FIELD_KEYS``)."""
    return {
        "id": int(field.id),
        "text": str(field.text),
        "bbox": _box(field.bbox),
        "confidence": _confidence(field.confidence),
        "flagged": bool(field.flagged),
        "reasons": [str(r) for r in field.reasons],
        "digits": [
            {"label": str(d.label), "confidence": _confidence(d.confidence), "bbox": _box(d.bbox)}
            for d in field.digits
        ],
    }


def page_record(number: int, width: int, height: int, fields: Iterable) -> dict:
    """One page's report dict (keys ``PAGE_KEYS``); ``fields`` are ``FieldReading``s."""
    return {"page": int(number), "width": int(width), "height": int(height),
            "fields": [field_record(f) for f in fields]}


def document_record(path: str, status: str, error: str | None, detail: str | None, pages: list) -> dict:
    """One document's report dict (keys ``DOCUMENT_KEYS``)."""
    return {"path": path, "status": status, "error": error, "detail": detail, "pages": pages}


def run_record(started: str, finished: str, model_path: str, model_sha256: str,
               config: dict, version: str, counts: dict) -> dict:
    """The report header (keys ``RUN_KEYS``)."""
    return {
        "started": started,
        "finished": finished,
        "model": {"path": model_path, "sha256": model_sha256},
        "config": config,
        "version": version,
        "counts": {key: int(counts.get(key, 0)) for key in COUNT_KEYS},
    }


def neutralize(value):
    """Prefix ``'`` to a string a spreadsheet would run as a formula; other values pass."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def field_image_path(document: str, page: int, field_id: int) -> str:
    """Where a field's PNG goes, relative to OUTPUT (POSIX): named from the document's
    path relative to the input root, so ``a/x.png`` and ``b/x.png`` never collide."""
    return f"{FIELD_IMAGE_DIR}/{document}/page{int(page):03d}-field{int(field_id):03d}.png"


# --- atomic files --------------------------------------------------------------------

@contextlib.contextmanager
def _temporary_beside(path: Path, mode: str) -> Iterator[tuple]:
    """A temporary file in ``path``'s folder, synced to disk before the caller renames
    it; yields (handle, temp path). Removed on error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp)
    try:
        os.fchmod(fd, 0o644)
        kwargs = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle, tmp
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --- writers -------------------------------------------------------------------------

Documents = Callable[[], Iterator[dict]]


def write_json(handle, header: dict, documents: Documents, field_images: bool) -> None:
    """``report.json``, streamed: one document per line, never the whole list in memory."""
    handle.write('{"run": ')
    handle.write(json.dumps(header, ensure_ascii=False, indent=1))
    handle.write(',\n"documents": [')
    for index, document in enumerate(documents()):
        handle.write(",\n" if index else "\n")
        handle.write(json.dumps(document, ensure_ascii=False))
    handle.write("\n]}\n")


def _field_rows(document: dict, field_images: bool) -> Iterator[dict]:
    if document["status"] != "ok":
        yield {"document": document["path"], "status": document["status"], "error": document["error"]}
        return
    for page in document["pages"]:
        for field in page["fields"]:
            x, y, w, h = field["bbox"]
            yield {
                "document": document["path"], "status": "ok", "error": None,
                "page": page["page"], "field": field["id"], "text": field["text"],
                "confidence": field["confidence"], "flagged": field["flagged"],
                "reasons": REASON_SEPARATOR.join(field["reasons"]),
                "x": x, "y": y, "w": w, "h": h,
                "image": field_image_path(document["path"], page["page"], field["id"]) if field_images else None,
            }


def _digit_rows(document: dict, field_images: bool) -> Iterator[dict]:
    for page in document["pages"]:
        for field in page["fields"]:
            for index, digit in enumerate(field["digits"], start=1):
                x, y, w, h = digit["bbox"]
                yield {
                    "document": document["path"], "page": page["page"], "field": field["id"],
                    "digit": index, "label": digit["label"], "confidence": digit["confidence"],
                    "x": x, "y": y, "w": w, "h": h,
                }


def _frame(rows: list[dict], columns: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(columns))
    for column in columns:
        if column in _INT_COLUMNS:
            frame[column] = frame[column].astype("Int64")  # NA-able: error rows have no page
        elif column in ("confidence",):
            frame[column] = frame[column].astype("float64")
        elif column == "flagged":
            frame[column] = frame[column].astype("boolean")
        else:
            # Text stays text: "0451" keeps its zero; formula-looking cells are neutralized.
            frame[column] = frame[column].astype(object).map(neutralize).astype("string")
    return frame


def _csv_writer(rows_of: Callable[[dict, bool], Iterator[dict]], columns: tuple[str, ...]):
    def write(handle, header: dict, documents: Documents, field_images: bool) -> None:
        pd.DataFrame(columns=list(columns)).to_csv(handle, index=False, quoting=csv.QUOTE_NONNUMERIC)
        batch: list[dict] = []
        count = 0
        for document in documents():
            batch.extend(rows_of(document, field_images))
            count += 1
            if count % CSV_DOCUMENTS_PER_FRAME == 0 and batch:
                _frame(batch, columns).to_csv(handle, index=False, header=False, quoting=csv.QUOTE_NONNUMERIC)
                batch = []
        if batch:
            _frame(batch, columns).to_csv(handle, index=False, header=False, quoting=csv.QUOTE_NONNUMERIC)
    return write


WRITERS = {
    "report.json": write_json,
    "fields.csv": _csv_writer(_field_rows, FIELD_COLUMNS),
    "digits.csv": _csv_writer(_digit_rows, DIGIT_COLUMNS),
}


def write_reports(output_dir: Path, header: dict, documents: Documents, field_images: bool) -> list[Path]:
    """Write every format in ``WRITERS`` to ``output_dir``, atomically.

    All files are first written to temporaries; only when every one succeeded are they
    renamed into place, so a failure (disk full, a kill) leaves all old reports intact.
    ``documents`` is called once per writer and yields report dicts in order.
    """
    output_dir = Path(output_dir)
    written: list[tuple[Path, Path]] = []
    try:
        with contextlib.ExitStack() as stack:
            for name, writer in WRITERS.items():
                target = output_dir / name
                handle, tmp = stack.enter_context(_temporary_beside(target, "w"))
                writer(handle, header, documents, field_images)
                written.append((tmp, target))
        for tmp, target in written:
            os.replace(tmp, target)
    except OSError as exc:
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write reports in {output_dir}: {exc.strerror or exc}") from None
    return [target for _, target in written]


def remove_stale_temporaries(output_dir: Path) -> int:
    """Delete report temporaries a killed run left in ``output_dir`` (call under the lock)."""
    removed = 0
    for name in WRITERS:
        for stale in Path(output_dir).glob(f".{name}.*.tmp"):
            stale.unlink(missing_ok=True)
            removed += 1
    return removed


def write_field_image(output_dir: Path, document: str, page: int, field_id: int, image: np.ndarray) -> str:
    """Save one field's (M, N) uint8 pixels as PNG; returns its path relative to OUTPUT.

    Written in place, not through a temporary file: a document's images are written
    before its row is committed, so a run killed halfway through them re-reads that
    document next time, and its folder is cleared first (``remove_field_images``).
    """
    import cv2

    relative = field_image_path(document, page, field_id)
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image, dtype=np.uint8))
    if not ok:
        raise OutputError(f"cannot encode field image {relative}")
    path = Path(output_dir) / relative
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encoded.tobytes())
    except OSError as exc:
        raise OutputError(f"cannot write field image {relative}: {exc.strerror or exc}") from None
    return relative


def remove_field_images(output_dir: Path, document: str) -> None:
    """Delete a document's field images (before it is re-read, or once it left the input)."""
    folder = Path(output_dir) / FIELD_IMAGE_DIR / document
    if folder.is_dir() and not folder.is_symlink():
        shutil.rmtree(folder, ignore_errors=True)
