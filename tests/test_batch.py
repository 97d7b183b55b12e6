"""batch: errors as values, one predict per chunk, incremental runs, resume after a crash, the lock.

Segment and group are replaced by the fakes in conftest (``fake_stages``) so these tests
hold whatever state those stages are in; workers=1 runs joblib in-process.
"""

from __future__ import annotations

import json
import os
import struct
import zlib

import cv2
import numpy as np
import pytest

import pipeline.batch as batch
from conftest import FAKE_INK_THRESHOLD, FakeClassifier, form_page, write_png
from pipeline.batch import RunOptions, run_batch
from pipeline.errors import AlreadyRunning, ConfigError, ExitCode, ModelError
from pipeline.report import DOCUMENT_KEYS
from pipeline.state import StateStore, output_lock


def report_of(output) -> dict:
    return json.loads((output / "report.json").read_text(encoding="utf-8"))


def by_path(output) -> dict:
    return {d["path"]: d for d in report_of(output)["documents"]}


def ink_bbox(gray: np.ndarray) -> list[int]:
    rows = np.flatnonzero((gray < FAKE_INK_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((gray < FAKE_INK_THRESHOLD).any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def good_folder(root, count: int = 4):
    pages = {}
    for index in range(count):
        rel = f"forms/{index:02d}.png"
        pages[rel] = form_page(index)
        write_png(root / rel, pages[rel])
    return pages


def bomb_header_png(width: int, height: int) -> bytes:
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def run(source, output, config, classifier=None, **options):
    classifier = classifier or FakeClassifier()
    loads = []

    def load_model(path):
        loads.append(path)
        return classifier

    summary = run_batch(source, output, config, RunOptions(**options), load_model=load_model)
    return summary, classifier, loads


# --- a normal run --------------------------------------------------------------------

def test_reads_every_document_with_fields_in_page_pixels(tmp_path, make_config, fake_stages):
    pages = good_folder(tmp_path / "in")
    summary, classifier, loads = run(tmp_path / "in", tmp_path / "out", make_config(chunk_documents=3))
    assert summary.exit_code == ExitCode.ok and summary.failed == ()
    assert len(loads) == 1  # the model is loaded once per run
    assert classifier.calls == [12, 4]  # one predict per chunk: 3 docs × 4 digits, then 1 doc
    documents = by_path(tmp_path / "out")
    assert list(documents) == sorted(pages)
    for rel, gray in pages.items():
        document = documents[rel]
        assert tuple(document) == DOCUMENT_KEYS and document["status"] == "ok"
        (page,) = document["pages"]
        assert (page["width"], page["height"]) == (gray.shape[1], gray.shape[0])
        (field,) = page["fields"]
        assert field["text"] == "0451" and field["bbox"] == ink_bbox(gray)
        assert (tmp_path / "out" / "fields" / rel / "page001-field001.png").is_file()
    counts = report_of(tmp_path / "out")["run"]["counts"]
    assert (counts["documents"], counts["pages"], counts["fields"], counts["errors"]) == (4, 4, 4, 0)


def test_low_confidence_is_flagged_but_still_ok(tmp_path, make_config, fake_stages):
    good_folder(tmp_path / "in", 2)
    summary, _, _ = run(tmp_path / "in", tmp_path / "out", make_config(), FakeClassifier(confidence=0.5))
    assert summary.exit_code == ExitCode.ok
    assert summary.counts["flagged"] == 2 == summary.counts["fields"]


def test_every_bad_input_is_an_error_value_and_the_run_goes_on(tmp_path, make_config, fake_stages):
    source = tmp_path / "in"
    good_folder(source, 2)
    (source / "empty.png").write_bytes(b"")
    (source / "text.png").write_text("hello")
    good = (source / "forms" / "00.png").read_bytes()
    (source / "cut.png").write_bytes(good[: len(good) // 2])
    write_png(source / "dot.png", np.zeros((1, 1), np.uint8))
    (source / "bomb.png").write_bytes(bomb_header_png(40_000, 40_000))
    (source / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj garbage")
    os.symlink(source, source / "loop")
    write_png(source / "=cmd|' ñ.png", form_page(9))
    write_png(source / "black.png", np.zeros((300, 200), np.uint8))
    (source / "readme.txt").write_text("skip me")
    summary, _, _ = run(source, tmp_path / "out", make_config())
    assert summary.exit_code == ExitCode.some_documents_failed
    documents = by_path(tmp_path / "out")
    errors = {path: d["error"] for path, d in documents.items() if d["status"] == "error"}
    assert errors == {
        "empty.png": "empty_file", "text.png": "unsupported_type", "cut.png": "corrupt",
        "dot.png": "too_small", "bomb.png": "too_large", "broken.pdf": "corrupt",
    }
    assert all(documents[p]["detail"] and documents[p]["pages"] == [] for p in errors)
    assert documents["=cmd|' ñ.png"]["status"] == "ok"
    black = documents["black.png"]  # decided: a uniform page is a page with no fields
    assert black["status"] == "ok" and black["pages"][0]["fields"] == []
    counts = summary.counts
    assert counts["errors"] == 6 and counts["documents"] == 10 and counts["skipped_files"] == 2  # txt + loop
    assert sorted(p for p, _, _ in summary.failed) == sorted(errors)


def test_uniform_pages_never_reach_the_segmenter(tmp_path, make_config, monkeypatch):
    def segmenter_must_not_run(gray, config, dpi=None, bilevel=False):
        raise AssertionError("segment_page called on a uniform page")

    monkeypatch.setattr(batch, "segment_page", segmenter_must_not_run)
    write_png(tmp_path / "in" / "white.png", np.full((50, 60), 255, np.uint8))
    write_png(tmp_path / "in" / "black.png", np.zeros((50, 60), np.uint8))
    summary, classifier, loads = run(tmp_path / "in", tmp_path / "out", make_config())
    assert summary.exit_code == ExitCode.ok and summary.counts["fields"] == 0
    assert classifier.calls == [] and loads == []  # no crops: no predict, not even a model load


def test_unexpected_exception_is_internal_and_reraised_on_request(tmp_path, make_config, fake_stages, monkeypatch,
                                                                  caplog):
    good_folder(tmp_path / "in", 3)
    original = batch.segment_page

    def flaky(gray, config, dpi=None, bilevel=False):
        if gray.shape == form_page(1).shape and np.array_equal(gray, form_page(1)):
            raise ValueError("segmenter bug")
        return original(gray, config, dpi, bilevel)

    monkeypatch.setattr(batch, "segment_page", flaky)
    caplog.set_level("DEBUG", logger="pipeline")
    summary, _, _ = run(tmp_path / "in", tmp_path / "out", make_config())
    documents = by_path(tmp_path / "out")
    assert documents["forms/01.png"]["error"] == "internal"
    assert "segmenter bug" in documents["forms/01.png"]["detail"]
    assert documents["forms/00.png"]["status"] == documents["forms/02.png"]["status"] == "ok"
    assert summary.exit_code == ExitCode.some_documents_failed
    assert "Traceback" in caplog.text  # the traceback goes to the debug log
    with pytest.raises(ValueError, match="segmenter bug"):
        run(tmp_path / "in", tmp_path / "out2", make_config(), raise_on_error=True)


def test_reader_failure_is_internal_for_that_document_only(tmp_path, make_config, fake_stages, monkeypatch):
    good_folder(tmp_path / "in", 2)
    original = batch.read_fields
    seen = []

    def reader(layout, probs, config):
        seen.append(1)
        if len(seen) == 2:
            raise IndexError("grouping bug")
        return original(layout, probs, config)

    monkeypatch.setattr(batch, "read_fields", reader)
    summary, _, _ = run(tmp_path / "in", tmp_path / "out", make_config())
    documents = by_path(tmp_path / "out")
    assert documents["forms/00.png"]["status"] == "ok" and documents["forms/01.png"]["error"] == "internal"


def test_classifier_with_wrong_output_shape_is_a_model_error(tmp_path, make_config, fake_stages):
    class Wrong:
        def predict(self, crops):
            return np.zeros((crops.shape[0], 10), np.float32)

    good_folder(tmp_path / "in", 1)
    with pytest.raises(ModelError, match="shape"):
        run(tmp_path / "in", tmp_path / "out", make_config(), Wrong())


# --- run-level failures --------------------------------------------------------------

def test_missing_input_empty_input_and_missing_model(tmp_path, make_config):
    with pytest.raises(ConfigError, match="does not exist"):
        run(tmp_path / "nope", tmp_path / "out", make_config())
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="no documents"):
        run(tmp_path / "empty", tmp_path / "out", make_config())
    config = make_config()
    config.classify.model.unlink()
    write_png(tmp_path / "in" / "a.png", form_page(0))
    with pytest.raises(ModelError, match="make train"):
        run(tmp_path / "in", tmp_path / "out", config)


def test_second_run_on_same_output_is_refused(tmp_path, make_config, fake_stages):
    good_folder(tmp_path / "in", 1)
    (tmp_path / "out").mkdir()
    with output_lock(tmp_path / "out"):
        with pytest.raises(AlreadyRunning):
            run(tmp_path / "in", tmp_path / "out", make_config())
    assert not (tmp_path / "out" / "report.json").exists()
    summary, _, _ = run(tmp_path / "in", tmp_path / "out", make_config())  # once free, it runs
    assert summary.exit_code == ExitCode.ok


# --- incremental runs and resume -----------------------------------------------------

def test_rerun_reuses_unchanged_documents_and_force_rereads(tmp_path, make_config, fake_stages):
    source, output = tmp_path / "in", tmp_path / "out"
    good_folder(source, 3)
    first, _, _ = run(source, output, make_config())
    assert first.counts["read"] == 3
    first_documents = report_of(output)["documents"]

    again, classifier, loads = run(source, output, make_config())
    assert (again.counts["reused"], again.counts["read"]) == (3, 0)
    assert classifier.calls == [] and loads == []  # nothing to read: TensorFlow never loads
    assert report_of(output)["documents"] == first_documents and again.counts["fields"] == 3

    write_png(source / "forms" / "01.png", form_page(42))  # changed content
    write_png(source / "forms" / "new.png", form_page(43))  # the folder grew
    grown, classifier, _ = run(source, output, make_config())
    assert (grown.counts["reused"], grown.counts["read"], grown.counts["documents"]) == (2, 2, 4)
    assert by_path(output)["forms/01.png"]["pages"][0]["fields"][0]["bbox"] == ink_bbox(form_page(42))

    forced, classifier, _ = run(source, output, make_config(), force=True)
    assert (forced.counts["reused"], forced.counts["read"]) == (0, 4)
    assert sum(classifier.calls) == 4 * 4


def test_new_model_or_settings_rereads(tmp_path, make_config, fake_stages):
    import dataclasses

    from pipeline.config import FlagConfig

    source, output = tmp_path / "in", tmp_path / "out"
    good_folder(source, 2)
    config = make_config()
    run(source, output, config)
    config.classify.model.write_bytes(b"retrained model")
    summary, _, _ = run(source, output, config)
    assert summary.counts["read"] == 2
    changed = dataclasses.replace(config, flags=FlagConfig(min_digit_confidence=0.5))
    summary, _, _ = run(source, output, changed)
    assert summary.counts["read"] == 2


def test_removed_documents_drop_out(tmp_path, make_config, fake_stages):
    source, output = tmp_path / "in", tmp_path / "out"
    good_folder(source, 3)
    run(source, output, make_config())
    (source / "forms" / "02.png").unlink()
    summary, _, _ = run(source, output, make_config())
    assert list(by_path(output)) == ["forms/00.png", "forms/01.png"] and summary.counts["documents"] == 2
    assert not (output / "fields" / "forms" / "02.png").exists()
    with StateStore(output) as store:
        assert store.get("forms/02.png") is None


def test_internal_errors_are_retried_but_input_errors_are_not(tmp_path, make_config, fake_stages, monkeypatch):
    source, output = tmp_path / "in", tmp_path / "out"
    good_folder(source, 1)
    (source / "empty.png").write_bytes(b"")

    def broken(gray, config, dpi=None, bilevel=False):
        raise RuntimeError("bug of the day")

    monkeypatch.setattr(batch, "segment_page", broken)
    run(source, output, make_config())
    assert by_path(output)["forms/00.png"]["error"] == "internal"
    monkeypatch.undo()
    monkeypatch.setattr(batch, "segment_page", __import__("conftest").fake_segment_page)
    monkeypatch.setattr(batch, "layout_crops", __import__("conftest").fake_layout_crops)
    monkeypatch.setattr(batch, "read_fields", __import__("conftest").fake_read_fields)
    summary, _, _ = run(source, output, make_config())
    assert by_path(output)["forms/00.png"]["status"] == "ok"
    assert (summary.counts["read"], summary.counts["reused"]) == (1, 1)  # empty.png: same bytes, same error


def test_resume_after_crash_mid_run(tmp_path, make_config, fake_stages):
    source, output = tmp_path / "in", tmp_path / "out"
    good_folder(source, 4)
    config = make_config(chunk_documents=2)
    run(source, output, config)  # a good report exists
    good_report = (output / "report.json").read_bytes()
    for index in range(4):  # the scans are replaced; the next run must read them all
        write_png(source / "forms" / f"{index:02d}.png", form_page(100 + index))

    with pytest.raises(RuntimeError, match="simulated crash"):
        run(source, output, config, FakeClassifier(fail_on_call=2))
    assert (output / "report.json").read_bytes() == good_report  # the previous report survives
    with StateStore(output) as store:  # chunk 1 was committed, chunk 2 was not
        fresh = [p for p in store.paths() if store.get(p).sha256 == _sha(source / p)]
    assert fresh == ["forms/00.png", "forms/01.png"]

    summary, classifier, _ = run(source, output, config)
    assert (summary.counts["reused"], summary.counts["read"]) == (2, 2)
    assert classifier.calls == [8]  # only chunk 2 is classified again
    documents = by_path(output)
    for index in range(4):
        field = documents[f"forms/{index:02d}.png"]["pages"][0]["fields"][0]
        assert field["bbox"] == ink_bbox(form_page(100 + index))


def _sha(path) -> str:
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- parallel workers ----------------------------------------------------------------

def test_parallel_workers_keep_order_and_errors(tmp_path, make_config):
    """Two real worker processes; only inputs that need no segmenter (errors, blank pages)."""
    source = tmp_path / "in"
    expected = {}
    for index in range(6):
        if index % 2:
            (source / f"{index}.png").parent.mkdir(parents=True, exist_ok=True)
            (source / f"{index}.png").write_bytes(b"")
            expected[f"{index}.png"] = "empty_file"
        else:
            write_png(source / f"{index}.png", np.full((40 + index, 50), 255, np.uint8))
            expected[f"{index}.png"] = None
    summary, _, _ = run(source, tmp_path / "out", make_config(workers=2, chunk_documents=4))
    documents = report_of(tmp_path / "out")["documents"]
    assert [d["path"] for d in documents] == sorted(expected)
    assert {d["path"]: d["error"] for d in documents} == expected
    assert [d["pages"][0]["height"] for d in documents if d["status"] == "ok"] == [40, 42, 44]
    assert summary.exit_code == ExitCode.some_documents_failed


def test_output_inside_input_is_not_read_back(tmp_path, make_config, fake_stages):
    source = tmp_path / "scans"
    good_folder(source, 2)
    run(source, source / "output", make_config())
    assert (source / "output" / "fields" / "forms" / "00.png" / "page001-field001.png").exists()
    summary, _, _ = run(source, source / "output", make_config())
    assert list(by_path(source / "output")) == ["forms/00.png", "forms/01.png"]
    assert (summary.counts["documents"], summary.counts["skipped_files"]) == (2, 1)


def test_real_segment_and_group_with_fake_classifier_in_two_workers(tmp_path, make_config):
    """The real stages (no fakes) in real worker processes; only the model is a stand-in."""
    source = tmp_path / "in"
    pages = {}
    for index in range(3):
        page = np.full((600, 800), 255, np.uint8)
        page[400:403, 100:700] = 0  # a rule line, as on a form
        rng = np.random.default_rng(index)
        x = 150
        for digit in rng.integers(0, 10, size=5):  # handwriting wobbles: size and baseline vary
            scale, baseline = float(rng.uniform(2.0, 3.0)), int(rng.integers(360, 390))
            cv2.putText(page, str(digit), (x, baseline), cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, scale, 20,
                        int(rng.integers(4, 7)), cv2.LINE_AA)
            x += int(rng.integers(60, 80))
        pages[f"{index}.png"] = page
        write_png(source / f"{index}.png", page)
    summary, classifier, _ = run(source, tmp_path / "out", make_config(workers=2, chunk_documents=2))
    documents = report_of(tmp_path / "out")["documents"]
    assert summary.exit_code == ExitCode.ok, [d["detail"] for d in documents]
    assert summary.counts["fields"] >= 3 and sum(classifier.calls) > 0
    for document in documents:
        (page,) = document["pages"]
        assert (page["width"], page["height"]) == (800, 600)
        for field in page["fields"]:
            x, y, w, h = field["bbox"]
            assert 0 <= x and 0 <= y and x + w <= 800 and y + h <= 600
            assert len(field["digits"]) >= 1
