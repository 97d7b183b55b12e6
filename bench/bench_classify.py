"""Benchmark: batched classification throughput of the shipped model, and CLI start-up.

Run with `make bench`. Prints crops/s (target >= 10,000 on a 2-core CPU) over real-looking
crops (MNIST test digits when $DIGITS_MNIST is set, else random strokes), model load
excluded, best of three passes; and the wall time of `digits --help`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.classify import load_classifier
from pipeline.config import load_config
from pipeline.normalize import normalize_digit

CROPS = 20_000
TARGET_PER_SECOND = 10_000


def crops_to_classify() -> np.ndarray:
    source = os.environ.get("DIGITS_MNIST")
    if source and Path(source).exists():
        from pipeline.data import load_mnist

        images = load_mnist(source).test_images
    else:
        images = (np.random.default_rng(0).random((1000, 28, 28)) > 0.8).astype(np.uint8) * 255
    base = np.stack([normalize_digit(image) for image in images[:2000]])
    return np.resize(base, (CROPS, 28, 28)).astype(np.float32)


def main() -> int:
    config = load_config()
    classifier = load_classifier(config.classify.model, config.classify.batch_size)
    crops = crops_to_classify()
    classifier.predict(crops[: config.classify.batch_size])
    best = min(_timed(classifier.predict, crops) for _ in range(3))
    rate = CROPS / best
    print(f"classify: {rate:,.0f} crops/s ({CROPS} crops, batch {config.classify.batch_size}, "
          f"best of 3; target >= {TARGET_PER_SECOND:,})")
    digits = Path(sys.executable).with_name("digits")
    started = time.perf_counter()
    subprocess.run([str(digits), "--help"], check=True, capture_output=True)
    print(f"startup: `digits --help` in {time.perf_counter() - started:.2f} s")
    return 0 if rate >= TARGET_PER_SECOND else 1


def _timed(function, argument) -> float:
    started = time.perf_counter()
    function(argument)
    return time.perf_counter() - started


if __name__ == "__main__":
    sys.exit(main())
