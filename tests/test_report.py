"""report: keys and columns as declared, text stays text, formulas neutralized, atomic writes."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pandas as pd
import pytest

from pipeline import report
from pipeline.errors import OutputError
from pipeline.group import DigitReading, FieldReading
from pipeline.report import (
    COUNT_KEYS, DIGIT_COLUMNS, DIGIT_KEYS, DOCUMENT_KEYS, FIELD_COLUMNS, FIELD_KEYS, MODEL_KEYS, PAGE_KEYS,
    REPORT_KEYS, RUN_KEYS, document_record, field_image_path, neutralize, page_record, run_record,
    write_field_image, write_reports,
)


def reading(text: str = "0451", flagged: bool = False, field_id: int = 1) -> FieldReading:
    digits = tuple(DigitReading(ch, 0.99 - 0.01 * i, (10 + 20 * i, 5, 18, 30)) for i, ch in enumerate(text))
    return FieldReading(id=field_id, text=text, bbox=(10, 5, 20 * len(text), 30), confidence=0.96123456,
                        flagged=flagged, reasons=("low_confidence",) if flagged else (), digits=digits)


def header(counts=None) -> dict:
    return run_record("2026-01-01T00:00:00+00:00", "2026-01-01T00:00:01+00:00", "/m/digits.keras", "ab" * 32,
                      {"run": {"workers": 1}}, "0.1.0", counts or {"documents": 3})


def sample_documents() -> list[dict]:
    return [
        document_record("a/0001.png", "ok", None, None,
                        [page_record(1, 100, 50, [reading("0451"), reading("-12", True, 2)])]),
        document_record("=cmd|' ñ.png", "ok", None, None, [page_record(1, 100, 50, [reading("7")])]),
        document_record("bad.pdf", "error", "encrypted", "PDF is password-protected", []),
    ]


def write_sample(tmp_path, documents=None, field_images=True):
    documents = sample_documents() if documents is None else documents
    return write_reports(tmp_path, header(), lambda: iter(documents), field_images)


@pytest.mark.parametrize("value, expected", [
    ("=1+2", "'=1+2"), ("+1", "'+1"), ("-1", "'-1"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "'\tx"), ("\rx", "'\rx"), ("0451", "0451"), ("a=b", "a=b"), ("", ""), (3, 3), (None, None),
])
def test_neutralize(value, expected):
    assert neutralize(value) == expected


def test_records_have_exactly_the_declared_keys():
    page = page_record(2, 640, 480, [reading()])
    assert tuple(page) == PAGE_KEYS
    field = page["fields"][0]
    assert tuple(field) == FIELD_KEYS and tuple(field["digits"][0]) == DIGIT_KEYS
    assert field["bbox"] == [10, 5, 80, 30] and field["text"] == "0451"
    assert field["confidence"] == 0.9612  # rounded to CONFIDENCE_DECIMALS
    assert tuple(document_record("x", "ok", None, None, [])) == DOCUMENT_KEYS
    run = header({"documents": 3, "errors": 1})
    assert tuple(run) == RUN_KEYS and tuple(run["model"]) == MODEL_KEYS
    assert tuple(run["counts"]) == COUNT_KEYS and run["counts"]["errors"] == 1 and run["counts"]["pages"] == 0


def test_report_json_contract(tmp_path):
    write_sample(tmp_path)
    data = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert tuple(data) == REPORT_KEYS and tuple(data["run"]) == RUN_KEYS
    assert [d["path"] for d in data["documents"]] == ["a/0001.png", "=cmd|' ñ.png", "bad.pdf"]
    assert all(tuple(d) == DOCUMENT_KEYS for d in data["documents"])
    assert data["documents"][0]["pages"][0]["fields"][0]["text"] == "0451"
    assert data["documents"][2]["error"] == "encrypted" and data["documents"][2]["pages"] == []


def test_empty_run_writes_valid_files(tmp_path):
    write_sample(tmp_path, documents=[])
    assert json.loads((tmp_path / "report.json").read_text())["documents"] == []
    assert pd.read_csv(tmp_path / "fields.csv").columns.tolist() == list(FIELD_COLUMNS)


def test_fields_csv_keeps_text_neutralizes_formulas_and_lists_failures(tmp_path):
    write_sample(tmp_path)
    with open(tmp_path / "fields.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == FIELD_COLUMNS
    assert rows[0]["text"] == "0451" and rows[0]["flagged"] == "False"
    assert rows[1]["text"] == "'-12" and rows[1]["reasons"] == "low_confidence"
    assert rows[2]["document"] == "'=cmd|' ñ.png"  # the name is kept, but defused
    assert rows[3]["document"] == "bad.pdf" and rows[3]["status"] == "error" and rows[3]["error"] == "encrypted"
    assert rows[0]["image"] == field_image_path("a/0001.png", 1, 1) == "fields/a/0001.png/page001-field001.png"
    # Also through pandas, the way downstream tools read it.
    frame = pd.read_csv(tmp_path / "fields.csv", dtype={"text": str})
    assert frame.loc[0, "text"] == "0451" and frame.loc[0, "x"] == 10


def test_no_image_column_values_when_field_images_off(tmp_path):
    write_sample(tmp_path, field_images=False)
    with open(tmp_path / "fields.csv", newline="", encoding="utf-8") as handle:
        assert all(r["image"] == "" for r in csv.DictReader(handle))


def test_digits_csv_one_row_per_digit(tmp_path):
    write_sample(tmp_path)
    with open(tmp_path / "digits.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == DIGIT_COLUMNS
    assert len(rows) == 4 + 3 + 1
    assert [r["label"] for r in rows[:4]] == ["0", "4", "5", "1"]
    assert rows[4]["label"] == "'-"  # a "-" label would be a formula start too
    assert (rows[1]["x"], rows[1]["digit"]) == ("30", "2")


def test_failed_write_keeps_the_previous_reports(tmp_path, monkeypatch):
    write_sample(tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in report.WRITERS}

    def disk_full(handle, *args):
        handle.write("partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(report.WRITERS, "digits.csv", disk_full)
    with pytest.raises(OutputError, match="No space left"):
        write_sample(tmp_path, documents=sample_documents()[:1])
    assert {name: (tmp_path / name).read_bytes() for name in report.WRITERS} == before
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # no temporaries left behind


def test_kill_during_write_keeps_the_previous_reports(tmp_path, monkeypatch):
    write_sample(tmp_path)
    before = (tmp_path / "report.json").read_bytes()

    def killed(handle, header, documents, field_images):
        for index, _ in enumerate(documents()):
            if index == 1:
                raise KeyboardInterrupt

    monkeypatch.setitem(report.WRITERS, "report.json", killed)
    with pytest.raises(KeyboardInterrupt):
        write_sample(tmp_path)
    assert (tmp_path / "report.json").read_bytes() == before
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_field_images_are_named_from_the_relative_path(tmp_path):
    rng = np.random.default_rng(0)
    first = rng.integers(0, 256, (20, 40), dtype=np.uint8)
    second = rng.integers(0, 256, (20, 40), dtype=np.uint8)
    a = write_field_image(tmp_path, "a/x.png", 1, 1, first)
    b = write_field_image(tmp_path, "b/x.png", 1, 1, second)
    assert a != b
    import cv2
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / a), cv2.IMREAD_UNCHANGED), first)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / b), cv2.IMREAD_UNCHANGED), second)
    report.remove_field_images(tmp_path, "a/x.png")
    assert not (tmp_path / a).exists() and (tmp_path / b).exists()


def test_stale_temporaries_of_a_killed_run_are_removed(tmp_path):
    write_sample(tmp_path)
    (tmp_path / ".report.json.abc123.tmp").write_text("half a report")
    (tmp_path / "keep.tmp").write_text("not ours")
    assert report.remove_stale_temporaries(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".tmp") == ["keep.tmp"]
