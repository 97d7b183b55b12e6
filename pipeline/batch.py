"""Run the stages over an input folder: load → segment → classify → group → report.

``run_batch`` is the one library function the ``process`` command calls. The flow:

1. Walk the input (``load.find_documents``), take ``OUTPUT/.lock`` (a second run gets
   ``AlreadyRunning``), open ``OUTPUT/state.sqlite`` and forget documents that left the input.
2. Decide per document whether its stored result can be reused: same content sha256,
   same model sha256 and same reading settings (``settings_sha256``: the input, segment,
   flags and output sections plus the package version). Stored ``internal`` failures are
   always retried. ``force`` re-reads everything.
3. In chunks of ``run.chunk_documents`` documents: decode and segment each document in a
   joblib worker (``read_document``; ``run.workers`` processes, 0 = one per core), stack
   every crop of the chunk into one array for ONE ``classifier.predict`` in this process,
   split the probabilities back by index, group them into fields, write the field images,
   and commit the chunk's rows to SQLite. A committed chunk is the resume point after a crash.
   Classifying a chunk (one thread, the model loaded once) overlaps with the workers
   reading the next, so at most two chunks are held in memory, whatever the input's size.
4. Write the reports from the SQLite rows (streamed, atomically) and return a summary.

Per-document failures are values (``status="error"`` with a ``FailureReason``); this
module is the only place that catches per-document exceptions. Unexpected ones become
``internal`` (traceback logged at debug level), or propagate under ``raise_on_error``.
Uniform pages (all white, all black) are not segmented: they are pages with no fields.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import json
import logging
import os
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol

import numpy as np

from pipeline import __version__
from pipeline.classify import CLASS_NAMES, file_sha256
from pipeline.config import Config, InputConfig, SegmentConfig, config_to_dict
from pipeline.errors import ConfigError, DocumentError, ExitCode, FailureReason, ModelError, OutputError
from pipeline.group import read_fields
from pipeline.load import SUPPORTED_SUFFIXES, find_documents, iter_pages, read_source
from pipeline.report import (
    document_record, page_record, remove_field_images, remove_stale_temporaries, run_record, write_field_image,
    write_reports,
)
from pipeline.segment import PageLayout, layout_crops, segment_page
from pipeline.state import DocumentRow, StateStore, output_lock, utc_now

log = logging.getLogger(__name__)

# Pixels of page kept around a field in its review image, so the reviewer sees context.
FIELD_IMAGE_MARGIN = 8
# Number of classes the classifier returns per crop: digits 0-9 and "not a digit".
NUM_CLASSES = len(CLASS_NAMES)
# glibc's mallopt parameters (malloc.h), and the values workers set: the largest mmap
# threshold glibc accepts on 64-bit, and room at the heap's top for a few pages' arrays.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
WORKER_MMAP_THRESHOLD = 32 * 2**20
WORKER_TRIM_THRESHOLD = 256 * 2**20


class Classifier(Protocol):
    def predict(self, crops: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class RunOptions:
    """How to run, as opposed to how to read (which is ``Config``)."""

    force: bool = False            # re-read every document, reusing nothing
    raise_on_error: bool = False   # re-raise unexpected per-document exceptions (debugging)
    progress: bool = False         # show a tqdm bar on stderr (the CLI decides: TTY and not --quiet)


@dataclass(frozen=True)
class RunSummary:
    """What a run did; ``exit_code`` is ``ok`` or ``some_documents_failed``."""

    counts: dict
    reports: tuple[Path, ...]
    failed: tuple[tuple[str, str, str], ...]  # (path, reason, detail) of failed documents
    exit_code: ExitCode


@dataclass(frozen=True)
class Task:
    """One document to read. ``expected_sha256`` set: reuse the stored result if unchanged."""

    path: str          # POSIX path relative to the input root (the document's identity)
    full_path: Path
    expected_sha256: str | None = None


@dataclass(frozen=True)
class FieldPatch:
    """Pixels around one segmented field: ``bbox`` (x, y, w, h) of ``pixels`` in page coordinates."""

    bbox: tuple[int, int, int, int]
    pixels: np.ndarray  # (M, N) uint8


@dataclass(frozen=True)
class PageWork:
    number: int
    width: int
    height: int
    layout: PageLayout  # its crops go to the classifier (``layout_crops``) in the parent
    patches: tuple[FieldPatch, ...] = ()


@dataclass(frozen=True)
class DocumentWork:
    """A worker's answer for one document. ``status``: "ok", "error" or "reused"."""

    path: str
    status: str
    sha256: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    error: str | None = None
    detail: str | None = None
    traceback: str | None = None
    pages: tuple[PageWork, ...] = field(default=())


# --- worker side ---------------------------------------------------------------------

def _blank_layout(gray: np.ndarray) -> PageLayout:
    return PageLayout(width=int(gray.shape[1]), height=int(gray.shape[0]), skew_degrees=0.0, fields=())


def _field_patches(gray: np.ndarray, layout: PageLayout) -> tuple[FieldPatch, ...]:
    rows, cols = gray.shape
    patches = []
    for field_layout in layout.fields:
        x, y, w, h = (int(v) for v in field_layout.bbox)
        x0, y0 = max(0, x - FIELD_IMAGE_MARGIN), max(0, y - FIELD_IMAGE_MARGIN)
        x1, y1 = min(cols, x + w + FIELD_IMAGE_MARGIN), min(rows, y + h + FIELD_IMAGE_MARGIN)
        if x1 > x0 and y1 > y0:
            patches.append(FieldPatch((x0, y0, x1 - x0, y1 - y0), gray[y0:y1, x0:x1].copy()))
    return tuple(patches)


def read_page(gray: np.ndarray, config: SegmentConfig, dpi: float | None = None,
              bilevel: bool = False) -> PageLayout:
    """Segment one (M, N) uint8 page whose file states ``dpi`` (None: states none), black
    and white as scanned when ``bilevel``.

    A uniform page (every pixel the same: blank paper, an all-black scan) has no fields
    and is not handed to the segmenter.
    """
    if gray.size == 0 or gray.min() == gray.max():
        return _blank_layout(gray)
    return segment_page(gray, config, dpi, bilevel)


def _one_thread_per_worker() -> None:
    """In a worker process, keep OpenCV to one thread: with N workers on N cores its own
    thread pool only oversubscribes them (measured: 2 workers on 2 cores ran 2.4× slower)."""
    import cv2

    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)


@functools.cache
def _keep_freed_memory() -> None:
    """In a worker process (once), keep freed page-sized buffers in glibc's heap.

    A page allocates some fifteen page-sized arrays. By default glibc maps each from the
    kernel and hands it back when freed, and the kernel zeroes fresh memory for the next:
    measured on A4 pages, 25 ms of system time per page, down to 8, and 15% less CPU
    per page overall. Other C libraries: nothing changes.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_MMAP_THRESHOLD, WORKER_MMAP_THRESHOLD)  # smaller blocks come from the heap
    mallopt(M_TRIM_THRESHOLD, WORKER_TRIM_THRESHOLD)  # free memory kept at the heap's top


def read_document(task: Task, input_config: InputConfig, segment_config: SegmentConfig,
                  field_images: bool, raise_on_error: bool, in_worker: bool = False) -> DocumentWork:
    """Decode and segment one document (runs in a joblib worker). Never raises for a bad
    document: it returns ``status="error"``; unexpected exceptions become ``internal``
    unless ``raise_on_error``. ``in_worker``: this is a pool process of its own (not the
    caller's), so process-wide settings such as OpenCV's thread count may be changed."""
    if in_worker:
        _one_thread_per_worker()
        _keep_freed_memory()
    source = None
    try:
        source = read_source(task.full_path, input_config)
        if task.expected_sha256 is not None and task.expected_sha256 == source.sha256:
            return DocumentWork(task.path, "reused", source.sha256, source.size, source.mtime_ns)
        pages = []
        for page in iter_pages(source, input_config):
            layout = read_page(page.gray, segment_config, page.dpi, page.bilevel)
            patches = _field_patches(page.gray, layout) if field_images else ()
            pages.append(PageWork(page.number, int(page.gray.shape[1]), int(page.gray.shape[0]),
                                  layout, patches))
        return DocumentWork(task.path, "ok", source.sha256, source.size, source.mtime_ns, pages=tuple(pages))
    except DocumentError as exc:
        identity = (source.sha256, source.size, source.mtime_ns) if source else (None, None, None)
        return DocumentWork(task.path, "error", *identity, error=exc.reason.value, detail=exc.detail)
    except Exception as exc:
        if raise_on_error:
            raise
        identity = (source.sha256, source.size, source.mtime_ns) if source else (None, None, None)
        return DocumentWork(task.path, "error", *identity, error=FailureReason.internal.value,
                            detail=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())


# --- parent side ---------------------------------------------------------------------

def model_sha256(path: Path) -> str:
    """The model file's sha256, or ``ModelError`` saying how to get one."""
    try:
        return file_sha256(path)
    except FileNotFoundError:
        raise ModelError(f"model file {path} not found: run `make train`, or pass --model PATH") from None
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror or exc}") from None


def settings_sha256(config: Config) -> str:
    """Hash of everything besides the model that changes what a document reads as."""
    relevant = {name: config_to_dict(getattr(config, name)) for name in ("input", "segment", "flags", "output")}
    relevant["version"] = __version__
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def _worker_count(workers: int) -> int:
    return workers if workers > 0 else max(1, os.cpu_count() or 1)


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    """Lists of ``size`` consecutive items (the last may be shorter), taken as they come."""
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _counted(items: Iterable, bar) -> Iterator:
    for item in items:
        bar.update(1)
        yield item


def _default_load_model(path: Path, batch_size: int) -> Classifier:
    from pipeline.classify import load_classifier  # ONNX Runtime stays out of import time

    return load_classifier(path, batch_size=batch_size)


class _LazyClassifier:
    """Loads the model on first use: a run where every document is reused never loads it."""

    def __init__(self, load: Callable[[Path], Classifier], path: Path):
        self._load, self._path, self._model = load, path, None

    def predict(self, crops: np.ndarray) -> np.ndarray:
        if self._model is None:
            self._model = self._load(self._path)
        probs = np.asarray(self._model.predict(crops), dtype=np.float32)
        if probs.shape != (crops.shape[0], NUM_CLASSES):
            raise ModelError(
                f"classifier returned probabilities of shape {probs.shape} for {crops.shape[0]} crops, "
                f"expected ({crops.shape[0]}, {NUM_CLASSES}): is {self._path} a digit-reader model?"
            )
        return probs


def _contains(outer, inner) -> bool:
    ox, oy, ow, oh = outer
    ix, iy, iw, ih = (int(v) for v in inner)
    return ox <= ix and oy <= iy and ix + iw <= ox + ow and iy + ih <= oy + oh


def _field_image(patches: tuple[FieldPatch, ...], bbox) -> np.ndarray | None:
    """The reading's box plus margin, cut from the segmented field patch that holds it."""
    for patch in patches:
        if _contains(patch.bbox, bbox):
            px, py, pw, ph = patch.bbox
            x, y, w, h = (int(v) for v in bbox)
            x0, y0 = max(0, x - FIELD_IMAGE_MARGIN - px), max(0, y - FIELD_IMAGE_MARGIN - py)
            x1, y1 = min(pw, x + w + FIELD_IMAGE_MARGIN - px), min(ph, y + h + FIELD_IMAGE_MARGIN - py)
            return patch.pixels[y0:y1, x0:x1]
    return None


def _finish_chunk(works: list[DocumentWork], classifier: Classifier, config: Config, output_dir: Path,
                  model_sha: str, settings_sha: str, options: RunOptions) -> list[DocumentRow]:
    """Classify a chunk's crops in one call, group them into fields, write field images."""
    spans = []  # (work index, page index, start, stop) into the stacked crops
    stacked = []
    total = 0
    for w_index, work in enumerate(works):
        for p_index, page in enumerate(work.pages):
            crops = layout_crops(page.layout)
            count = int(crops.shape[0])
            spans.append((w_index, p_index, total, total + count))
            if count:
                stacked.append(crops)
            total += count
    probs = classifier.predict(np.concatenate(stacked)) if total else np.zeros((0, NUM_CLASSES), np.float32)
    page_probs = {(w, p): probs[start:stop] for w, p, start, stop in spans}

    now = utc_now()
    rows = []
    for w_index, work in enumerate(works):
        if work.status == "reused":
            continue
        status, error, detail, pages = work.status, work.error, work.detail, []
        remove_field_images(output_dir, work.path)  # images of an earlier reading are stale now
        if status == "ok":
            try:
                for p_index, page in enumerate(work.pages):
                    readings = read_fields(page.layout, page_probs[(w_index, p_index)], config.flags)
                    if config.output.field_images:
                        for reading in readings:
                            image = _field_image(page.patches, reading.bbox)
                            if image is not None and image.size:
                                write_field_image(output_dir, work.path, page.number, reading.id, image)
                    pages.append(page_record(page.number, page.width, page.height, readings))
            except OutputError:
                raise
            except Exception as exc:
                if options.raise_on_error:
                    raise
                status, error, pages = "error", FailureReason.internal.value, []
                detail = f"{type(exc).__name__}: {exc}"
                log.debug("%s: traceback:\n%s", work.path, traceback.format_exc())
        if status == "error":
            log.warning("%s: %s: %s", work.path, error, detail)
            if work.traceback:
                log.debug("%s: traceback:\n%s", work.path, work.traceback)
        rows.append(DocumentRow(
            path=work.path, sha256=work.sha256, size=work.size, mtime_ns=work.mtime_ns, status=status,
            error=error, detail=detail, pages=pages, model_sha256=model_sha, settings_sha256=settings_sha,
            read_at=now,
        ))
    return rows


def _reusable(row: DocumentRow | None, model_sha: str, settings_sha: str) -> bool:
    return (
        row is not None
        and row.sha256 is not None
        and row.model_sha256 == model_sha
        and row.settings_sha256 == settings_sha
        and row.error != FailureReason.internal.value
    )


def run_batch(source: Path, output_dir: Path, config: Config, options: RunOptions = RunOptions(),
              load_model: Callable[[Path], Classifier] | None = None) -> RunSummary:
    """Read every document under ``source`` into ``output_dir``; see the module docstring.

    ``load_model(path)`` returns an object with ``predict((K, 28, 28) float32) -> (K, 11)``;
    the default is ``classify.load_classifier``. It is called at most once, and only when
    some document needs reading. Raises ``ConfigError`` (no input), ``ModelError``,
    ``OutputError`` or ``AlreadyRunning`` when the run cannot happen.
    """
    from joblib import Parallel, delayed
    from tqdm import tqdm

    started = utc_now()
    source, output_dir = Path(source), Path(output_dir)
    if not source.exists():
        raise ConfigError(f"input {source} does not exist: pass a folder (or one file) of scans")
    model_path = config.classify.model
    model_sha = model_sha256(model_path)
    settings_sha = settings_sha256(config)
    if load_model is None:
        load_model = functools.partial(_default_load_model, batch_size=config.classify.batch_size)
    classifier = _LazyClassifier(load_model, model_path)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {output_dir}: {exc.strerror or exc}") from None

    # The lock comes before the walk: a second run stops at once, however big the input.
    with output_lock(output_dir), StateStore(output_dir) as store:
        try:
            listing = find_documents(source, exclude=output_dir)
        except FileNotFoundError:
            raise ConfigError(f"input {source} does not exist: pass a folder (or one file) of scans") from None
        if not listing.paths:
            kinds = ", ".join(sorted(SUPPORTED_SUFFIXES))
            raise ConfigError(f"no documents found under {source} (looked for {kinds}); check the INPUT path")
        remove_stale_temporaries(output_dir)
        current = set(listing.paths)
        gone = [path for path in store.paths() if path not in current]
        for path in gone:
            remove_field_images(output_dir, path)
        store.remove(gone)

        tasks = []
        for path in listing.paths:
            row = None if options.force else store.get(path)
            expected = row.sha256 if _reusable(row, model_sha, settings_sha) else None
            tasks.append(Task(path, listing.root / path, expected))

        reused = read = 0
        jobs = _worker_count(config.run.workers)
        bar = tqdm(total=len(tasks), unit="doc", file=sys.stderr, disable=not options.progress, leave=False)
        finishing = None  # the previous chunk, being classified while the workers read this one

        def commit(future) -> None:
            nonlocal read
            rows = future.result()
            store.put_many(rows)  # the resume point; SQLite is only touched from this thread
            read += len(rows)

        # At most two chunks are in memory: one being gathered from the workers, one in the
        # finisher thread. The workers read on from one chunk into the next without waiting.
        with contextlib.closing(bar), Parallel(n_jobs=jobs, return_as="generator") as parallel, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="finish") as finisher:
            read_all = parallel(
                delayed(read_document)(task, config.input, config.segment,
                                       config.output.field_images, options.raise_on_error, jobs > 1)
                for task in tasks
            )
            for works in _chunks(_counted(read_all, bar), config.run.chunk_documents):
                reused += sum(work.status == "reused" for work in works)
                if finishing is not None:
                    commit(finishing)
                finishing = finisher.submit(_finish_chunk, works, classifier, config, output_dir,
                                            model_sha, settings_sha, options)
            if finishing is not None:
                commit(finishing)

        counts = {"documents": 0, "pages": 0, "fields": 0, "flagged": 0, "errors": 0,
                  "skipped_files": len(listing.skipped), "reused": reused, "read": read}
        failed = []
        for row in store.rows(listing.paths):
            counts["documents"] += 1
            if row.status == "error":
                counts["errors"] += 1
                failed.append((row.path, row.error or "", row.detail or ""))
            for page in row.pages:
                counts["pages"] += 1
                counts["fields"] += len(page["fields"])
                counts["flagged"] += sum(1 for f in page["fields"] if f["flagged"])

        header = run_record(started, utc_now(), str(model_path), model_sha, config_to_dict(config),
                            __version__, counts)

        def documents() -> Iterator[dict]:
            for row in store.rows(listing.paths):
                yield document_record(row.path, row.status, row.error, row.detail, row.pages)

        reports = write_reports(output_dir, header, documents, config.output.field_images)
    code = ExitCode.some_documents_failed if counts["errors"] else ExitCode.ok
    return RunSummary(counts=counts, reports=tuple(reports), failed=tuple(failed), exit_code=code)
