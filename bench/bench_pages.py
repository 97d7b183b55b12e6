"""Pages per second of the whole batch (load → segment → classify → group → report).

Builds N A4 form pages at 200 dpi (1654×2339) with handwritten digits in a temporary
folder, then times ``batch.run_batch`` in-process, best of ``--repeat`` runs (a shared
virtual machine's speed varies by a third from run to run). Not timed: interpreter start, page
generation, the model load, and the worker pool's start (a two-page warm-up run).
Pages come from ``pipeline.samples`` (MNIST test digits on forms) when MNIST is at hand,
else digits are drawn with OpenCV's script font. The classifier is the real model when
``models/digits.keras`` exists, else a fixed-probability stand-in (said in the output).

Target: at least 8 pages/s on a 2-core machine. Run by ``make bench``.

    python bench/bench_pages.py [--pages 64] [--repeat 3] [--workers 0] [--mnist PATH] [--model PATH] [--fake-classifier]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.batch import RunOptions, run_batch  # noqa: E402
from pipeline.config import load_config  # noqa: E402

# A4 at 200 dpi, (rows, cols).
PAGE_SHAPE = (2339, 1654)
TARGET_PAGES_PER_SECOND = 8.0


class FixedClassifier:
    """Stand-in when no model is trained: every crop is a confident "7"."""

    def predict(self, crops: np.ndarray) -> np.ndarray:
        probs = np.full((len(crops), 11), 0.003, np.float32)
        probs[:, 7] = 0.97
        return probs


def _drawn_page(rng: np.random.Generator) -> np.ndarray:
    page = np.full(PAGE_SHAPE, 255, np.uint8)
    cv2.putText(page, "APPLICATION FORM", (150, 200), cv2.FONT_HERSHEY_DUPLEX, 2.0, 30, 3, cv2.LINE_AA)
    for row in range(8):
        y = 420 + row * 230
        cv2.putText(page, "Account No.", (150, y), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 40, 2, cv2.LINE_AA)
        cv2.line(page, (520, y + 12), (1400, y + 12), 60, 2)
        text = "".join(str(d) for d in rng.integers(0, 10, size=int(rng.integers(4, 9))))
        x = 540
        for digit in text:
            scale = float(rng.uniform(1.6, 2.2))
            cv2.putText(page, digit, (x, y), cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, scale, int(rng.integers(20, 90)),
                        int(rng.integers(3, 6)), cv2.LINE_AA)
            x += int(rng.integers(48, 70))
    noise = rng.normal(0, 4, PAGE_SHAPE)
    return np.clip(page + noise, 0, 255).astype(np.uint8)


def _sample_pages(count: int, seed: int, mnist: Path | None):
    """Yield (M, N) uint8 pages; MNIST-based forms when possible, else drawn ones."""
    rng = np.random.default_rng(seed)
    digits = None
    if mnist is not None and mnist.exists():
        try:
            from pipeline import samples
            from pipeline.data import load_mnist

            data = load_mnist(mnist)
            digits = samples._Digits(data.test_images, data.test_labels)
        except Exception as exc:  # a bench falls back rather than fails
            print(f"(samples unavailable: {type(exc).__name__}: {exc}; drawing digits instead)", file=sys.stderr)
    for _ in range(count):
        page_rng = np.random.default_rng(rng.integers(2 ** 63))
        if digits is None:
            yield _drawn_page(page_rng), "drawn"
            continue
        gray, _, _ = samples.make_page(digits, page_rng, cheque=False)
        if gray.shape != PAGE_SHAPE:  # forms come at 150 or 200 dpi: bring all to 200
            gray = cv2.resize(gray, PAGE_SHAPE[::-1], interpolation=cv2.INTER_LINEAR)
        yield gray, "samples"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="0 = one per core")
    parser.add_argument("--chunk", type=int, default=None, help="run.chunk_documents (default: the YAML's)")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the best is reported (shared machines are noisy)")
    parser.add_argument("--mnist", type=Path,
                        default=Path(os.environ.get("DIGITS_MNIST", ROOT.parent / "shared/data/mnist")))
    parser.add_argument("--model", type=Path, default=None, help="model file (default: classify.model)")
    parser.add_argument("--fake-classifier", action="store_true", help="use the fixed stand-in even if a model exists")
    args = parser.parse_args()

    config = load_config()
    run = dataclasses.replace(config.run, workers=args.workers,
                              chunk_documents=args.chunk or config.run.chunk_documents)
    with tempfile.TemporaryDirectory(prefix="bench_pages_") as tmp:
        tmp = Path(tmp)
        source = tmp / "in"
        source.mkdir()
        kind = "drawn"
        for index, (gray, kind) in enumerate(_sample_pages(args.pages + 2, args.seed, args.mnist)):
            folder = source if index >= 2 else tmp / "warmup"
            folder.mkdir(exist_ok=True)
            cv2.imwrite(str(folder / f"page_{index:04d}.png"), gray, [cv2.IMWRITE_PNG_COMPRESSION, 1])

        model_path = args.model.resolve() if args.model else config.classify.model
        if model_path.exists() and not args.fake_classifier:
            from pipeline.classify import load_classifier

            classifier = load_classifier(model_path, batch_size=config.classify.batch_size)
            which = f"real model {model_path.name}"
        else:
            model_path = tmp / "stand-in.model"
            model_path.write_bytes(b"fixed-probability stand-in")
            classifier = FixedClassifier()
            which = "FAKE classifier (fixed probabilities; no models/digits.keras)"
        config = dataclasses.replace(config, run=run, classify=dataclasses.replace(config.classify, model=model_path))

        def load(path):
            return classifier

        # Warm-up: starts the worker pool and the model's session; not timed.
        run_batch(tmp / "warmup", tmp / "out-warmup", config, RunOptions(), load_model=load)
        times = []
        for index in range(args.repeat):  # a fresh OUTPUT each time: nothing is reused
            started = time.perf_counter()
            summary = run_batch(source, tmp / f"out-{index}", config, RunOptions(), load_model=load)
            times.append(time.perf_counter() - started)

    counts = summary.counts
    elapsed = min(times)
    rate = counts["pages"] / elapsed if elapsed > 0 else float("inf")
    workers = run.workers or os.cpu_count()
    print(f"pages: {counts['pages']} ({kind} forms, {PAGE_SHAPE[1]}x{PAGE_SHAPE[0]}), fields: {counts['fields']}, "
          f"errors: {counts['errors']}, workers: {workers}, chunk: {run.chunk_documents}")
    print(f"classifier: {which}; segmenter: pipeline.segment (real)")
    runs = ", ".join(f"{counts['pages'] / t:.1f}" for t in times)
    print(f"best of {len(times)}: {elapsed:.2f} s -> {rate:.1f} pages/s (each run: {runs}; target >= "
          f"{TARGET_PAGES_PER_SECOND:.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
